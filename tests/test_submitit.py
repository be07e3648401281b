"""The cluster path for real: a sweep through hydra's submitit launcher (submitit's local executor,
the same code path as SLURM but with local processes), relaunched to find its runs finished."""

import csv
import os
import signal
import subprocess

import pytest

from sac_tr.signals import StopOnSignal, forward_signal
from tests.helpers import run_script
from tests.test_recipe import FAST, ROOT


def _sweep(sweep_dir) -> subprocess.CompletedProcess:
    return run_script(
        "recipes/sac_mujoco.py",
        "-m",
        "hydra/launcher=submitit_local",
        "hydra.launcher.timeout_min=10",
        "hydra.launcher.cpus_per_task=1",
        f"hydra.sweep.dir={sweep_dir}",
        "hydra.sweep.subdir=seed${seed}",
        *FAST,
        "total_frames=200",
        "logger=none",
        "resume=auto",
        "seed=0,1",
        cwd=ROOT,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def test_submitit_sweep_runs_both_jobs_then_finds_them_finished(tmp_path):
    first = _sweep(tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    for seed in (0, 1):
        with (tmp_path / f"seed{seed}" / "eval.csv").open() as f:
            assert [int(r["frames"]) for r in csv.DictReader(f)] == [100, 200]
    checkpoints = sorted(tmp_path.glob("seed*/checkpoints/step_*.pt"))
    mtimes = [p.stat().st_mtime_ns for p in checkpoints]
    again = _sweep(tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    logs = "".join(p.read_text() for p in tmp_path.rglob("*_log.out"))
    assert logs.count("Already finished") == 2, logs[-3000:]
    assert [p.stat().st_mtime_ns for p in checkpoints] == mtimes  # nothing trained or rewritten


def test_sigusr2_is_handed_on_after_the_stop(monkeypatch):
    # submitit requeues from its SIGUSR2 handler; the run must catch it first (to checkpoint),
    # then call that handler.
    calls = []
    previous = signal.signal(signal.SIGUSR2, lambda signum, frame: calls.append(signum))
    try:
        with StopOnSignal() as stop:
            os.kill(os.getpid(), signal.SIGUSR2)
            assert stop.name == "SIGUSR2" and calls == []  # caught by the run, not yet passed on
        assert forward_signal(stop.name) and calls == [signal.SIGUSR2]
    finally:
        signal.signal(signal.SIGUSR2, previous)


def test_forward_signal_leaves_default_handlers_alone():
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        pytest.skip("SIGTERM has a handler in this process")
    assert not forward_signal("SIGTERM")


def test_a_closed_terminal_stops_the_run_unless_it_runs_under_nohup():
    """SIGHUP is caught like SIGTERM (checkpoint, then exit); under nohup (SIGHUP ignored) the
    run is left to go on, as asked."""
    previous = signal.getsignal(signal.SIGHUP)
    try:
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
        with StopOnSignal() as stop:
            os.kill(os.getpid(), signal.SIGHUP)
            assert stop.name == "SIGHUP"
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        with StopOnSignal() as stop:
            os.kill(os.getpid(), signal.SIGHUP)  # ignored: would kill the test otherwise
            assert stop.signum is None
        assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, previous)
