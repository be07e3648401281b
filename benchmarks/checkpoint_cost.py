"""What a checkpoint costs per task: its size with the replay buffer, the time to write it, and the
memory the write takes on top of the run's own.

    python benchmarks/checkpoint_cost.py                      # the suite's four tasks
    python benchmarks/checkpoint_cost.py --envs hopper ant --frames 2000

Builds the recipe's run (``sac_tr.train.TrainingRun``, default config: a 1M-transition buffer),
collects ``--frames`` random transitions into it, and times ``TrainingRun.save()`` (networks,
optimizer, RNG and environment state, and the buffer) twice. The buffer's storage is allocated
for its whole capacity at the first write, so the size does not grow with the frames collected.
The memory columns (Linux): the process's peak resident memory during a save (``VmHWM``, reset
just before it through ``/proc/self/clear_refs``) less its resident memory before it, which is what
a run's peak (``ru_maxrss``) holds above the memory sampled between saves; and of that, the
anonymous memory (``RssAnon``, sampled every 2 ms), the part the kernel cannot drop. The rest is
file pages: the buffer's memory-mapped copy being written, the size of the buffer on disk.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import tempfile
import threading
import time
from pathlib import Path

import torch
from recipe_config import recipe_config  # benchmarks/, on the path as this script's folder

from sac_tr.checkpoint import checkpoint_bytes
from sac_tr.train import TrainingRun


def _status_mib(field: str) -> float:
    """A ``/proc/self/status`` memory field (``VmRSS``, ``VmHWM``, ``RssAnon``) in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def _save_measured(run: TrainingRun) -> tuple[Path, float, float, float]:
    """``run.save()`` with (its path, seconds, peak MiB added, peak anonymous MiB added)."""
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    before, anon_before = _status_mib("VmRSS"), _status_mib("RssAnon")
    anon_peak, saving = [anon_before], threading.Event()
    saving.set()

    def sample() -> None:
        while saving.is_set():
            anon_peak[0] = max(anon_peak[0], _status_mib("RssAnon"))
            time.sleep(0.002)

    sampler = threading.Thread(target=sample)
    sampler.start()
    start = time.perf_counter()
    path = run.save()
    seconds = time.perf_counter() - start
    saving.clear()
    sampler.join()
    return path, seconds, _status_mib("VmHWM") - before, anon_peak[0] - anon_before


def measure(env: str, frames: int) -> tuple[float, list[tuple[float, float, float]]]:
    """(MiB on disk, [(seconds, MiB added at the peak, anonymous MiB added) per save]) for one
    task."""
    overrides = [f"env={env}", "logger=none", "progress=false", "threads=1"]
    overrides += [f"env.init_random_frames={frames}", f"total_frames={frames}"]
    cfg = recipe_config(overrides)
    with tempfile.TemporaryDirectory() as tmp:
        run = TrainingRun(cfg, Path(tmp))
        for batch in run.collector:
            run.store(batch)
        saves = []
        for _ in range(2):
            path, *costs = _save_measured(run)
            saves.append(tuple(costs))
        size = checkpoint_bytes(path) / 2**20
        run.finish()
    return size, saves


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--envs", nargs="+", default=["halfcheetah", "hopper", "walker2d", "ant"])
    parser.add_argument("--frames", type=int, default=1000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"{platform.processor() or platform.machine()}, {datetime.date.today()}")
    print(f"{args.frames} transitions in the buffer; two saves each")
    print(
        "| task | checkpoint with buffer (MiB) | time to write (s) | memory added at the peak (MiB) "
        "| of it anonymous (MiB) |"
    )
    print("| --- | --- | --- | --- | --- |")
    for env in args.envs:
        size, saves = measure(env, args.frames)
        cells = [
            " / ".join(f"{save[k]:{f}}" for save in saves)
            for k, f in enumerate([".2f", ".0f", ".0f"])
        ]
        print(f"| {env} | {size:.0f} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
