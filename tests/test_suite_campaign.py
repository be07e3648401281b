"""The suite campaign's run selection and collection (``benchmarks/learning.py suite``): which runs
``--runs`` and ``--skip-finished-in`` leave, and that collecting never replaces a committed curve
with a shorter one. Expected lists are written out by hand from the issue's order."""

import importlib.util
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from sac_tr.eval_csv import UnfinishedRowWarning

ROOT = Path(__file__).resolve().parents[1]


def _learning():
    sys.path.insert(0, str(ROOT / "benchmarks"))  # learning.py imports suite_table from there
    try:
        spec = importlib.util.spec_from_file_location(
            "learning", ROOT / "benchmarks" / "learning.py"
        )
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    return module


def _eval_csv(run_dir: Path, frames: list[int]) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    lines = ["frames,updates,return_mean,return_std,episodes,wall_time_s"]
    lines += [f"{f},{f},{f / 100},0.0,10,{f / 40}" for f in frames]
    (run_dir / "eval.csv").write_text("\n".join(lines) + "\n")


def test_the_campaign_order_is_the_issues(tmp_path):
    names = [name for name, _, _ in _learning().suite_jobs(tmp_path)]
    tasks = ["halfcheetah", "hopper", "walker2d", "ant"]
    expected = [
        f"{t}_{loss}_seed{s}"
        for loss, s in [
            ("sac_v1", 0),
            ("sac_v1", 1),
            ("sb3", 0),
            ("sac_v2", 0),
            ("sb3", 1),
            ("sac_v2", 1),
        ]
        for t in tasks
    ]
    assert names == expected


def test_runs_takes_the_named_runs_in_the_order_given(tmp_path):
    learning = _learning()
    jobs = learning.select_jobs(
        learning.suite_jobs(tmp_path), ["ant_sb3_seed1", "hopper_sac_v1_seed1"], None
    )
    assert [name for name, _, _ in jobs] == ["ant_sb3_seed1", "hopper_sac_v1_seed1"]
    assert jobs[1][2] == tmp_path / "hopper_sac_v1_seed1"
    assert "seed=1" in jobs[1][1] and "loss=sac_v1" in jobs[1][1] and "env=hopper" in jobs[1][1]


def test_an_unknown_run_is_refused_with_the_valid_names(tmp_path):
    learning = _learning()
    with pytest.raises(SystemExit) as err:
        learning.select_jobs(learning.suite_jobs(tmp_path), ["hopper_sac_v3_seed0"], None)
    assert "no suite run named hopper_sac_v3_seed0" in str(err.value)
    assert "hopper_sac_v2_seed0" in str(err.value)


def test_runs_finished_in_the_results_are_left_out(tmp_path, capsys):
    learning = _learning()
    results = tmp_path / "results"
    _eval_csv(results / "halfcheetah_sac_v1_seed0", list(range(10_000, 300_001, 10_000)))
    _eval_csv(results / "hopper_sac_v1_seed0", list(range(10_000, 250_001, 10_000)))  # unfinished
    jobs = learning.select_jobs(
        learning.suite_jobs(tmp_path / "campaign"),
        ["halfcheetah_sac_v1_seed0", "hopper_sac_v1_seed0", "walker2d_sac_v1_seed0"],
        results,
    )
    assert [name for name, _, _ in jobs] == ["hopper_sac_v1_seed0", "walker2d_sac_v1_seed0"]
    assert "not run again: halfcheetah_sac_v1_seed0" in capsys.readouterr().out


