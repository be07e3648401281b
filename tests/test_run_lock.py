"""One process per run directory (sac_tr.run_lock): a second launch into a directory another
process trains in is refused, naming the holder, and changes nothing there."""

import errno
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import sac_tr.run_lock
from sac_tr.checkpoint import list_checkpoints
from sac_tr.config import ConfigError
from sac_tr.run_dirs import remove_if_unused
from sac_tr.run_lock import LOCK_NAME, RunDirInUseError, hold_run_dir
from sac_tr.train import train
from tests.test_recipe import FAST, ROOT, make_cfg

HOLD = (
    "import json, sys; from sac_tr.run_lock import hold_run_dir\n"
    "with hold_run_dir(sys.argv[1], record=json.loads(sys.argv[2])):\n"
    "    print('held', flush=True); sys.stdin.read()\n"
)


def _holder(run_dir: Path, record: dict[str, str] | None = None) -> subprocess.Popen:
    """Another process holding ``run_dir`` until its stdin closes, keeping ``record``."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(run_dir), json.dumps(record or {})],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_directory_held_in_this_process_is_refused_until_released(tmp_path):
    with hold_run_dir(tmp_path):
        with pytest.raises(RunDirInUseError, match=f"pid {os.getpid()} on "):
            with hold_run_dir(tmp_path):
                pass
    with hold_run_dir(tmp_path):  # released on leaving the block
        pass


def test_training_in_a_directory_another_process_holds_is_refused_and_changes_nothing(tmp_path):
    record = tmp_path / ".hydra" / "overrides.yaml"  # the run's record, as hydra wrote it
    record.parent.mkdir()
    record.write_text("- total_frames=100\n")
    train(make_cfg("total_frames=100", "logger=none"), tmp_path)
    curve, saved = (tmp_path / "eval.csv").read_text(), list_checkpoints(tmp_path / "checkpoints")
    holder = _holder(tmp_path)
    try:
        record.write_text("- total_frames=200\n- seed=3\n")  # the refused launch's
        with pytest.raises(RunDirInUseError) as err:
            train(make_cfg("total_frames=200", "logger=none", "resume=auto"), tmp_path)
        assert f"another sac_tr process is training there (pid {holder.pid} on " in str(err.value)
        assert "kill -TERM <pid>" in str(err.value)
        assert (tmp_path / "eval.csv").read_text() == curve
        assert list_checkpoints(tmp_path / "checkpoints") == saved
        assert record.read_text() == "- total_frames=100\n"  # put back from the checkpoint
    finally:
        holder.communicate("")
    # The holder gone, the same command continues the run.
    more = train(make_cfg("total_frames=200", "logger=none", "resume=auto"), tmp_path)
    assert more.frames == 200 and not more.already_finished


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    holder = _holder(tmp_path)
    os.kill(holder.pid, signal.SIGKILL)  # no cleanup runs: the kernel releases the lock
    holder.wait()
    assert (tmp_path / LOCK_NAME).is_file()
    with hold_run_dir(tmp_path):
        assert f"pid {os.getpid()} on " in (tmp_path / LOCK_NAME).read_text()


def test_the_lock_file_does_not_keep_an_unused_run_directory(tmp_path):
    (tmp_path / "run" / ".hydra").mkdir(parents=True)
    with hold_run_dir(tmp_path / "run"):
        pass
    assert remove_if_unused(tmp_path / "run") and not (tmp_path / "run").exists()


def test_a_directory_made_for_the_lock_alone_is_removed_on_leaving(tmp_path):
    with hold_run_dir(tmp_path / "new"):
        pass
    assert not (tmp_path / "new").exists()
    with hold_run_dir(tmp_path / "used"):
        (tmp_path / "used" / "eval.csv").write_text("frames\n")
    assert (tmp_path / "used" / "eval.csv").is_file()


def test_a_file_system_without_locks_runs_unlocked_and_says_so(tmp_path, monkeypatch, capsys):
    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(sac_tr.run_lock.fcntl, "flock", no_locks)
    with hold_run_dir(tmp_path):
        with hold_run_dir(tmp_path):  # nothing to refuse with
            pass
    assert f"Note: {tmp_path} cannot be locked (No locks available)" in capsys.readouterr().err


def test_a_refused_recipe_launch_leaves_the_holders_directory_alone(tmp_path):
    """The holder may still be building its agent: its directory holds only what hydra wrote, and
    the refused launch must not tidy it away as unused."""
    run = tmp_path / "run"
    holder = _holder(run)
    try:
        launch = ["total_frames=100", "logger=none", "resume=auto", f"hydra.run.dir={run}"]
        refused = subprocess.run(
            [sys.executable, str(ROOT / "recipes" / "sac_mujoco.py"), *FAST, *launch],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=300,
        )
        assert refused.returncode == 2, refused.stderr[-2000:]
        assert f"{run} is in use: another sac_tr process is training there (pid {holder.pid}" in (
            refused.stderr
        )
        assert "Traceback" not in refused.stderr
        assert (run / LOCK_NAME).is_file()  # the holder's directory is still there
    finally:
        holder.communicate("")


def test_a_run_of_an_older_sweep_named_by_job_number_is_named_for_renaming(tmp_path):
    old, new = tmp_path / "0_pendulum_sac_v1_seed0", tmp_path / "pendulum_sac_v1_seed0"
    train(make_cfg("total_frames=100", "logger=none"), old)
    with pytest.raises(ConfigError) as err:
        train(make_cfg("total_frames=200", "logger=none", "resume=auto"), new)
    assert f"To continue it rather than start again: mv {old} {new}" in str(err.value)
    assert not new.exists()  # nothing started


def test_a_launch_refused_before_the_holders_first_checkpoint_puts_its_record_back(tmp_path):
    """The holder keeps its .hydra/ record in the lock file: a launch refused before the holder
    has a checkpoint to put the record back from still leaves the holder's record."""
    record = tmp_path / ".hydra" / "overrides.yaml"
    record.parent.mkdir()
    holder = _holder(tmp_path, {"overrides.yaml": "- seed=0\n"})
    try:
        record.write_text("- seed=7\n")  # as hydra writes the refused launch's
        with pytest.raises(RunDirInUseError):
            train(make_cfg("total_frames=100", "logger=none", "seed=7", "resume=auto"), tmp_path)
        assert record.read_text() == "- seed=0\n"
    finally:
        holder.communicate("")


def test_a_launch_refused_for_its_config_puts_back_the_holders_record(tmp_path):
    """A bad configuration (seed=-1) launched in place while another process trains there,
    before that run's first checkpoint: its record is put back from the lock file; once the
    holder has gone, the same refusal leaves the directory's record alone but reads no lock."""
    record = tmp_path / ".hydra" / "overrides.yaml"
    record.parent.mkdir()
    holder = _holder(tmp_path, {"overrides.yaml": "- seed=0\n"})
    try:
        record.write_text("- seed=-1\n")  # as hydra writes the refused launch's
        with pytest.raises(ConfigError, match="seed=-1: must be an integer"):
            train(make_cfg("total_frames=100", "logger=none", "seed=-1"), tmp_path)
        assert record.read_text() == "- seed=0\n"
    finally:
        holder.communicate("")
    assert sac_tr.run_lock.holder_record(tmp_path) is None  # released: nothing to read
    record.write_text("- seed=-1\n")
    with pytest.raises(ConfigError, match="seed=-1: must be an integer"):
        train(make_cfg("total_frames=100", "logger=none", "seed=-1"), tmp_path)
    assert record.read_text() == "- seed=-1\n"  # no holder, no checkpoint: nothing to put back
