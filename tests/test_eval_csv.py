"""Reading a run's eval.csv back (``sac_tr.eval_csv``) and appending to it (``EvalCSV``): a last
line without its newline (a row being appended, or cut by a kill) is left out and dropped on
resume; any other damaged line is refused naming the file and the line, before a resume builds
anything or changes the file. Expected rows and line numbers are written out by hand."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from sac_tr.checkpoint import CheckpointError
from sac_tr.eval_csv import (
    EvalCSVError,
    Trimmed,
    UnfinishedRowWarning,
    check_counted,
    last_eval_row,
    read_eval_rows,
    trim_eval_csv,
)
from sac_tr.tracking import EvalCSV
from sac_tr.train import evaluation_due, train
from tests.test_recipe import make_cfg

HEADER = "frames,updates,return_mean,return_std,episodes,wall_time_s"
TWO_ROWS = f"{HEADER}\n10000,9001,1,1,10,100\n20000,19001,2,1,10,200\n"


def test_rows_are_read_as_written_and_blank_lines_are_skipped(tmp_path):
    path = tmp_path / "eval.csv"
    path.write_text(
        f"{HEADER}\r\n10000,9001,197.5,0.5,10,172.38\r\n\r\n20000,19001,-3e2,1,10,375\r\n"
    )
    assert read_eval_rows(path) == [
        {"frames": "10000", "updates": "9001", "return_mean": "197.5", "return_std": "0.5",
         "episodes": "10", "wall_time_s": "172.38"},
        {"frames": "20000", "updates": "19001", "return_mean": "-3e2", "return_std": "1",
         "episodes": "10", "wall_time_s": "375"},
    ]  # fmt: skip
    assert last_eval_row(path)["frames"] == "20000"
    assert read_eval_rows(tmp_path / "missing.csv") == [] and last_eval_row(tmp_path / "x") is None


@pytest.mark.parametrize(
    "cut",
    [
        "30000,29001,2990.1",  # cut inside the row
        "30",  # cut inside frames: it would read as an evaluation at frame 30
        "30000,29001,3,1,10,2",  # cut inside the last column (wall_time_s 250.5): looks whole
    ],
)
def test_an_unfinished_last_line_is_left_out_and_dropped_on_resume(tmp_path, cut):
    path = tmp_path / "eval.csv"
    path.write_text(TWO_ROWS + cut)
    with pytest.warns(UnfinishedRowWarning, match=f"its last line '{cut}' is unfinished"):
        assert [r["frames"] for r in read_eval_rows(path)] == ["10000", "20000"]
    # Killed while appending the evaluation at 30,000 frames, before its checkpoint: the newest
    # checkpoint is at 20,000 frames and counts two evaluations.
    assert trim_eval_csv(path, 20_000, evaluations=2) == Trimmed(0, 0, False, cut=True)
    assert path.read_text().replace("\r\n", "\n") == TWO_ROWS


def test_a_resume_keeps_a_counted_row_reports_a_lost_one_and_refuses_extra_ones(tmp_path):
    path = tmp_path / "eval.csv"
    # The row at 30,000 frames reached the disk whole but for its newline, and so did the
    # checkpoint at 30,000 (three evaluations): a machine that lost power. It is kept.
    path.write_text(TWO_ROWS + "30000,29001,3,1,10,300")
    assert check_counted(path, 30_000, 3) == Trimmed(0, 0, True, False)
    assert path.read_text() == TWO_ROWS + "30000,29001,3,1,10,300"  # checking changes nothing
    assert trim_eval_csv(path, 30_000, evaluations=3) == Trimmed(0, 0, True, False)
    assert path.read_text().replace("\r\n", "\n") == TWO_ROWS + "30000,29001,3,1,10,300\n"
    # The same row cut inside: it cannot be kept; the checkpoint's third evaluation is missing.
    path.write_text(TWO_ROWS + "30000,29001,3")
    assert trim_eval_csv(path, 30_000, evaluations=3) == Trimmed(0, 1, False, True)
    assert path.read_text().replace("\r\n", "\n") == TWO_ROWS
    # The row at 20,000 never arrived, and the unfinished line is a later row (40,000).
    path.write_text(f"{HEADER}\n10000,9001,1,1,10,100\n40000,39001,4")
    assert trim_eval_csv(path, 30_000, evaluations=2) == Trimmed(0, 1, False, True)
    # An unfinished row before a complete one is not kept: out of order (after 10k and 30k).
    path.write_text(
        f"{HEADER}\n10000,9001,1,1,10,100\n30000,29001,3,1,10,300\n20000,19001,2,1,10,200"
    )
    assert trim_eval_csv(path, 20_000, evaluations=2) == Trimmed(1, 1, False, True)
    # More rows than the checkpoint counts: another run's rows joined in. Refused, untouched.
    path.write_text(TWO_ROWS)
    with pytest.raises(EvalCSVError, match=r"holds 2 evaluation\(s\) up to 20,000 frames, but the "
                       "checkpoint there counts 1: rows from another run"):  # fmt: skip
        trim_eval_csv(path, 20_000, evaluations=1)
    assert path.read_text() == TWO_ROWS
    assert trim_eval_csv(tmp_path / "gone.csv", 20_000, evaluations=2) == Trimmed(
        0, 2, False, False
    )


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("30000,29001,2990.1", "3 value(s) where the header (line 1) has 6 columns"),
        ("30000,29001,3,1,10,250,7", "7 value(s) where the header (line 1) has 6 columns"),
        ("5000,4001,1,1,10,50", "frames 5000 is not after the previous row's 10000"),
        ("30000,29001,nan,x,10,500", "return_std='x' is not a number"),
        ("30000.5,29001,1,1,10,500", "frames='30000.5' is not a whole number"),
    ],
)
def test_a_damaged_line_is_refused_naming_the_file_and_the_line(tmp_path, line, problem):
    path = tmp_path / "eval.csv"
    text = f"{HEADER}\n10000,9001,1,1,10,100\n{line}\n20000,19001,2,1,10,200\n"
    path.write_text(text)
    for read in (read_eval_rows, last_eval_row, lambda p: trim_eval_csv(p, 10_000, 1)):
        with pytest.raises(EvalCSVError) as err:
            read(path)
        assert f"{path}, line 3: {problem}" in str(err.value)
        assert "changed after it was written" in str(err.value)
        assert "delete it if it is the one bad line" in str(err.value)
    assert path.read_text() == text  # trim_eval_csv refused before rewriting anything


def test_a_file_that_is_not_an_eval_csv_is_refused(tmp_path):
    path = tmp_path / "eval.csv"
    path.write_text("step,reward\n1,2,3\n")  # the header is checked before the rows
    with pytest.raises(
        EvalCSVError, match=r"is not an eval.csv header \(it has no 'frames' column"
    ):
        read_eval_rows(path)
    path.write_bytes(b"frames,x\n1,\xff\n")  # a byte that is not UTF-8: named like any other
    with pytest.raises(EvalCSVError, match=f"{path}, line 2: x='\ufffd' is not a number"):
        read_eval_rows(path)
    path.write_text("")  # created and killed before its header: nothing to read, nothing to trim
    assert read_eval_rows(path) == [] and trim_eval_csv(path, 0, 0) == Trimmed(0, 0, False, False)


def test_appending_writes_a_fresh_header_or_refuses_another_shape(tmp_path, monkeypatch):
    path = tmp_path / "eval.csv"
    path.write_text("frames,updates,ret")  # a header cut short, no row under it: rewritten
    synced = []
    monkeypatch.setattr("os.fsync", lambda fd: synced.append(fd))
    EvalCSV(tmp_path).append(frames=1, updates=0, return_mean=2, return_std=0, episodes=1,
                             wall_time_s=3)  # fmt: skip
    assert len(synced) == 1  # the row is on disk before the checkpoint that counts it
    assert path.read_text().splitlines() == [HEADER, "1,0,2,0,1,3"]
    # The run was started with eval.stochastic=false; this writer has two more columns.
    with pytest.raises(EvalCSVError, match=f"under the columns {HEADER}, not {HEADER},stoch"):
        EvalCSV(tmp_path, extra=("stochastic",))
    assert path.read_text().splitlines() == [HEADER, "1,0,2,0,1,3"]
    path.write_text(path.read_text() + "2,1")  # not trimmed: appending would join two rows
    with pytest.raises(EvalCSVError, match="ends in an unfinished line '2,1'"):
        EvalCSV(tmp_path)


def test_a_resume_over_a_cut_row_continues_and_over_a_damaged_one_builds_nothing(
    tmp_path, monkeypatch, capsys
):
    train(make_cfg("total_frames=200", "logger=none", "resume=auto"), tmp_path)
    path = tmp_path / "eval.csv"
    path.write_text(path.read_text() + "30")  # killed while appending the next row
    more = train(make_cfg("total_frames=300", "logger=none", "resume=auto"), tmp_path)
    assert more.frames == 300
    assert "dropped the unfinished last line" in capsys.readouterr().out
    assert [r["frames"] for r in read_eval_rows(path)] == ["100", "200", "300"]
    # A line changed by hand is refused before the environments, agent and buffer are built.
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join([lines[0], "100,1,x,0,2,1.0\n", *lines[2:]]))
    damaged = path.read_text()

    def built(*args, **kwargs):
        raise AssertionError("the run was built")

    monkeypatch.setattr("sac_tr.train.TrainingRun", built)
    with pytest.raises(EvalCSVError, match=r"eval.csv, line 2: return_mean='x' is not a number"):
        train(make_cfg("total_frames=400", "logger=none", "resume=auto"), tmp_path)
    assert path.read_text() == damaged
    # The row at 200 frames lost (never reached the disk, or deleted as the message says): the
    # run continues and says where the curve has its gap.
    monkeypatch.undo()
    path.write_text("".join([lines[0], lines[1], *lines[3:]]))
    capsys.readouterr()
    train(make_cfg("total_frames=400", "logger=none", "resume=auto"), tmp_path)
    assert (
        "lacks 1 of the evaluations the checkpoint at 300 frames counts" in capsys.readouterr().out
    )
    assert [r["frames"] for r in read_eval_rows(path)] == ["100", "300", "400"]


def test_a_resume_from_an_older_checkpoint_sets_the_newer_ones_aside(tmp_path, capsys):
    """Resumed from step 200 of a run that reached 300, then stopped at 250: resume=auto must
    continue the 250 timeline, not return to the abandoned 300 (whose count, 3 evaluations,
    would match the new curve's 100/200/250 and splice the two)."""
    train(make_cfg("total_frames=300", "logger=none"), tmp_path)
    ckpt = tmp_path / "checkpoints"
    step_200 = next(p for p in ckpt.glob("step_*.pt") if p.name.endswith("200.pt"))
    # Already at its budget: it reports its own last evaluation (200's), not the newer 300's.
    done = train(make_cfg("total_frames=200", "logger=none", f"resume={step_200}"), tmp_path)
    row_200 = read_eval_rows(tmp_path / "eval.csv")[1]
    assert done.already_finished and done.last_eval_return == float(row_200["return_mean"])
    train(make_cfg("total_frames=250", "logger=none", f"resume={step_200}"), tmp_path)
    assert "moved to" in capsys.readouterr().out
    first_aside = ckpt / "abandoned" / "1" / "step_0000000300.pt"
    assert [p.name for p in first_aside.parent.glob("step_*.pt")] == [first_aside.name]
    kept = first_aside.read_bytes()
    last = train(make_cfg("total_frames=300", "logger=none", "resume=auto"), tmp_path)
    assert not last.already_finished
    assert [r["frames"] for r in read_eval_rows(tmp_path / "eval.csv")] == [
        "100",
        "200",
        "250",
        "300",
    ]
    # A second set-aside (the 250 timeline's 300, left for its 250) goes to a folder of its own:
    # the first timeline's 300 is still there, unchanged.
    step_250 = next(p for p in ckpt.glob("step_*.pt") if p.name.endswith("250.pt"))
    train(make_cfg("total_frames=260", "logger=none", f"resume={step_250}"), tmp_path)
    assert (ckpt / "abandoned" / "2" / "step_0000000300.pt").is_file()
    assert first_aside.read_bytes() == kept


def test_an_abandoned_checkpoint_is_refused_in_its_run_and_continues_in_a_copy(tmp_path, capsys):
    """resume=<run>/checkpoints/abandoned/step_300.pt: its evaluations after 200 were trimmed
    from the run's curve, so it must not continue there (nor take checkpoints/ for its run
    directory, as it did); the message's commands continue it in a directory of its own."""
    run = tmp_path / "run"
    record = run / ".hydra" / "overrides.yaml"  # the run's record, as hydra wrote it
    record.parent.mkdir(parents=True)
    record.write_text("- total_frames=300\n")
    train(make_cfg("total_frames=300", "logger=none"), run)
    original = read_eval_rows(run / "eval.csv")
    ckpt = run / "checkpoints"
    step_200 = next(p for p in ckpt.glob("step_*.pt") if p.name.endswith("200.pt"))
    train(make_cfg("total_frames=250", "logger=none", f"resume={step_200}"), run)
    abandoned = ckpt / "abandoned" / "1" / "step_0000000300.pt"
    # The curve it was on, as the run wrote it to 300 frames, is kept beside it.
    left = ckpt / "abandoned" / "1" / "timeline_eval.csv"
    left_rows = read_eval_rows(left)
    assert [r["frames"] for r in left_rows] == ["100", "200", "300"] and left_rows == original
    before = sorted(str(p.relative_to(run)) for p in run.rglob("*"))
    curve = (run / "eval.csv").read_text()
    with pytest.raises(CheckpointError) as err:
        train(make_cfg("total_frames=400", "logger=none", f"resume={abandoned}"), tmp_path / "new")
    message = str(err.value)
    assert "was set aside in checkpoints/abandoned/" in message
    assert "cannot continue there" in message
    assert sorted(str(p.relative_to(run)) for p in run.rglob("*")) == before  # nothing written
    assert (run / "eval.csv").read_text() == curve
    # Launched in the run itself: the record hydra wrote for the refused launch is put back.
    record.write_text("- total_frames=400\n- resume=...\n")
    with pytest.raises(CheckpointError, match="was set aside in checkpoints/abandoned/"):
        train(make_cfg("total_frames=400", "logger=none", f"resume={abandoned}"), run)
    assert record.read_text() == "- total_frames=300\n"
    lines = message.splitlines()
    commands = [line.strip() for line in lines if line.startswith("    ")]
    assert [c.split()[:2] for c in commands] == [["mkdir", "-p"], ["cp", "-r"], ["cp", str(left)]]
    subprocess.run(" && ".join(commands), shell=True, check=True)
    command = re.search(r"with resume=(\S+) ", message)
    capsys.readouterr()
    done = train(
        make_cfg("total_frames=400", "logger=none", f"resume={command[1]}"), tmp_path / "x"
    )
    out = capsys.readouterr().out
    assert "holds none" not in out and "lacks" not in out
    copy = Path(command[1])
    assert copy == tmp_path / "run_abandoned1_step_0000000300" and done.frames == 400
    # The copy's curve is the left timeline's (its row at 300 frames, trimmed from the run's
    # curve, included), then its own evaluation at 400.
    copied = read_eval_rows(copy / "eval.csv")
    assert copied[:3] == left_rows and [r["frames"] for r in copied] == ["100", "200", "300", "400"]
    assert (run / "eval.csv").read_text() == curve
    # A checkpoint copied out on its own (not in a checkpoints/ folder) would have continued in
    # its folder's parent: refused, with the commands that give it a run directory.
    loose = tmp_path / "downloads" / "step_0000000250.pt"
    loose.parent.mkdir()
    shutil.copy(next(ckpt.glob("step_*250.pt")), loose)
    with pytest.raises(CheckpointError, match="is not in a run's checkpoints/ folder") as err:
        train(make_cfg("total_frames=400", "logger=none", f"resume={loose}"), tmp_path / "y")
    assert not (tmp_path / "eval.csv").exists() and not (tmp_path / "checkpoints").exists()
    message = str(err.value)
    assert "mkdir -p " in message and "then launch the run's command with resume=" in message
    # Saved with its buffer, whose folder is not beside it: the commands cannot copy it, and say
    # so (else following them leads to a second refusal).
    assert "buffer's folder step_0000000250.buffer/ is not beside it: copy that too" in message
    # Its commands give it a directory whose curve starts after 250 frames: said once, and the
    # later resumes there count from it (no gap warned on each).
    commands = [line.strip() for line in message.splitlines() if line.startswith("    ")]
    subprocess.run(" && ".join(commands), shell=True, check=True)
    home = Path(re.search(r"with resume=(\S+)\.", message)[1])
    # It was copied without its replay buffer: named before anything is built or written.
    with pytest.raises(CheckpointError, match=r"step_0000000250.buffer' is not beside it"):
        train(make_cfg("total_frames=300", "logger=none", f"resume={home}"), tmp_path / "z")
    assert not (home / "eval.csv").exists()
    buffer = next(ckpt.glob("step_*250.buffer"))
    shutil.copytree(buffer, home / "checkpoints" / buffer.name)
    capsys.readouterr()
    train(make_cfg("total_frames=300", "logger=none", f"resume={home}"), tmp_path / "z")
    assert "holds none of the 3 evaluations" in capsys.readouterr().out
    train(make_cfg("total_frames=400", "logger=none", "resume=auto"), home)
    out = capsys.readouterr().out
    assert "lacks" not in out and "holds none" not in out
    assert [r["frames"] for r in read_eval_rows(home / "eval.csv")] == ["300", "400"]


def test_a_finished_run_reports_and_completes_its_counted_last_row(tmp_path, capsys):
    """A run killed after appending its final row but before the row's newline reached the
    disk, with the checkpoint counting it: "Already finished" reports that row, not the one
    before, and completes it, so the campaign's readers see the run as finished too."""
    train(make_cfg("total_frames=300", "logger=none"), tmp_path)
    path = tmp_path / "eval.csv"
    text = path.read_text()
    path.write_text(text.rstrip("\r\n"))
    last_line = text.splitlines()[-1].split(",")  # frames,updates,return_mean,...
    assert last_line[0] == "300"
    capsys.readouterr()
    done = train(make_cfg("total_frames=300", "logger=none", "resume=auto"), tmp_path)
    assert done.already_finished and done.last_eval_return == float(last_line[2])
    assert "its last row, which the checkpoint counts, lacked its newline; completed." in (
        capsys.readouterr().out
    )
    assert path.read_text().replace("\r\n", "\n") == text.replace("\r\n", "\n")
    assert last_eval_row(path)["frames"] == "300"


def test_an_evaluation_is_due_only_where_the_checkpoints_curve_lacks_it():
    """``evaluation_due``, by hand, every 100 frames: a checkpoint at a multiple of 100 whose last
    evaluation is before it was written by a fault stop before that evaluation; one between two
    multiples was not. A copy continued in a directory of its own (its 3 evaluations, the last at
    250 frames, made elsewhere) is judged by that last evaluation, not by its empty curve."""
    cfg = make_cfg("total_frames=1000")
    config = OmegaConf.to_container(cfg, resolve=True)
    whole = Trimmed(dropped=0, missing=0, completed=False, cut=False)
    rows = [{"frames": "100"}, {"frames": "200"}]
    own = {"frames": 300, "evals": 2, "evaluated_at": 200, "config": config}
    assert evaluation_due(own, cfg, rows, whole)
    assert not evaluation_due({**own, "frames": 250}, cfg, rows, whole)
    assert not evaluation_due(own, cfg, rows, whole._replace(missing=1))  # which one: unknown
    copy = {"frames": 270, "evals": 3, "evals_elsewhere": 3, "evaluated_at": 250, "config": config}
    assert not evaluation_due(copy, cfg, [], whole)  # stopped at 270: 300 not reached
    assert evaluation_due({**copy, "frames": 300}, cfg, [], whole)