def test_collect_keeps_a_longer_committed_curve(tmp_path):
    learning = _learning()
    campaign, results = tmp_path / "campaign", tmp_path / "results"
    # Hopper: committed to 250k by a lost machine, rerun here to 40k: the committed one stays.
    _eval_csv(results / "hopper_sac_v1_seed0", [10_000, 250_000])
    committed = (results / "hopper_sac_v1_seed0" / "eval.csv").read_text()
    _eval_csv(campaign / "hopper_sac_v1_seed0", [10_000, 20_000, 40_000])
    # Ant: committed to 20k, here to 30k: the new one replaces it.
    _eval_csv(results / "ant_sac_v1_seed0", [10_000, 20_000])
    _eval_csv(campaign / "ant_sac_v1_seed0", [10_000, 20_000, 30_000])
    newer = (campaign / "ant_sac_v1_seed0" / "eval.csv").read_text()
    (campaign / "ant_sac_v1_seed0" / "commits.txt").write_text("2026-12-01 00:00:00 abc1234\n")
    # Walker2d: an eval.csv with its header only; Ant seed 1: an empty file.
    (campaign / "walker2d_sac_v1_seed0").mkdir(parents=True)
    (campaign / "walker2d_sac_v1_seed0" / "eval.csv").write_text("frames,return_mean\n")
    (campaign / "ant_sac_v1_seed1").mkdir(parents=True)
    (campaign / "ant_sac_v1_seed1" / "eval.csv").write_text("")
    learning.collect_suite(campaign, results)
    assert (results / "hopper_sac_v1_seed0" / "eval.csv").read_text() == committed
    assert (results / "ant_sac_v1_seed0" / "eval.csv").read_text() == newer
    assert (results / "ant_sac_v1_seed0" / "commits.txt").read_text().endswith("abc1234\n")
    assert not (results / "walker2d_sac_v1_seed0").exists()  # no evaluation, nothing collected
    assert not (results / "ant_sac_v1_seed1").exists()


def test_a_segment_reports_its_exit_code_and_its_own_peak_memory():
    # ru_maxrss starts from the launcher's memory at fork, so this is measured from a fresh
    # interpreter that loads learning.py as the campaign does (this pytest process holds torch).
    launcher = (
        "import subprocess, sys; sys.path.insert(0, sys.argv[1]); import learning; "
        "assert 'torch' not in sys.modules, 'learning.py loaded torch'; "
        "code, peak = learning.reap(subprocess.Popen([sys.executable, '-c', sys.argv[2]])); "
        "print(code, peak)"
    )

    def launch(child: str) -> tuple[int, float]:
        out = subprocess.run(
            [sys.executable, "-c", launcher, str(ROOT / "benchmarks"), child],
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
        ).stdout.split()
        return int(out[0]), float(out[1])

    # 300 MiB of bytes written (every page touched), freed, then exit 3.
    code, peak = launch("b = b'x' * (300 * 2**20); del b; raise SystemExit(3)")
    assert code == 3
    assert 300 <= peak < 300 + 100  # the bytes plus an interpreter's few tens of MiB
    code, peak = launch("pass")  # nothing allocated: the interpreter alone, not the launcher
    assert code == 0 and peak < 100
    code, _ = launch("import os, signal; os.kill(os.getpid(), signal.SIGKILL)")
    assert code == -9  # a signal is reported as -N, not as an exit status


def test_run_suite_runs_the_selection_and_records_each_segment(tmp_path, monkeypatch):
    learning = _learning()
    campaign = tmp_path / "campaign"

    def fake_jobs(out_dir):  # each "run" writes its eval.csv and exits with its own code
        jobs = []
        for name, code in [("hopper_sac_v1_seed1", 0), ("ant_sac_v1_seed0", 2), ("x_sb3_seed0", 0)]:
            eval_csv = out_dir / name / "eval.csv"
            script = (
                f"import pathlib; p = pathlib.Path(r'{eval_csv}'); "
                "p.write_text('frames,return_mean\\n10000,1.0\\n'); print('ran'); "
                f"raise SystemExit({code})"
            )
            jobs.append((name, [sys.executable, "-c", script], out_dir / name))
        return jobs

    monkeypatch.setattr(learning, "suite_jobs", fake_jobs)
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    learning.run_suite(campaign, 2, runs=["ant_sac_v1_seed0", "hopper_sac_v1_seed1"])
    assert {sig: signal.getsignal(sig) for sig in handlers} == handlers  # put back
    assert not (campaign / "x_sb3_seed0").exists()  # not selected
    for name, ended in [("hopper_sac_v1_seed1", "exit 0"), ("ant_sac_v1_seed0", "exit 2 (ref")]:
        lines = (campaign / name / "commits.txt").read_text().splitlines()
        assert len(lines) == 2  # the segment's start, then how it ended
        assert (
            f" {ended}" in lines[1] and ", peak memory " in lines[1] and lines[1].endswith(" MiB")
        )
        assert lines[0].split()[2] == lines[1].split()[2]  # the same commit
        assert (campaign / name / "eval.csv").exists()
        assert "ran" in (campaign / "logs" / f"{name}.log").read_text()


