"""The Stable-Baselines3 baseline's own resume (``benchmarks/sb3_sac.py``), on short Pendulum
runs: it continues where it stopped, a kill while it saves keeps the previous checkpoint, and a
stop by SIGTERM exits 143 after checkpointing, as our recipe does. Frame counts are by hand."""

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from stable_baselines3 import SAC  # a dev extra: missing, this file fails rather than skips

from sac_tr.eval_csv import EvalCSVError
from tests.helpers import run_script

ROOT = Path(__file__).resolve().parents[1]
SMALL = {
    "learning_starts": 50,
    "batch_size": 32,
    "buffer_size": 1_000,
    "policy_kwargs": {"net_arch": [16]},
}


def _sb3_sac():
    spec = importlib.util.spec_from_file_location("sb3_sac", ROOT / "benchmarks" / "sb3_sac.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _train(run_dir: Path, frames: int) -> int | None:
    return _sb3_sac().train_sb3(
        "Pendulum-v1",
        0,
        frames,
        100,
        run_dir,
        episodes=1,
        max_steps=20,
        checkpoint_every=100,
        sb3_kwargs=SMALL,
    )


def _frames(run_dir: Path) -> list[int]:
    lines = (run_dir / "eval.csv").read_text().splitlines()[1:]
    return [int(line.split(",")[0]) for line in lines]


def _meta(run_dir: Path) -> dict:
    return json.loads((run_dir / "checkpoints" / "meta.json").read_text())


def test_continues_where_it_stopped_and_keeps_one_checkpoint(tmp_path):
    assert _train(tmp_path, 200) is None
    assert _frames(tmp_path) == [100, 200]
    assert _meta(tmp_path)["frames"] == 200
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["meta.json", "step_200"]
    assert _train(tmp_path, 300) is None
    assert _frames(tmp_path) == [100, 200, 300]
    assert _meta(tmp_path)["dir"] == "step_300"
    saved = SAC.load(tmp_path / "checkpoints" / "step_300" / "model.zip", device="cpu")
    assert saved.num_timesteps == 300
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["meta.json", "step_300"]
    csv = (tmp_path / "eval.csv").read_text()
    assert _train(tmp_path, 300) is None  # finished: nothing trained, nothing written
    assert (tmp_path / "eval.csv").read_text() == csv


def test_a_kill_while_saving_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    real = SAC.save_replay_buffer
    calls = []

    def dies_at_the_second_save(self, path):
        calls.append(path)
        if len(calls) == 2:  # the model of frame 200 is written, its buffer is not
            raise KeyboardInterrupt("killed while saving")
        real(self, path)

    monkeypatch.setattr(SAC, "save_replay_buffer", dies_at_the_second_save)
    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path, 300)
    meta = _meta(tmp_path)  # still names the checkpoint of frame 100, which is whole
    assert (meta["frames"], meta["dir"]) == (100, "step_100")
    assert SAC.load(tmp_path / "checkpoints" / "step_100" / "model.zip").num_timesteps == 100
    monkeypatch.setattr(SAC, "save_replay_buffer", real)
    # The rerun continues from frame 100: the evaluation at 200 is redone, not kept twice.
    assert _train(tmp_path, 300) is None
    assert _frames(tmp_path) == [100, 200, 300]
    saved = SAC.load(tmp_path / "checkpoints" / "step_300" / "model.zip", device="cpu")
    assert saved.num_timesteps == 300


