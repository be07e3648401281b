"""resume=auto (start or continue a fixed run directory), refusing a changed configuration, and
what a resumed or refused run leaves behind (issue 13 item 1, issue 14 item 4)."""

import csv
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sac_tr.checkpoint import list_checkpoints, load_checkpoint
from sac_tr.config import ConfigError
from sac_tr.eval_csv import trim_eval_csv
from sac_tr.run_dirs import (
    added_keys,
    checkpoint_frames,
    config_differences,
    remove_if_unused,
    restore_hydra_files,
)
from sac_tr.train import TrainingRun, train, wandb_run_to_continue
from tests.test_recipe import FAST, ROOT, make_cfg


def _rows(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "eval.csv").open() as f:
        return list(csv.DictReader(f))


def test_auto_starts_fresh_then_continues_then_skips_a_finished_run(tmp_path, capsys):
    first = train(make_cfg("total_frames=200", "logger=none", "resume=auto"), tmp_path)
    assert (first.frames, first.run_dir) == (200, tmp_path)
    saved = load_checkpoint(first.checkpoint)
    logged = float(_rows(tmp_path)[-1]["return_mean"])
    capsys.readouterr()
    # The same command with a larger budget continues from the newest checkpoint, and says so.
    more = train(make_cfg("total_frames=300", "logger=none", "resume=auto"), tmp_path)
    assert (
        f"Resuming {tmp_path} from step_0000000200.pt: 200 frames, {saved['updates']} updates, "
        f"last evaluation {logged:.1f}, the replay buffer's 200 transitions."
    ) in capsys.readouterr().out
    state = load_checkpoint(more.checkpoint)
    assert (state["frames"], state["updates"]) == (300, saved["updates"] + 100)
    assert [int(r["frames"]) for r in _rows(tmp_path)] == [100, 200, 300]
    # Again with the same budget: nothing is built or trained, nothing is written.
    mtime = more.checkpoint.stat().st_mtime_ns
    again = train(make_cfg("total_frames=300", "logger=none", "resume=auto"), tmp_path)
    assert again.already_finished and again.frames == 300
    assert again.last_eval_return == pytest.approx(float(_rows(tmp_path)[-1]["return_mean"]))
    assert more.checkpoint.stat().st_mtime_ns == mtime
    assert len(_rows(tmp_path)) == 3


def test_a_curve_whose_checkpoints_are_gone_is_not_restarted_over(tmp_path):
    train(make_cfg("total_frames=200", "logger=none", "resume=auto"), tmp_path)
    curve = (tmp_path / "eval.csv").read_text()
    for path in list_checkpoints(tmp_path / "checkpoints"):  # deleted to save disk, say
        path.unlink()
    with pytest.raises(ConfigError) as err:
        train(make_cfg("total_frames=300", "logger=none", "resume=auto"), tmp_path)
    assert "already holds evaluations (the last at 200 frames)" in str(err.value)
    assert "Move eval.csv (or the whole directory) aside" in str(err.value)
    assert (tmp_path / "eval.csv").read_text() == curve  # untouched
    assert list_checkpoints(tmp_path / "checkpoints") == []  # nothing was trained


def test_auto_starts_again_a_run_stopped_before_its_first_checkpoint(tmp_path, capsys):
    """kill -9 between the first evaluation and the first checkpoint: the same command starts
    the run again and makes the same evaluations (the CPU is deterministic), not a refusal."""
    cfg = ("total_frames=200", "logger=none", "checkpoint.every_frames=200", "resume=auto")
    train(make_cfg(*cfg), tmp_path)
    whole = [(r["frames"], r["return_mean"]) for r in _rows(tmp_path)]
    assert [f for f, _ in whole] == ["100", "200"]
    for path in list_checkpoints(tmp_path / "checkpoints"):  # as if killed before the save
        path.unlink()
    rows = (tmp_path / "eval.csv").read_text().splitlines()
    (tmp_path / "eval.csv").write_text("\n".join(rows[:2]) + "\n")  # header, frame 100
    capsys.readouterr()
    again = train(make_cfg(*cfg), tmp_path)
    assert (
        "it was stopped before its first checkpoint (due at 200 frames); the 1 evaluation(s)"
        in (capsys.readouterr().out)
    )
    assert again.frames == 200 and not again.already_finished
    assert [(r["frames"], r["return_mean"]) for r in _rows(tmp_path)] == whole