def test_a_name_given_twice_runs_once_and_a_missing_results_dir_is_refused(tmp_path):
    learning = _learning()
    jobs = learning.suite_jobs(tmp_path)
    twice = learning.select_jobs(jobs, ["ant_sb3_seed0", "hopper_sb3_seed0", "ant_sb3_seed0"], None)
    assert [name for name, _, _ in twice] == ["ant_sb3_seed0", "hopper_sb3_seed0"]
    for wrong in [tmp_path / "results" / "suit", tmp_path]:  # a typo, or one level up
        with pytest.raises(SystemExit, match="holds no suite run with an evaluation"):
            learning.select_jobs(jobs, None, wrong)  # must not redo finished runs


def test_a_run_finished_in_its_own_directory_is_not_launched(tmp_path, monkeypatch, capsys):
    learning = _learning()
    campaign = tmp_path / "campaign"
    # Its checkpoints were deleted (to save disk): only eval.csv says it reached 300k frames.
    _eval_csv(campaign / "ant_sac_v1_seed0", list(range(10_000, 300_001, 10_000)))
    launched = tmp_path / "launched"
    script = f"import pathlib; pathlib.Path(r'{launched}').touch()"
    jobs = [("ant_sac_v1_seed0", [sys.executable, "-c", script], campaign / "ant_sac_v1_seed0")]
    monkeypatch.setattr(learning, "suite_jobs", lambda out_dir: jobs)
    learning.run_suite(campaign, 1)
    assert not launched.exists()
    assert not (campaign / "ant_sac_v1_seed0" / "commits.txt").exists()
    assert "ant_sac_v1_seed0: finished" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["hopper", "--report"], "--report: for the suite only"),
        (["suite", "--seeds", "1", "2"], "--seeds: not for the suite"),
        (["suite", "loss=sac_v2"], "hydra overrides: not for the suite"),
        (["suite", "--jobs", "0"], "--jobs 0: give at least 1"),
        (["suite", "--report", "--runs", "ant_sb3_seed0"], "not with --report/--collect"),
        (["suite", "--dir", "/nonexistent/suite", "--report"], "no such campaign directory"),
        (
            ["suite", "--dir", str(ROOT / "benchmarks" / "results" / "suite")],
            "inside the committed",
        ),
    ],
)
def test_options_the_mode_would_ignore_are_refused(argv, message, monkeypatch, capsys):
    learning = _learning()
    monkeypatch.setattr(sys, "argv", ["learning.py", *argv])
    with pytest.raises(SystemExit) as err:
        learning.main()
    assert err.value.code == 2  # argparse's usage error, before anything ran
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_stop_signals_the_run_under_way_and_starts_no_other(
    tmp_path, monkeypatch, request, signum
):
    """SIGTERM (``kill <launcher>``) or SIGHUP (the terminal it was started from closed)."""
    learning = _learning()
    # SIGHUP handled, not ignored (SIG_IGN: nohup), before the launch: the launcher replaces it.
    before = signal.signal(signal.SIGHUP, lambda *args: None)
    request.addfinalizer(lambda: signal.signal(signal.SIGHUP, before))
    campaign = tmp_path / "campaign"
    names = ["hopper_sac_v1_seed0", "walker2d_sac_v1_seed0"]
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]  # killed long before 60 s
    jobs = [(name, sleeper, campaign / name) for name in names]
    monkeypatch.setattr(learning, "suite_jobs", lambda out_dir: jobs)

    def stop_once_started():  # SIGTERM to this process, as `kill <launcher>` would send
        deadline = time.monotonic() + 30
        while not (campaign / names[0] / "commits.txt").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        os.kill(os.getpid(), signum)

    handlers = {
        sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    }
    threading.Thread(target=stop_once_started, daemon=True).start()
    start = time.monotonic()
    learning.run_suite(campaign, 1)
    assert time.monotonic() - start < 30  # the sleeper did not run its 60 s
    lines = (campaign / names[0] / "commits.txt").read_text().splitlines()
    assert (
        len(lines) == 2 and " exit -15 (killed by SIGTERM), " in lines[1]
    )  # ended by the forwarded SIGTERM
    assert not (campaign / names[1] / "commits.txt").exists()  # never started
    assert {sig: signal.getsignal(sig) for sig in handlers} == handlers


