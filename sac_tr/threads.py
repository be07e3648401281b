"""``threads: auto``: torch threads = the cores this process may use minus those other processes keep busy.

Why: torch's default is one intra-op thread per core. When another process holds a core, every
OpenMP parallel region of an update waits for a descheduled thread, and a run falls from ~100
to ~2 updates/s. One thread per busy core fewer avoids that cliff; on an idle machine all
cores are used. ``ThreadGovernor.update()`` re-measures every few seconds from the training loop,
so a run started beside another drops to one thread, and takes the cores back when it ends.

Busy cores are read from ``/proc/stat`` (per-CPU jiffies of the CPUs in this process's
affinity set) minus this process's own CPU time over the same window; worker processes
(``ParallelEnv``, ``AsyncCollector``) count as other processes, so the learner leaves them their
cores. Where ``/proc/stat`` is missing (not Linux), ``auto`` is torch's default.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

__all__ = [
    "CpuSample",
    "ThreadGovernor",
    "allowed_cores",
    "busy_cores",
    "choose_threads",
    "parse_proc_stat",
]

CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True)
class CpuSample:
    """Jiffies of the CPUs we may use (busy, total) and this process's CPU seconds, at one time."""

    busy: int
    total: int
    own_seconds: float


def parse_proc_stat(text: str, cpus: set[int]) -> tuple[int, int]:
    """(busy, total) jiffies summed over the ``cpuN`` lines of ``/proc/stat`` with N in ``cpus``.

    Busy is everything but idle and iowait; steal (a hypervisor giving the core to another
    machine) counts as busy, since our threads wait for it just the same.
    """
    busy = total = 0
    for line in text.splitlines():
        name, *fields = line.split()
        if not name.startswith("cpu") or name == "cpu" or int(name[3:]) not in cpus:
            continue
        # user nice system idle iowait irq softirq steal [guest guest_nice: already in user]
        values = [int(v) for v in fields[:8]]
        total += sum(values)
        busy += sum(values) - values[3] - values[4]
    return busy, total


def busy_cores(before: CpuSample, after: CpuSample, n_cpus: int) -> float:
    """Cores kept busy by other processes between two samples (0 .. ``n_cpus``)."""
    window = (after.total - before.total) / max(n_cpus, 1)  # jiffies per CPU
    if window <= 0:
        return 0.0
    own = (after.own_seconds - before.own_seconds) * CLOCK_TICKS
    return min(max((after.busy - before.busy - own) / window, 0.0), float(n_cpus))


def allowed_cores(env: Mapping[str, str] | None = None, cpus: int | None = None) -> int:
    """Cores this process may use: its CPU affinity (or ``cpus``), bounded by
    ``SLURM_CPUS_PER_TASK`` and by ``OMP_NUM_THREADS`` when set (a job scheduler or the user has
    said how many it gets)."""
    env = os.environ if env is None else env
    n = len(_affinity()) if cpus is None else cpus
    for key in ("SLURM_CPUS_PER_TASK", "OMP_NUM_THREADS"):
        value = env.get(key, "")
        if value.isdigit() and int(value) > 0:
            n = min(n, int(value))
    return max(n, 1)


def _affinity() -> set[int]:
    if hasattr(os, "sched_getaffinity"):
        return set(os.sched_getaffinity(0))
    return set(range(os.cpu_count() or 1))


def choose_threads(allowed: int, n_cpus: int, busy: float, current: int | None = None) -> int:
    """One thread per core of the ``n_cpus`` not busy with another process, at most ``allowed``,
    at least one.

    A core counts as busy from half its time, so a run drops a thread as soon as another process
    holds a core half the time. With ``current`` (the count now), a thread is added back only for a
    core that is free more than three quarters of the time: a load hovering around half a core
    keeps the count where it is instead of flipping it at every measurement.
    """
    wanted = max(1, min(allowed, n_cpus - int(busy + 0.5)))
    if current is not None and wanted > current:
        wanted = max(current, min(allowed, n_cpus - int(busy + 0.75)))
    return wanted


def _read_sample(cpus: set[int]) -> CpuSample | None:
    try:
        with open("/proc/stat") as f:
            busy, total = parse_proc_stat(f.read(), cpus)
    except OSError:
        return None
    return CpuSample(busy, total, time.process_time())


class ThreadGovernor:
    """Keeps ``torch.set_num_threads`` at ``choose_threads`` for ``threads: auto``.

    ``update()`` is cheap (a clock read) except every ``interval_s`` seconds, when it reads
    ``/proc/stat`` once and sets the thread count measured over the time since the last reading.
    ``threads`` (an int) fixes the count instead and ``update()`` does nothing; ``None`` keeps
    torch's default. ``sample``, ``clock``, ``env`` and ``cpus`` (the CPUs this process may use)
    are the machine's; tests pass fakes.
    """

    def __init__(
        self,
        threads: int | str | None = "auto",
        interval_s: float = 5.0,
        first_window_s: float = 0.25,
        sample: Callable[[set[int]], CpuSample | None] = _read_sample,
        clock: Callable[[], float] = time.monotonic,
        env: Mapping[str, str] | None = None,
        cpus: set[int] | None = None,
    ) -> None:
        self.auto = threads == "auto"
        self.interval_s, self._sample, self._clock = interval_s, sample, clock
        self._cpus = _affinity() if cpus is None else set(cpus)
        self.allowed = allowed_cores(env, len(self._cpus))
        self._last: CpuSample | None = None
        self._last_time = 0.0
        if not self.auto:
            if threads is not None:
                torch.set_num_threads(int(threads))
            return
        self._last, self._last_time = self._sample(self._cpus), self._clock()
        if self._last is None:  # no /proc/stat: torch's default
            self.auto = False
            return
        time.sleep(first_window_s)  # a first, short window so the run starts with a fair count
        self._measure(first=True)

    @property
    def threads(self) -> int:
        """torch's intra-op thread count now."""
        return torch.get_num_threads()

    def update(self) -> None:
        """Re-measure when ``interval_s`` has passed since the last measurement."""
        if self.auto and self._clock() - self._last_time >= self.interval_s:
            self._measure()

    def _measure(self, first: bool = False) -> None:
        now, sample = self._clock(), self._sample(self._cpus)
        if sample is None or self._last is None:
            return
        busy = busy_cores(self._last, sample, len(self._cpus))
        self._last, self._last_time = sample, now
        # The first count is the machine's alone, not whatever an earlier run in this process left.
        current = None if first else torch.get_num_threads()
        wanted = choose_threads(self.allowed, len(self._cpus), busy, current)
        if wanted != torch.get_num_threads():
            torch.set_num_threads(wanted)