def test_a_fresh_start_over_a_run_names_its_checkpoint_and_resume_auto(tmp_path):
    """The same command again without resume (a fixed hydra.run.dir, a sweep config without
    resume=auto) must not say the run has no checkpoint, nor start a second run over it."""
    record = tmp_path / ".hydra" / "overrides.yaml"  # as hydra writes it before each launch
    record.parent.mkdir()
    record.write_text("- total_frames=200\n")
    train(make_cfg("total_frames=200", "logger=none"), tmp_path)
    curve = (tmp_path / "eval.csv").read_text()
    saved = list_checkpoints(tmp_path / "checkpoints")
    record.write_text("- total_frames=200\n- seed=7\n")  # the refused launch's
    with pytest.raises(ConfigError) as err:
        train(make_cfg("total_frames=200", "logger=none", "seed=7"), tmp_path)
    message = str(err.value)
    assert f"already holds a run (its newest checkpoint: {saved[-1].name})" in message
    assert "Add resume=auto to the same command" in message
    assert "no checkpoint" not in message
    assert (tmp_path / "eval.csv").read_text() == curve
    assert list_checkpoints(tmp_path / "checkpoints") == saved
    assert record.read_text() == "- total_frames=200\n"  # the run's own record, put back


def test_an_invalid_launch_in_a_runs_directory_puts_its_record_back(tmp_path):
    """validate_config refuses before any resume logic; hydra has already written the refused
    command's .hydra/ over the run's own, which sac_tr.analysis reads to group runs."""
    record = tmp_path / ".hydra" / "overrides.yaml"
    record.parent.mkdir()
    config = tmp_path / ".hydra" / "config.yaml"
    record.write_text("- total_frames=200\n")
    config.write_text("seed: 0\n")
    train(make_cfg("total_frames=200", "logger=none"), tmp_path)
    record.write_text("- total_frames=200\n- seed=-1\n")  # as hydra writes the refused launch's
    config.write_text("seed: -1\n")
    with pytest.raises(ConfigError, match="seed"):
        train(make_cfg("total_frames=200", "logger=none", "seed=-1", "resume=auto"), tmp_path)
    assert record.read_text() == "- total_frames=200\n"
    assert config.read_text() == "seed: 0\n"


def test_a_changed_configuration_is_refused_naming_the_keys(tmp_path):
    train(make_cfg("total_frames=100", "logger=none"), tmp_path)
    with pytest.raises(ConfigError) as err:
        train(make_cfg("total_frames=200", "logger=none", "batch_size=16", "resume=auto"), tmp_path)
    assert "batch_size: saved 32, now 16" in str(err.value)
    assert "total_frames: saved" not in str(err.value)  # the budget may change
    assert [checkpoint_frames(p) for p in list_checkpoints(tmp_path / "checkpoints")] == [100]


def test_config_differences_by_hand():
    saved = "a: 1\nb:\n  c: 2\n  d: x\ntotal_frames: 5\nresume: null\n"
    from omegaconf import OmegaConf

    new = OmegaConf.create({"a": 1, "b": {"c": 3}, "e": 1, "total_frames": 9, "resume": "auto"})
    assert config_differences(saved, new) == ["b.c", "b.d"]  # e: added by a newer sac_tr
    assert config_differences(saved, new, ignore=("b.d",)) == ["b.c", "resume", "total_frames"]
    assert added_keys(saved, new) == ["e"]


