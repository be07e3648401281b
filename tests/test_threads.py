"""threads=auto: the thread count from fake /proc/stat readings (no timing, no real load)."""

import pytest
import torch

from sac_tr.threads import (
    CLOCK_TICKS,
    CpuSample,
    ThreadGovernor,
    allowed_cores,
    choose_threads,
    parse_proc_stat,
)

PROC_STAT = """cpu  300 0 100 1000 50 0 0 0 0 0
cpu0 100 0 50 500 25 0 0 0 0 0
cpu1 200 0 50 500 25 0 0 10 0 0
intr 12345
ctxt 999
"""


def test_proc_stat_busy_is_all_but_idle_and_iowait_of_the_allowed_cpus():
    # cpu0: busy 100 + 50 = 150, total 675; cpu1: busy 200 + 50 + 10 (steal) = 260, total 785
    assert parse_proc_stat(PROC_STAT, {0}) == (150, 675)
    assert parse_proc_stat(PROC_STAT, {1}) == (260, 785)
    assert parse_proc_stat(PROC_STAT, {0, 1}) == (410, 1460)


class FakeMachine:
    """Two CPUs; each tick of ``advance`` adds one second of wall time: ``others`` cores busy with
    other processes and ``own`` cores busy with this one."""

    def __init__(self):
        self.busy = self.total = 0
        self.own = 0.0
        self.now = 0.0

    def advance(self, seconds: float, others: float, own: float) -> None:
        self.total += int(2 * seconds * CLOCK_TICKS)
        self.busy += int((others + own) * seconds * CLOCK_TICKS)
        self.own += own * seconds
        self.now += seconds

    def sample(self, cpus):
        assert cpus  # the affinity set is passed through
        return CpuSample(self.busy, self.total, self.own)


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def make_governor(machine, env=None):
    return ThreadGovernor(
        "auto",
        interval_s=5.0,
        first_window_s=0.0,
        sample=machine.sample,
        clock=lambda: machine.now,
        env={} if env is None else env,
        cpus={0, 1},
    )


def test_auto_drops_to_one_thread_beside_another_run_and_takes_the_core_back(restore_threads):
    machine = FakeMachine()
    governor = make_governor(machine)  # the first window saw an idle machine
    assert governor.threads == 2
    machine.advance(3.0, others=1.0, own=1.0)  # another run starts; not yet re-measured
    governor.update()
    assert governor.threads == 2
    machine.advance(3.0, others=1.0, own=1.0)  # 6 s since the last measurement: re-measured
    governor.update()
    assert governor.threads == 1
    # Our own work never counts as "busy": two threads of ours keep both CPUs busy.
    machine.advance(6.0, others=0.0, own=2.0)
    governor.update()
    assert governor.threads == 2
    machine.advance(6.0, others=0.3, own=1.7)  # a small background load keeps both threads
    governor.update()
    assert governor.threads == 2


def test_a_load_around_half_a_core_does_not_flip_the_thread_count(restore_threads):
    machine = FakeMachine()
    governor = make_governor(machine)
    assert governor.threads == 2
    counts = []
    for others in (0.6, 0.4, 0.6, 0.4, 0.1, 0.4):  # busy half the time, give or take
        machine.advance(6.0, others=others, own=2.0 - others)
        governor.update()
        counts.append(governor.threads)
    # Dropped at 0.6 (the core is busy more than half the time), taken back only at 0.1 (free
    # more than three quarters of it), kept at 0.4 either way.
    assert counts == [1, 1, 1, 1, 2, 2]


def test_the_first_count_is_the_machines_not_an_earlier_runs(restore_threads):
    # An earlier run in this process left one thread; a neighbour keeps 0.3 of a core busy,
    # which a fresh start counts as free (the hysteresis only holds a count once it is set).
    torch.set_num_threads(1)
    machine = FakeMachine()

    def sample(cpus):
        machine.advance(0.25, others=0.3, own=0.0)
        return machine.sample(cpus)

    governor = ThreadGovernor(
        "auto", first_window_s=0.0, sample=sample, clock=lambda: machine.now, env={}, cpus={0, 1}
    )
    assert governor.threads == 2


def test_choose_threads_by_hand():
    assert choose_threads(allowed=8, n_cpus=8, busy=2.4) == 6  # 2 cores busy elsewhere
    assert choose_threads(allowed=8, n_cpus=8, busy=2.6) == 5
    assert choose_threads(allowed=4, n_cpus=8, busy=0.0) == 4  # the scheduler's limit
    assert choose_threads(allowed=8, n_cpus=8, busy=8.0) == 1  # never below one
    assert choose_threads(allowed=8, n_cpus=8, busy=2.4, current=5) == 5  # 5.6 free: not 6 yet
    assert choose_threads(allowed=8, n_cpus=8, busy=2.2, current=5) == 6  # 5.8 free: take one
    assert choose_threads(allowed=8, n_cpus=8, busy=0.2, current=5) == 8
    assert choose_threads(allowed=8, n_cpus=8, busy=3.6, current=5) == 4  # dropping: no delay


def test_auto_never_goes_below_one_or_above_the_allowed_cores(restore_threads):
    machine = FakeMachine()
    governor = make_governor(machine)
    machine.advance(6.0, others=2.0, own=0.0)  # both cores busy elsewhere
    governor.update()
    assert governor.threads == 1
    one = make_governor(FakeMachine(), env={"SLURM_CPUS_PER_TASK": "1"})
    assert one.threads == 1  # an idle machine, but the job was given one CPU


def test_allowed_cores_follow_the_scheduler_and_the_user():
    assert allowed_cores({}, cpus=16) == 16
    assert allowed_cores({"SLURM_CPUS_PER_TASK": "4"}, cpus=16) == 4
    assert allowed_cores({"OMP_NUM_THREADS": "1", "SLURM_CPUS_PER_TASK": "8"}, cpus=16) == 1
    assert allowed_cores({"OMP_NUM_THREADS": "999", "SLURM_CPUS_PER_TASK": ""}, cpus=16) == 16


def test_auto_on_this_machine_picks_between_one_and_the_allowed_cores(restore_threads):
    governor = ThreadGovernor("auto", first_window_s=0.05)
    assert 1 <= governor.threads <= allowed_cores()


def test_a_fixed_thread_count_is_set_and_kept(restore_threads):
    machine = FakeMachine()
    governor = ThreadGovernor(1, sample=machine.sample, clock=lambda: machine.now)
    assert governor.threads == 1
    machine.advance(60.0, others=0.0, own=1.0)
    governor.update()
    assert governor.threads == 1