def test_a_run_with_a_damaged_curve_is_not_launched_and_the_others_are(
    tmp_path, monkeypatch, capsys
):
    learning = _learning()
    campaign = tmp_path / "campaign"
    _eval_csv(campaign / "ant_sac_v1_seed0", [10_000, 20_000])
    with (campaign / "ant_sac_v1_seed0" / "eval.csv").open("a") as f:
        f.write("30000,29001,oops,0,10,500\n")  # edited by hand
    jobs = [
        (
            name,
            [sys.executable, "-c", f"import pathlib; pathlib.Path(r'{tmp_path / name}').touch()"],
            campaign / name,
        )
        for name in ("ant_sac_v1_seed0", "hopper_sac_v1_seed1")
    ]
    monkeypatch.setattr(learning, "suite_jobs", lambda out_dir: jobs)
    learning.run_suite(campaign, 1)
    assert not (tmp_path / "ant_sac_v1_seed0").exists()
    assert (tmp_path / "hopper_sac_v1_seed1").exists()
    out = capsys.readouterr().out
    assert f"ant_sac_v1_seed0: not run: {campaign / 'ant_sac_v1_seed0' / 'eval.csv'}, line 4" in out


def test_exit_codes_say_a_checkpointed_stop_from_a_death_by_signal():
    describe = _learning().describe_exit
    assert describe(0) == "exit 0"
    assert describe(2) == "exit 2 (refused: see the run's log)"  # a changed configuration
    assert describe(1) == "exit 1"
    assert describe(140) == "exit 140 (stopped by SIGUSR2, checkpointed)"  # submitit's signal
    assert describe(-40) == "exit -40 (killed by signal 40)"  # a real-time one, unnamed
    assert describe(143) == "exit 143 (stopped by SIGTERM, checkpointed)"  # 128 + 15
    assert describe(130) == "exit 130 (stopped by SIGINT, checkpointed)"  # 128 + 2
    assert describe(-9) == "exit -9 (killed by SIGKILL)"


def test_a_damaged_curve_is_named_and_left_out_of_the_table_and_the_collection(tmp_path, capsys):
    learning = _learning()
    campaign, dest = tmp_path / "campaign", tmp_path / "results"
    _eval_csv(campaign / "hopper_sac_v1_seed0", [10_000, 20_000])
    _eval_csv(campaign / "ant_sac_v1_seed0", [10_000])
    bad = campaign / "ant_sac_v1_seed0" / "eval.csv"
    bad.write_text(bad.read_text() + "20000,19001,oops,0,10,500\n")
    live = campaign / "hopper_sac_v1_seed0" / "eval.csv"
    live.write_text(live.read_text() + "30000,29001,30")  # a row being appended as we collect
    with pytest.warns(UnfinishedRowWarning, match="'30000,29001,30' is unfinished"):
        learning.collect_suite(campaign, dest)
    out = capsys.readouterr().out
    assert f"ant_sac_v1_seed0: not collected: {bad}, line 3" in out
    assert "collected 1 run(s)" in out
    assert (dest / "hopper_sac_v1_seed0" / "eval.csv").read_text().splitlines() == [
        "frames,updates,return_mean,return_std,episodes,wall_time_s",
        "10000,10000,100.0,0.0,10,250.0",
        "20000,20000,200.0,0.0,10,500.0",
    ]  # the complete rows only
    assert not (dest / "ant_sac_v1_seed0").exists()
    with pytest.warns(UnfinishedRowWarning):
        table = learning.suite_table(campaign, [10_000, 20_000], [0, 10_000, 20_000])
    assert "| Hopper-v5 | sac_v1 |" in table and "| Ant-v5 |" not in table
    assert f"Left out, its eval.csv is damaged: {bad}, line 3: return_mean='oops'" in table
