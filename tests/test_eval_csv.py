"""Reading a run's eval.csv back (``sac_tr.eval_csv``): a damaged file (a line cut short, a value
that is not a number) is refused naming the file and the line, before a resume changes it; the
expected rows are written out by hand."""

import subprocess
import sys

import pytest

from sac_tr.eval_csv import EvalCSVError, last_eval_row, read_eval_rows, trim_eval_csv
from sac_tr.train import train
from tests.test_recipe import FAST, ROOT, make_cfg

HEADER = "frames,updates,return_mean,return_std,episodes,wall_time_s"


def test_rows_are_read_as_written_and_blank_lines_are_skipped(tmp_path):
    path = tmp_path / "eval.csv"
    path.write_text(f"{HEADER}\n10000,9001,197.5,0.5,10,172.38\n\n20000,19001,-3e2,1,10,375\n")
    assert read_eval_rows(path) == [
        dict(
            frames="10000",
            updates="9001",
            return_mean="197.5",
            return_std="0.5",
            episodes="10",
            wall_time_s="172.38",
        ),
        dict(
            frames="20000",
            updates="19001",
            return_mean="-3e2",
            return_std="1",
            episodes="10",
            wall_time_s="375",
        ),
    ]
    assert last_eval_row(path)["frames"] == "20000"
    assert read_eval_rows(tmp_path / "missing.csv") == [] and last_eval_row(tmp_path / "x") is None


@pytest.mark.parametrize(
    ("last_line", "problem"),
    [
        ("30000,29001,2990.1", "3 value(s) where the header has 6 columns"),  # cut inside the row
        (
            "30",
            "1 value(s) where the header has 6 columns",
        ),  # cut inside frames: would read as frame 30
        ("30000,29001,nan,x,10,500", "return_std='x' is not a number"),
        ("30000.5,29001,1,1,10,500", "frames='30000.5' is not a whole number"),
    ],
)
def test_a_damaged_line_is_refused_naming_the_file_and_the_line(tmp_path, last_line, problem):
    path = tmp_path / "eval.csv"
    text = f"{HEADER}\n10000,9001,1,1,10,100\n20000,19001,2,1,10,200\n{last_line}\n"
    path.write_text(text)
    for read in (read_eval_rows, last_eval_row, lambda p: trim_eval_csv(p, 20_000)):
        with pytest.raises(EvalCSVError) as err:
            read(path)
        assert f"{path}, line 4: {problem}" in str(err.value)
        assert "Delete that line" in str(err.value)
    assert path.read_text() == text  # trim_eval_csv refused before rewriting anything


def test_a_file_that_is_not_an_eval_csv_is_refused(tmp_path):
    path = tmp_path / "eval.csv"
    path.write_text("step,reward\n1,2\n")
    with pytest.raises(EvalCSVError, match="has no 'frames' column"):
        read_eval_rows(path)
    path.write_text("")  # created and killed before its header: nothing to read, nothing to trim
    assert read_eval_rows(path) == [] and trim_eval_csv(path, 0) == 0


def test_a_resume_over_a_damaged_curve_stops_before_training(tmp_path):
    """The recipe names the file and exits 2, leaving the checkpoint and the curve as they were."""
    train(make_cfg("total_frames=200", "logger=none", "resume=auto"), tmp_path)
    path = tmp_path / "eval.csv"
    path.write_text(path.read_text() + "30")  # a row cut short at its first characters
    damaged = path.read_text()
    cmd = [
        sys.executable,
        str(ROOT / "recipes" / "sac_mujoco.py"),
        *FAST,
        "total_frames=300",
        "logger=none",
        "resume=auto",
        f"hydra.run.dir={tmp_path}",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 2, done.stderr
    assert f"{path}, line 4: 1 value(s) where the header has 6 columns" in done.stderr
    assert path.read_text() == damaged