def test_sigterm_checkpoints_and_exits_143(tmp_path):
    cmd = [
        sys.executable,
        str(ROOT / "benchmarks" / "sb3_sac.py"),
        "Pendulum-v1",
        "--frames",
        "1000000",
        "--eval-every",
        "100",
        "--episodes",
        "1",
        "--dir",
        str(tmp_path),
        f"--kwargs={json.dumps(SMALL)}",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while not (tmp_path / "eval.csv").exists() or len(_frames(tmp_path)) < 1:
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, out
    assert "Stopped at" in out
    meta = _meta(tmp_path)
    assert (
        meta["frames"] >= 100 and (tmp_path / "checkpoints" / meta["dir"] / "model.zip").is_file()
    )
    # Saved once SB3 had stored the last step's transition and made its gradient step (a save
    # from on_step, before both, lost them on resume): frames transitions, and one update per
    # step after learning_starts.
    saved = SAC.load(tmp_path / "checkpoints" / meta["dir"] / "model.zip", device="cpu")
    saved.load_replay_buffer(tmp_path / "checkpoints" / meta["dir"] / "replay_buffer.pkl")
    assert saved.num_timesteps == meta["frames"]
    assert saved.replay_buffer.size() == meta["frames"]
    assert saved._n_updates == meta["frames"] - SMALL["learning_starts"]


@pytest.mark.parametrize("at", [199, 200])
def test_a_signal_in_the_last_steps_stops_at_a_whole_checkpoint(tmp_path, monkeypatch, at):
    """SIGTERM during the gradient step of frame 199 (of 200): the run saves at 199 and stops
    before storing the next step, so it is not finished and continues to 200 with its last
    evaluation; during the step of frame 200 (the last), the run finishes and says so."""
    original = SAC.train

    def train(self, *args, **kwargs):
        if self.num_timesteps == at:
            os.kill(os.getpid(), signal.SIGTERM)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(SAC, "train", train)
    stopped = _train(tmp_path, 200)
    meta = _meta(tmp_path)
    saved = SAC.load(tmp_path / "checkpoints" / meta["dir"] / "model.zip", device="cpu")
    saved.load_replay_buffer(tmp_path / "checkpoints" / meta["dir"] / "replay_buffer.pkl")
    assert (meta["frames"], saved.replay_buffer.size()) == (at, at)
    assert saved._n_updates == at - SMALL["learning_starts"]
    if at == 200:
        assert stopped is None and _frames(tmp_path) == [100, 200]
        return
    assert stopped == signal.SIGTERM and _frames(tmp_path) == [100]
    monkeypatch.undo()
    assert _train(tmp_path, 200) is None
    assert _frames(tmp_path) == [100, 200] and _meta(tmp_path)["frames"] == 200


def test_a_run_saved_in_the_old_layout_resumes_and_a_cut_save_is_refused(tmp_path):
    _train(tmp_path, 100)
    ckpt = tmp_path / "checkpoints"
    # The layout before step_<frames>/: model and buffer straight in checkpoints/, no "dir".
    for name in ("model.zip", "replay_buffer.pkl"):
        (ckpt / "step_100" / name).rename(ckpt / name)
    (ckpt / "step_100").rmdir()
    (ckpt / "meta.json").write_text(json.dumps({"frames": 100, "wall": 1.0}))
    (ckpt / "step_999").mkdir()  # a save killed before meta.json named it: removed
    assert _train(tmp_path, 200) is None
    assert _frames(tmp_path) == [100, 200]
    assert sorted(p.name for p in ckpt.iterdir()) == ["meta.json", "step_200"]
    # An old-layout save cut between the model and meta.json: the model is ahead of meta.json.
    model = SAC.load(ckpt / "step_200" / "model.zip")
    model.save(ckpt / "model.zip")
    model.save_replay_buffer(ckpt / "replay_buffer.pkl")
    (ckpt / "meta.json").write_text(json.dumps({"frames": 100, "wall": 1.0}))
    with pytest.raises(EvalCSVError, match=r"is at 200 frames but .*meta.json says 100"):
        _train(tmp_path, 300)


def test_a_curve_without_a_checkpoint_is_not_restarted_over(tmp_path):
    """Evaluations past the first checkpoint (at 100 frames) but no checkpoint: removed by
    hand, so starting again would splice two runs in one file."""
    _train(tmp_path, 200)
    curve = (tmp_path / "eval.csv").read_text()
    (tmp_path / "checkpoints" / "meta.json").unlink()
    with pytest.raises(EvalCSVError, match=r"already holds evaluations \(the last at 200 frames"):
        _train(tmp_path, 300)
    assert (tmp_path / "eval.csv").read_text() == curve


def test_a_run_stopped_before_its_first_checkpoint_starts_again(tmp_path, capsys):
    """kill -9 between the first evaluation (100 frames) and the first checkpoint (200): the
    same command starts the run again, as the recipe's resume=auto does, and makes the same
    evaluation again (SB3 seeded, on the CPU) instead of refusing."""
    run = dict(episodes=1, max_steps=20, checkpoint_every=200, sb3_kwargs=SMALL)
    train_sb3 = _sb3_sac().train_sb3
    assert train_sb3("Pendulum-v1", 0, 200, 100, tmp_path, **run) is None
    whole = (tmp_path / "eval.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in whole[1:]] == ["100", "200"]
    shutil.rmtree(tmp_path / "checkpoints")  # as if killed before the save
    (tmp_path / "eval.csv").write_text("\n".join(whole[:2]) + "\n")  # header, frame 100
    capsys.readouterr()
    assert train_sb3("Pendulum-v1", 0, 200, 100, tmp_path, **run) is None
    assert (
        "it was stopped before its first checkpoint (due at 200 frames); the 1 evaluation(s) "
        "it made, up to 100 frames, are made again" in capsys.readouterr().out
    )
    again = (tmp_path / "eval.csv").read_text().splitlines()
    strip_wall = [line.rsplit(",", 1)[0] for line in whole]  # wall_time_s differs
    assert [line.rsplit(",", 1)[0] for line in again] == strip_wall


def test_other_arguments_are_refused_before_loading(tmp_path):
    _train(tmp_path, 100)
    with pytest.raises(EvalCSVError, match="eval_every: saved 100, now 50"):
        _sb3_sac().train_sb3("Pendulum-v1", 0, 200, 50, tmp_path, episodes=1, max_steps=20,
                             sb3_kwargs=SMALL)  # fmt: skip
    with pytest.raises(EvalCSVError, match="seed: saved 0, now 1; episodes: saved 1, now 3"):
        _sb3_sac().train_sb3("Pendulum-v1", 1, 200, 100, tmp_path, episodes=3, max_steps=20,
                             sb3_kwargs=SMALL)  # fmt: skip


def test_kwargs_are_recorded_as_json_so_tuples_resume_and_objects_are_refused(tmp_path):
    train_sb3 = _sb3_sac().train_sb3
    kwargs = {**SMALL, "policy_kwargs": {"net_arch": (16,)}}  # a tuple, recorded as a list
    train_sb3("Pendulum-v1", 0, 100, 100, tmp_path, episodes=1, max_steps=20, sb3_kwargs=kwargs)
    assert train_sb3("Pendulum-v1", 0, 200, 100, tmp_path, episodes=1, max_steps=20,
                     sb3_kwargs=kwargs) is None  # fmt: skip
    assert _frames(tmp_path) == [100, 200]
    with pytest.raises(EvalCSVError, match="sb3_kwargs must be JSON values"):
        train_sb3("Pendulum-v1", 0, 100, 100, tmp_path / "other", episodes=1, max_steps=20,
                  sb3_kwargs={"action_noise": object()})  # fmt: skip


def test_bad_kwargs_are_refused_naming_them(tmp_path):
    """A misspelt SAC keyword or text that is not JSON: exit 2 with the reason, no traceback,
    and no run directory content."""

    def run(kwargs: str) -> subprocess.CompletedProcess:
        return run_script(
            "benchmarks/sb3_sac.py",
            "Pendulum-v1",
            "--frames=100",
            "--eval-every=100",
            f"--dir={tmp_path / 'run'}",
            f"--kwargs={kwargs}",
        )

    misspelt = run('{"learnin_starts": 5}')
    assert misspelt.returncode == 2 and "learnin_starts" in misspelt.stderr, misspelt.stderr
    assert "is not what SB3's SAC takes" in misspelt.stderr
    broken = run("{learning_starts: 5}")
    assert broken.returncode == 2 and "--kwargs is not JSON" in broken.stderr, broken.stderr
    assert "Traceback" not in misspelt.stderr + broken.stderr
    assert not (tmp_path / "run" / "eval.csv").exists()