def test_resume_keeps_wall_time_last_eval_and_drops_evaluations_after_the_checkpoint(tmp_path):
    cfg = ("logger=none", "checkpoint.every_frames=200")
    train(make_cfg("total_frames=300", *cfg), tmp_path)  # checkpoints at 200 and 300
    rows = _rows(tmp_path)
    # A run killed after evaluating at 300 but before that checkpoint was written.
    newest = list_checkpoints(tmp_path / "checkpoints")[-1]
    newest.unlink()
    path = list_checkpoints(tmp_path / "checkpoints")[-1]
    state = load_checkpoint(path)
    assert state["frames"] == 200 and state["wall_time_s"] > 0
    run = TrainingRun(make_cfg("total_frames=300", *cfg, "resume=auto"), tmp_path, (state, path))
    assert [int(r["frames"]) for r in _rows(tmp_path)] == [100, 200]  # 300 will be redone
    assert run.last_eval == pytest.approx(float(rows[1]["return_mean"]))  # not nan
    run.finish()
    train(make_cfg("total_frames=300", *cfg, "resume=auto"), tmp_path)
    times = [float(r["wall_time_s"]) for r in _rows(tmp_path)]
    assert [int(r["frames"]) for r in _rows(tmp_path)] == [100, 200, 300]
    # eval.csv rounds to 0.01 s; the clock continues from the checkpoint, no restart at 0
    assert times[2] > state["wall_time_s"] >= times[1] - 0.01


def test_trim_eval_csv_by_hand(tmp_path):
    path = tmp_path / "eval.csv"
    path.write_text("frames,return_mean\n100,1\n200,2\n300,3\n")
    assert trim_eval_csv(path, 200, evaluations=2).dropped == 1
    assert path.read_text().splitlines() == ["frames,return_mean", "100,1", "200,2"]


def test_remove_if_unused_only_removes_what_hydra_wrote(tmp_path):
    empty, used = tmp_path / "empty", tmp_path / "used"
    for d in (empty, used):
        (d / ".hydra").mkdir(parents=True)
        (d / ".hydra" / "config.yaml").write_text("a: 1\n")
        (d / "sac_mujoco.log").write_text("")
    (used / "eval.csv").write_text("frames\n")
    assert remove_if_unused(empty) and not empty.exists()
    assert not remove_if_unused(used) and (used / "eval.csv").exists()


def _recipe(*overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "recipes" / "sac_mujoco.py"), *FAST, *overrides],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )


def _hydra_record(run: Path) -> dict[str, str]:
    return {name: (run / ".hydra" / name).read_text() for name in ("config.yaml", "overrides.yaml")}


def test_refused_and_resumed_runs_leave_no_empty_run_directory_and_the_runs_record(tmp_path):
    # Hydra rewrites .hydra/ before the task runs; sac_tr.analysis groups runs by those files.
    refused = _recipe("batch_size=0", f"hydra.run.dir={tmp_path / 'refused'}")
    assert refused.returncode == 2 and "batch_size=0" in refused.stderr
    assert not (tmp_path / "refused").exists()
    run = tmp_path / "run"
    same = ("logger=none", "resume=auto", f"hydra.run.dir={run}")
    done = _recipe("total_frames=100", *same)
    assert done.returncode == 0, done.stderr
    record = _hydra_record(run)
    assert "total_frames=100" in record["overrides.yaml"]
    # Refused in place (another batch size): the run's record is put back.
    changed = _recipe("total_frames=200", "batch_size=16", *same)
    assert changed.returncode == 2 and "batch_size: saved 32, now 16" in changed.stderr
    launched = [
        o for o in (*FAST, "total_frames=100", *same) if not o.startswith(("hydra.", "resume="))
    ]
    pasted = " ".join(shlex.quote(o) for o in (*launched, f"resume={run}"))  # [32,32] quoted
    assert f"which continues its newest checkpoint): {pasted}" in changed.stderr
    assert _hydra_record(run) == record
    # Refused in place by validate_config (before any resume logic): the same.
    invalid = _recipe("total_frames=200", "batch_size=0", *same)
    assert invalid.returncode == 2 and "batch_size=0" in invalid.stderr
    assert _hydra_record(run) == record
    # Continued from elsewhere (resume=PATH): no empty directory beside it, and the run's record
    # becomes the command that continued it.
    resumed = _recipe(
        "total_frames=200", "logger=none", f"resume={run}", f"hydra.run.dir={tmp_path / 'new'}"
    )
    assert resumed.returncode == 0, resumed.stderr
    assert not (tmp_path / "new").exists()
    assert [int(r["frames"]) for r in _rows(run)] == [100, 200]
    record = _hydra_record(run)
    assert "total_frames: 200" in record["config.yaml"]
    assert "total_frames=200" in record["overrides.yaml"]
    # Finished, launched in place with another progress setting: the record stays the run's.
    finished = _recipe("total_frames=200", "progress=false", *same)
    assert finished.returncode == 0 and "Already finished" in finished.stdout
    assert _hydra_record(run) == record
    # A copy of its checkpoints/ folder alone, continued by a launch into the run's directory
    # (resume=<copy> hydra.run.dir=<run>): the copy trains and gets this launch's record; the run
    # keeps its own, which hydra wrote over.
    copy = tmp_path / "copy"
    shutil.copytree(run / "checkpoints", copy / "checkpoints")
    forked = _recipe("total_frames=300", "logger=none", f"resume={copy}", f"hydra.run.dir={run}")
    assert forked.returncode == 0, forked.stderr
    assert [int(r["frames"]) for r in _rows(copy)] == [300]
    assert _hydra_record(run) == record
    assert f"resume={copy}" in _hydra_record(copy)["overrides.yaml"]


