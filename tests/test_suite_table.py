"""The MuJoCo suite's README table (``benchmarks/suite_table.py``), from hand-written eval.csv files
whose every cell is computed here by hand."""

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _suite_table():
    spec = importlib.util.spec_from_file_location(
        "suite_table", ROOT / "benchmarks" / "suite_table.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["suite_table"] = module
    spec.loader.exec_module(module)
    return module


def _write(run_dir: Path, rows: list[tuple[int, float, float]]) -> None:
    run_dir.mkdir(parents=True)
    lines = ["frames,updates,return_mean,return_std,episodes,wall_time_s"]
    lines += [f"{f},{f},{r},0.0,10,{t}" for f, r, t in rows]
    (run_dir / "eval.csv").write_text("\n".join(lines) + "\n")


def test_the_table_by_hand(tmp_path):
    table = _suite_table()
    # Hopper sac_v1: seed 0 finished at 30k frames, seed 1 still at 20k.
    _write(
        tmp_path / "hopper_sac_v1_seed0",
        [(10_000, 100.0, 500.0), (20_000, 300.0, 1_000.0), (30_000, 500.0, 2_000.0)],
    )
    _write(tmp_path / "hopper_sac_v1_seed1", [(10_000, 200.0, 400.0), (20_000, 101.0, 800.0)])
    # Hopper SB3: one seed, finished.
    _write(
        tmp_path / "hopper_sb3_seed0",
        [(10_000, 1.0, 200.0), (20_000, 2.0, 400.0), (30_000, 3.0, 7_200.0)],
    )
    marks = [10_000, 20_000, 30_000]
    lines = table.suite_table(tmp_path, frames=marks, windows=marks).splitlines()
    assert lines[0] == (
        "| task | variant | 10k | 20k | 30k | wall time, frames/s to 30k "
        "| frames/s 10-20k / 20-30k |"
    )
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]
    assert len(cells) == 2  # no row for a variant with no run
    v1, sb3 = cells
    assert v1[:2] == ["Hopper-v5", "sac_v1"]
    assert v1[2] == "150 (s0 100, s1 200)"  # (100 + 200) / 2
    assert v1[3] == "200 (s0 300, s1 101)"  # (300 + 101) / 2 = 200.5, printed to the unit
    assert v1[4] == "s0 500 only; unfinished: s1 at 20k"
    assert v1[5] == "s0 0.6 h, 15 f/s"  # 30,000 frames in 2,000 s
    # seed 0: 10,000 frames in 500 s, then in 1,000 s; seed 1: in 400 s, then not yet
    assert v1[6] == "s0 20 / 10; s1 25 / -"
    assert sb3[:2] == ["Hopper-v5", "SB3"]
    assert sb3[4] == "s0 3 only"
    assert sb3[5] == "s0 2.0 h, 4 f/s"  # 30,000 frames in 7,200 s = 4.17 f/s


def test_frames_per_second_between_two_evaluations():
    table = _suite_table()
    run = table.RunRows(seed=0, rows={10_000: (0.0, 250.0), 20_000: (0.0, 450.0)})
    assert run.frames_per_second(10_000, 20_000) == 10_000 / 200
    assert run.frames_per_second(0, 20_000) == 20_000 / 450
    assert run.frames_per_second(20_000, 30_000) is None  # not reached
    assert run.frames_per_second(5_000, 20_000) is None  # no evaluation there


def test_short_runs_are_labelled_in_frames_not_rounded_thousands():
    table = _suite_table()
    assert [table._k(f) for f in (300_000, 1_000, 400, 1_500)] == ["300k", "1k", "400", "1,500"]