def test_a_refused_resume_from_elsewhere_leaves_the_runs_record_alone(tmp_path):
    # resume=PATH launched in another directory: hydra wrote there, not in the run's .hydra/.
    run, launch = tmp_path / "run", tmp_path / "launch"
    train(make_cfg("total_frames=100", "logger=none"), run)
    for folder, overrides in ((run, "- seed=0\n"), (launch, "- batch_size=16\n")):
        (folder / ".hydra").mkdir(parents=True)
        (folder / ".hydra" / "config.yaml").write_text("as: written by hydra\n")
        (folder / ".hydra" / "overrides.yaml").write_text(overrides)
    with pytest.raises(ConfigError):
        train(make_cfg("total_frames=200", "logger=none", "batch_size=16", f"resume={run}"), launch)
    assert (run / ".hydra" / "config.yaml").read_text() == "as: written by hydra\n"
    assert (run / ".hydra" / "overrides.yaml").read_text() == "- seed=0\n"


def test_restore_hydra_files_by_hand(tmp_path):
    hydra = tmp_path / ".hydra"
    hydra.mkdir()
    (hydra / "config.yaml").write_text("seed: 9\n")
    (hydra / "overrides.yaml").write_text("- seed=9\n")
    state = {"config": "seed: 0\n", "hydra_files": {"config.yaml": "seed: 1\n", "x.yaml": "a"}}
    assert restore_hydra_files(tmp_path, state) == ["config.yaml"]
    assert (hydra / "config.yaml").read_text() == "seed: 1\n"
    assert not (hydra / "x.yaml").exists()  # only hydra's own files, and only those it wrote
    # A checkpoint from before the record was kept: its saved configuration, the overrides left.
    assert restore_hydra_files(tmp_path, {"config": "seed: 0\n"}) == ["config.yaml"]
    assert (hydra / "config.yaml").read_text() == "seed: 0\n"
    assert (hydra / "overrides.yaml").read_text() == "- seed=9\n"
    assert restore_hydra_files(tmp_path / "elsewhere", state) == []  # outside hydra: nothing made


def test_wandb_summary_holds_the_final_frame_count(tmp_path, monkeypatch):
    # W&B's summary shows the last value logged for each key: spy on every Run.log call.
    import wandb

    logged: list[dict] = []
    original = wandb.sdk.wandb_run.Run.log

    def spy(self, data, *args, **kwargs):
        logged.append(dict(data))
        return original(self, data, *args, **kwargs)

    monkeypatch.setattr(wandb.sdk.wandb_run.Run, "log", spy)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    train(make_cfg("total_frames=300", "logger=wandb", "eval.video_every=10"), tmp_path)
    frames = [row["frames"] for row in logged if "frames" in row]
    assert frames and frames[-1] == 300  # the only video was logged at frame 100


def test_checkpoint_bytes_counts_the_file_and_its_buffer(tmp_path):
    from sac_tr.checkpoint import buffer_dir, checkpoint_bytes, checkpoint_path

    path = checkpoint_path(tmp_path, 100)
    path.write_bytes(b"x" * 10)
    assert checkpoint_bytes(path) == 10
    (buffer_dir(path) / "storage").mkdir(parents=True)
    (buffer_dir(path) / "storage" / "a.memmap").write_bytes(b"y" * 1000)
    (buffer_dir(path) / "meta.json").write_bytes(b"z" * 5)
    assert checkpoint_bytes(path) == 1015


def test_a_checkpoint_from_before_a_new_option_still_resumes_and_says_so(tmp_path, capsys):
    from omegaconf import OmegaConf

    first = train(make_cfg("total_frames=100", "logger=none"), tmp_path)
    state = load_checkpoint(first.checkpoint)
    old = OmegaConf.create(state["config"])
    del old["cudagraphs"]  # as written by a sac_tr that did not have the option yet
    state["config"] = OmegaConf.to_yaml(old)
    torch.save(state, first.checkpoint)
    more = train(make_cfg("total_frames=200", "logger=none", "resume=auto"), tmp_path)
    assert more.frames == 200
    assert (
        "keys new since it was written, at today's values: ['cudagraphs']"
        in capsys.readouterr().out
    )


def test_removing_an_unused_run_directory_takes_its_empty_parents_under_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    stamp = tmp_path / "runs" / "hopper" / "2026-11-22_10-00-00_seed0"
    (stamp / ".hydra").mkdir(parents=True)
    (tmp_path / "runs" / "pendulum" / "kept").mkdir(parents=True)
    assert remove_if_unused(stamp)
    assert not (tmp_path / "runs" / "hopper").exists()  # left empty: removed
    assert (tmp_path / "runs" / "pendulum" / "kept").is_dir()  # runs/ itself and others stay
    # The only run of a fresh clone, refused: nothing is left, not even runs/.
    only = tmp_path / "runs" / "walker2d" / "2026-11-22_11-00-00_seed0"
    (only / ".hydra").mkdir(parents=True)
    (tmp_path / "runs" / "pendulum" / "kept").rmdir()
    (tmp_path / "runs" / "pendulum").rmdir()
    assert remove_if_unused(only)
    assert not (tmp_path / "runs").exists()
    assert tmp_path.is_dir()  # and nothing above it


def test_a_short_run_logs_its_losses_and_says_it_never_left_the_random_phase(tmp_path, capsys):
    train(make_cfg("total_frames=300", "logger=csv", "log_every_updates=100000"), tmp_path)
    assert list((tmp_path / "csv").rglob("*loss_qvalue*"))  # the last partial window, logged
    capsys.readouterr()
    train(make_cfg("total_frames=99", "logger=none"), tmp_path / "random")
    assert "makes no update" in capsys.readouterr().out  # FAST: 100 random frames
    # Past the random phase but with fewer transitions than a batch: no update either.
    cfg = make_cfg("total_frames=150", "batch_size=200", "logger=none")
    summary = train(cfg, tmp_path / "small")
    assert summary.updates == 0 and "makes no update" in capsys.readouterr().out


def test_a_copied_checkpoint_logs_to_a_new_wandb_run_and_a_moved_one_continues(tmp_path, capsys):
    """The W&B run a resume continues, by hand: the checkpoint's own in its own directory, or
    where that directory was moved; a new one where the run that wrote it is still there."""
    run, copy = tmp_path / "run", tmp_path / "copy"
    run.mkdir()
    copy.mkdir()
    state = {"wandb_id": "abc123", "run_dir": str(run.resolve())}
    assert wandb_run_to_continue(state, run) == "abc123"
    assert wandb_run_to_continue({"wandb_id": "abc123"}, copy) == "abc123"  # before 2026-12-04
    assert wandb_run_to_continue(state, copy) == "abc123"  # the original holds no run: moved
    (run / "eval.csv").write_text("frames\n")
    capsys.readouterr()
    assert wandb_run_to_continue(state, copy) is None  # copied: two runs, two W&B runs
    assert "logs to a new W&B run, not to that run's (abc123)" in capsys.readouterr().out
    assert wandb_run_to_continue({**state, "wandb_id": ""}, copy) is None
    # The same directory by another path is the same run: a bind mount, say, whose path the
    # checkpoint recorded (resolved, as a symlink's would not be); a symlink stands in for it.
    (tmp_path / "alias").symlink_to(run, target_is_directory=True)
    assert wandb_run_to_continue({**state, "run_dir": str(tmp_path / "alias")}, run) == "abc123"
