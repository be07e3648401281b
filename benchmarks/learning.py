"""Learning benchmark: sac_tr's recipe against Stable-Baselines3 SAC, same machine, seeds, schedule.

    python benchmarks/learning.py pendulum --seeds 0 1 2            # ours only
    python benchmarks/learning.py halfcheetah --seeds 0 1 --sb3     # with SB3 (pip install -e ".[bench]")
    python benchmarks/learning.py suite --dir ~/sac_tr_suite        # the MuJoCo suite campaign
    python benchmarks/learning.py suite --dir ~/sac_tr_suite --report   # its table so far
    python benchmarks/learning.py suite --dir ~/sac_tr_suite --collect benchmarks/results/suite
    python benchmarks/learning.py suite --dir ~/sac_tr_suite --runs hopper_sac_v1_seed1 ant_sac_v1_seed0
    python benchmarks/learning.py suite --dir ~/sac_tr_suite --skip-finished-in benchmarks/results/suite

The suite (README, "The MuJoCo suite"): sac_v1, sac_v2 and SB3 SAC (its defaults) on HalfCheetah, Hopper,
Walker2d and Ant, seeds 0 and 1, 300k frames, evaluated every 10k frames. Runs go to
``<dir>/<env>_<loss>_seed<s>`` (ours: ``+experiment=suite``; SB3: ``benchmarks/sb3_sac.py``), in the
order sac_v1 seeds 0-1, SB3 seed 0, sac_v2 seed 0, then the rest, ``--jobs`` at once. Every run
resumes: stopping the campaign (SIGTERM/SIGINT, or SIGHUP: its terminal closed, unless under
``nohup``) checkpoints the runs under way, and the same
command continues the unfinished runs and skips the finished ones. ``--runs`` takes only the named
runs, in the order given; ``--skip-finished-in DEST`` leaves out the runs whose results in ``DEST``
(the repository's ``benchmarks/results/suite``) already reach the last frame, so that a campaign
restarted on a new machine does not redo them. A run whose ``eval.csv`` holds a damaged line
(``sac_tr.eval_csv``) is named and left out, by the launcher and by ``--collect``, until the line
is mended; the other runs go on.

Every run is its own process with one torch thread; ``--jobs`` runs that many at once (default:
the number of cores). Both libraries are evaluated the same way: every ``eval_every`` frames,
10 episodes of the deterministic policy on a separate environment. Prints, per checkpoint, the
mean eval return of each seed and their mean, the targets, and frames per second of the whole
loop (wall time including evaluation, the same for both). A preset's results go to benchmarks/results/; the suite's runs to ``--dir``.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from suite_table import TASKS, suite_table  # benchmarks/, on the path as this script's folder

from sac_tr.eval_csv import (
    EvalCSVError,
    last_eval_row,
    read_eval_file,
    read_eval_rows,
    write_eval_file,
)
from sac_tr.signals import say

ROOT = Path(__file__).resolve().parents[1]
PRESETS = {
    # name: gymnasium id, frames, eval schedule, checkpoints to report, our overrides, SB3 kwargs,
    # and the targets (mean over seeds, worst seed) at the last checkpoint.
    "pendulum": {
        "id": "Pendulum-v1",
        "frames": 10_000,
        "eval_every": 500,
        "report": [2_500, 5_000, 10_000],
        "ours": [],
        "sb3": {"learning_rate": 1e-3},
        "target_mean": -150.0,
        "target_each": -200.0,
    },
    "halfcheetah": {
        "id": "HalfCheetah-v5",
        "frames": 100_000,
        "eval_every": 10_000,
        "report": [30_000, 50_000, 80_000, 100_000],
        "ours": [],
        "sb3": {"learning_starts": 10_000},
        "target_mean": 5_000.0,
        "target_each": None,
    },
    "hopper": {
        "id": "Hopper-v5",
        "frames": 100_000,
        "eval_every": 10_000,
        "report": [30_000, 50_000, 100_000],
        "ours": [],
        "sb3": {"learning_starts": 1_000},
        "target_mean": None,
        "target_each": None,
    },
}


SUITE = {"frames": 300_000, "eval_every": 10_000, "report": [100_000, 200_000, 300_000]}
# (loss, seed) in the order the issue asks for: sac_v1 seeds 0 and 1, SB3 seed 0, sac_v2 seed 0.
SUITE_ORDER = [("sac_v1", 0), ("sac_v1", 1), ("sb3", 0), ("sac_v2", 0), ("sb3", 1), ("sac_v2", 1)]


def suite_jobs(out_dir: Path) -> list[tuple[str, list[str], Path]]:
    """The campaign's runs in order: (name, command, run directory)."""
    jobs = []
    for loss, seed in SUITE_ORDER:
        for env, env_id in TASKS.items():
            name = f"{env}_{loss}_seed{seed}"
            if loss == "sb3":
                cmd = [
                    sys.executable,
                    str(ROOT / "benchmarks" / "sb3_sac.py"),
                    env_id,
                    f"--seed={seed}",
                    f"--frames={SUITE['frames']}",
                    f"--eval-every={SUITE['eval_every']}",
                    f"--dir={out_dir / name}",
                ]
            else:
                cmd = [
                    sys.executable,
                    str(ROOT / "recipes" / "sac_mujoco.py"),
                    "+experiment=suite",
                    "hydra.mode=RUN",  # one run in this process; its directory as in the sweep
                    f"hydra.run.dir={out_dir / name}",
                    f"env={env}",
                    f"loss={loss}",
                    f"seed={seed}",
                ]
            jobs.append((name, cmd, out_dir / name))
    return jobs


def last_frames(run_dir: Path) -> int:
    """The frames of a run directory's last evaluation (0 when it has none)."""
    row = last_eval_row(run_dir / "eval.csv")
    return int(float(row["frames"])) if row else 0


def select_jobs(
    jobs: list[tuple[str, list[str], Path]], runs: list[str] | None, finished_in: Path | None
) -> list[tuple[str, list[str], Path]]:
    """The campaign's jobs restricted to ``runs`` (in that order; an unknown name is refused with
    the valid ones) and without those whose results in ``finished_in`` reach the last frame."""
    by_name = {job[0]: job for job in jobs}
    if runs is not None:
        unknown = [r for r in runs if r not in by_name]
        if unknown:
            raise SystemExit(
                f"--runs: no suite run named {', '.join(unknown)}. "
                f"The runs are: {' '.join(by_name)}"
            )
        jobs = [by_name[r] for r in dict.fromkeys(runs)]  # a name given twice runs once
    if finished_in is not None:
        if not any(last_frames(finished_in / name) for name in by_name):
            raise SystemExit(
                f"--skip-finished-in: {finished_in} holds no suite run with an evaluation. Give "
                "the directory holding <env>_<loss>_seed<s>/eval.csv, e.g. benchmarks/results/suite."
            )
        done = [name for name, *_ in jobs if last_frames(finished_in / name) >= SUITE["frames"]]
        if done:
            print(f"finished in {finished_in}, not run again: {' '.join(done)}", flush=True)
        jobs = [job for job in jobs if job[0] not in done]
    return jobs


def wait_exited(proc: subprocess.Popen) -> None:
    """Block until ``proc`` has exited, without reaping it: its pid stays its own (a zombie) until
    ``reap``, so a signal sent to it meanwhile cannot reach a recycled pid."""
    os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)


def reap(proc: subprocess.Popen) -> tuple[int, float]:
    """Wait for ``proc`` and reap it: its exit code (``-N`` for signal N) and its peak resident
    memory in MiB, the kernel's ``ru_maxrss`` (KiB on Linux; this launcher is Linux-only): the
    largest of the child, its reaped descendants and the launcher's own peak, which fork and
    exec carry over, so this script does not import torch."""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_maxrss / 1024


def describe_exit(code: int) -> str:
    """``exit N`` with what it means: our recipe and ``sb3_sac.py`` exit 128 + the signal's number
    after checkpointing when SIGTERM/SIGINT/SIGHUP (the recipe also SIGUSR2) stops them, and 2
    when they refuse to start (a changed configuration, a damaged curve); ``-N`` is a death by
    signal N."""
    stops = {
        128 + sig: sig.name
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR2, signal.SIGHUP)
    }
    if code in stops:
        return f"exit {code} (stopped by {stops[code]}, checkpointed)"
    if code == 2:
        return "exit 2 (refused: see the run's log)"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:  # a real-time signal Python has no name for
            name = f"signal {-code}"
        return f"exit {code} (killed by {name})"
    return f"exit {code}"


def describe_sb3_run(run_dir: Path, env: str, env_id: str, seed: int) -> None:
    """Give an SB3 run the ``.hydra`` files our runs have, so ``recipes/plot.py`` groups it by
    task with ``loss=sb3`` as its variant."""
    hydra_dir = run_dir / ".hydra"
    hydra_dir.mkdir(parents=True, exist_ok=True)
    (hydra_dir / "config.yaml").write_text(
        f"env:\n  name: {env}\n  id: {env_id}\nseed: {seed}\nloss:\n  name: sb3\n"
    )
    (hydra_dir / "overrides.yaml").write_text(
        f"- +experiment=suite\n- env={env}\n- loss=sb3\n- seed={seed}\n"
    )


def run_suite(
    out_dir: Path, jobs: int, runs: list[str] | None = None, finished_in: Path | None = None
) -> None:
    """Run the campaign (or the ``runs`` named, see ``select_jobs``) ``jobs`` at a time; on
    SIGTERM/SIGINT/SIGHUP (its terminal closed, unless under ``nohup``) stop the runs under way
    (each checkpoints) and start no new one. Each run's
    output goes to ``<dir>/logs/<name>.log``."""
    queue = select_jobs(suite_jobs(out_dir), runs, finished_in)
    (out_dir / "logs").mkdir(parents=True, exist_ok=True)
    # Re-entrant: a second signal can arrive while the handler holds it, in the same thread.
    lock, running, stopping = threading.RLock(), set(), threading.Event()

    def stop(signum, frame):
        stopping.set()
        with lock:  # os.kill, not Popen.send_signal: its poll() could reap the child before reap()
            for proc in running:
                os.kill(proc.pid, signal.SIGTERM)

    previous = {
        sig: signal.signal(sig, stop)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
        if not (sig == signal.SIGHUP and signal.getsignal(sig) == signal.SIG_IGN)  # nohup
    }

    def work(job: tuple[str, list[str], Path]) -> None:
        name, cmd, run_dir = job
        if stopping.is_set():
            return
        try:
            frames = last_frames(run_dir)
        except EvalCSVError as err:  # this run would refuse it too; the others go on
            say(f"{name}: not run: {err}")
            return
        if frames >= SUITE["frames"]:  # also when its checkpoints were deleted
            say(f"{name}: finished ({run_dir / 'eval.csv'} reaches the last frame)")
            return
        if name.split("_")[1] == "sb3":
            env, _, seed = name.split("_")
            describe_sb3_run(run_dir, env, TASKS[env], int(seed.removeprefix("seed")))
        env_vars = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        run_dir.mkdir(parents=True, exist_ok=True)
        with (run_dir / ".lock").open("w") as lock_file:
            try:  # a second campaign started on the same directory takes the next run instead
                fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return
            run_locked(name, cmd, env_vars)

    def run_locked(name: str, cmd: list[str], env_vars: dict[str, str]) -> None:
        commit = subprocess.run(  # "-dirty": the run's code is not exactly the commit's
            ["git", "describe", "--always", "--dirty", "--abbrev=7"],
            capture_output=True,
            text=True,
            cwd=ROOT,
        ).stdout.strip()

        def record(what: str = "") -> None:  # commits.txt: the code each segment ran, its end
            with (out_dir / name / "commits.txt").open("a") as f:
                f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {commit or 'unknown'}{what}\n")

        with (out_dir / "logs" / f"{name}.log").open("a") as log:
            with lock:
                if stopping.is_set():
                    return
                record()
                log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(cmd)}\n")
                log.flush()
                proc = subprocess.Popen(
                    cmd, stdout=log, stderr=subprocess.STDOUT, env=env_vars, cwd=ROOT
                )
                running.add(proc)
            try:
                wait_exited(proc)
            finally:
                with lock:
                    running.discard(proc)
            code, peak_mib = reap(proc)
        ended = describe_exit(code)
        record(f" {ended}, peak memory {peak_mib:.0f} MiB")
        say(f"{time.strftime('%H:%M:%S')} {name}: {ended}")  # its terminal may be gone (SIGHUP)

    try:
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            list(pool.map(work, queue))
    finally:
        for sig, handler in previous.items():
            if handler is not None:  # None: a handler not set from Python, nothing to restore
                signal.signal(sig, handler)


def collect_suite(out_dir: Path, dest: Path) -> None:
    """Copy each run's eval.csv, its ``.hydra`` config and the commits it ran on to ``dest``
    (committed to the repository: the runs themselves live outside it). A run that ``dest``
    already holds further (an earlier execution of it, on a machine since lost) is kept there."""
    import shutil

    copied = kept = 0
    for _, _, run_dir in suite_jobs(out_dir):
        target = dest / run_dir.name
        try:
            frames, committed = last_frames(run_dir), last_frames(target)
        except EvalCSVError as err:  # neither copied over nor replaced; the others are
            print(f"{run_dir.name}: not collected: {err}")
            continue
        if not frames:  # not started, or no evaluation yet
            continue
        if committed > frames:
            print(
                f"{run_dir.name}: kept {target} (to {committed:,} frames) over {run_dir} (to {frames:,})"
            )
            kept += 1
            continue
        copied += 1
        (target / ".hydra").mkdir(parents=True, exist_ok=True)
        header, rows, _ = read_eval_file(run_dir / "eval.csv")  # without a row being appended
        write_eval_file(target / "eval.csv", header, rows)
        for name in ("commits.txt", ".hydra/config.yaml", ".hydra/overrides.yaml"):
            if (run_dir / name).exists():
                shutil.copy(run_dir / name, target / name)
    print(f"collected {copied} run(s) into {dest}; kept {kept} longer one(s) there")


def run_ours(name: str, preset: dict, seed: int, out_dir: Path, extra: list[str]) -> dict:
    run_dir = out_dir / f"ours_seed{seed}"
    cmd = [
        sys.executable,
        str(ROOT / "recipes" / "sac_mujoco.py"),
        f"env={name}",
        f"seed={seed}",
        f"total_frames={preset['frames']}",
        f"eval.every_frames={preset['eval_every']}",
        "eval.video_every=0",
        "logger=none",
        "progress=false",
        "threads=1",
        f"checkpoint.every_frames={preset['frames']}",
        f"hydra.run.dir={run_dir}",
        *preset["ours"],
        *extra,
    ]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    wall = time.perf_counter() - start
    curve = {
        int(r["frames"]): float(r["return_mean"]) for r in read_eval_rows(run_dir / "eval.csv")
    }
    return {"lib": "ours", "seed": seed, "curve": curve, "wall_s": wall}


def run_sb3(name: str, preset: dict, seed: int, out_dir: Path) -> dict:
    """SB3 SAC (its defaults plus the preset's kwargs) through ``benchmarks/sb3_sac.py``, which
    evaluates it with our ``evaluate`` exactly as the recipe evaluates ours."""
    run_dir = out_dir / f"sb3_seed{seed}"
    cmd = [
        sys.executable,
        str(ROOT / "benchmarks" / "sb3_sac.py"),
        preset["id"],
        f"--seed={seed}",
        f"--frames={preset['frames']}",
        f"--eval-every={preset['eval_every']}",
        f"--checkpoint-every={preset['frames']}",
        f"--dir={run_dir}",
        f"--kwargs={json.dumps(preset['sb3'])}",
    ]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    wall = time.perf_counter() - start
    curve = {
        int(r["frames"]): float(r["return_mean"]) for r in read_eval_rows(run_dir / "eval.csv")
    }
    return {"lib": "sb3", "seed": seed, "curve": curve, "wall_s": wall}


def report(name: str, preset: dict, results: list[dict]) -> None:
    libs = sorted({r["lib"] for r in results}, reverse=True)
    print(
        f"\n{preset['id']}: deterministic eval return (10 episodes) by frames; one column per seed"
    )
    header = f"{'frames':>8} | " + " | ".join(
        f"{lib:>5} "
        + " ".join(f"s{r['seed']:<7}" for r in results if r["lib"] == lib)
        + f" {'mean':>8}"
        for lib in libs
    )
    print(header)
    for frames in preset["report"]:
        cells = []
        for lib in libs:
            vals = [r["curve"].get(frames, float("nan")) for r in results if r["lib"] == lib]
            cells.append(
                f"{'':>5} "
                + " ".join(f"{v:<8.1f}" for v in vals)
                + f" {sum(vals) / len(vals):>8.1f}"
            )
        print(f"{frames:>8} | " + " | ".join(cells))
    for lib in libs:
        runs = [r for r in results if r["lib"] == lib]
        fps = sum(preset["frames"] / r["wall_s"] for r in runs) / len(runs)
        print(
            f"{lib}: {fps:.1f} frames/s per run (whole loop incl. evaluation, 1 thread, "
            f"{len(runs)} runs, wall " + ", ".join(f"{r['wall_s']:.0f}s" for r in runs) + ")"
        )
    last = preset["report"][-1]
    ours = [r["curve"].get(last, float("nan")) for r in results if r["lib"] == "ours"]
    if ours and preset["target_mean"] is not None:
        mean = sum(ours) / len(ours)
        verdict = mean >= preset["target_mean"] and (
            preset["target_each"] is None or min(ours) >= preset["target_each"]
        )
        print(
            f"target at {last} frames: mean >= {preset['target_mean']}"
            + (
                f", every seed >= {preset['target_each']}"
                if preset["target_each"] is not None
                else ""
            )
            + f" -> mean {mean:.1f}, worst {min(ours):.1f}: {'MET' if verdict else 'NOT MET'}"
        )


def check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse options that the chosen mode would silently ignore, and campaign directories that
    cannot be right, before anything runs."""
    suite_only = {"--dir": args.dir, "--report": args.report, "--collect": args.collect}
    suite_only |= {"--runs": args.runs, "--skip-finished-in": args.skip_finished_in}
    preset_only = {"--seeds": args.seeds != [0], "--sb3": args.sb3, "--out": args.out}
    preset_only["hydra overrides"] = args.overrides
    if args.env != "suite" and (given := [k for k, v in suite_only.items() if v]):
        parser.error(f"{', '.join(given)}: for the suite only (learning.py suite ...)")
    if args.env == "suite" and (given := [k for k, v in preset_only.items() if v]):
        parser.error(
            f"{', '.join(given)}: not for the suite, whose runs, seeds and settings are fixed "
            "(+experiment=suite); use --runs to choose runs"
        )
    if args.jobs < 1:
        parser.error(f"--jobs {args.jobs}: give at least 1")
    if (args.runs or args.skip_finished_in) and (args.report or args.collect):
        parser.error(
            "--runs and --skip-finished-in choose runs to train: not with --report/--collect"
        )
    if args.env != "suite":
        return
    if (args.report or args.collect) and args.dir and not args.dir.expanduser().is_dir():
        parser.error(f"--dir {args.dir}: no such campaign directory")
    if args.dir and not (args.report or args.collect):
        results = (ROOT / "benchmarks" / "results").resolve()
        if results in [args.dir.expanduser().resolve(), *args.dir.expanduser().resolve().parents]:
            parser.error(
                f"--dir {args.dir}: runs would train inside the committed results; give a "
                "directory outside the repository, e.g. ~/sac_tr_suite"
            )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("env", choices=[*sorted(PRESETS), "suite"])
    parser.add_argument("--dir", type=Path, default=None, help="suite: the campaign directory")
    parser.add_argument("--report", action="store_true", help="suite: print the table so far")
    parser.add_argument("--collect", type=Path, default=None, help="suite: copy results here")
    parser.add_argument(
        "--runs", nargs="+", default=None, help="suite: only these runs (<env>_<loss>_seed<s>)"
    )
    parser.add_argument(
        "--skip-finished-in",
        type=Path,
        default=None,
        help="suite: leave out the runs whose results here reach the last frame",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--sb3", action="store_true", help="also run Stable-Baselines3 SAC")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "overrides", nargs="*", default=[], help="extra hydra overrides for our recipe"
    )
    args = parser.parse_intermixed_args()  # hydra overrides may follow the options
    check_arguments(parser, args)
    if args.env == "suite":
        out_dir = (args.dir or ROOT / "multirun" / "suite").expanduser().resolve()
        try:
            if args.collect:
                collect_suite(out_dir, args.collect)
            elif not args.report:
                run_suite(out_dir, args.jobs, args.runs, args.skip_finished_in)
            say(f"{out_dir}: deterministic evaluation return (10 episodes), mean over the seeds")
            say(suite_table(out_dir, SUITE["report"], [SUITE["eval_every"], *SUITE["report"]]))
        except EvalCSVError as err:  # a damaged result in --skip-finished-in: before any run
            print(f"learning.py: {err}", file=sys.stderr)
            sys.exit(2)
        return
    preset = PRESETS[args.env]
    out_dir = (
        args.out
        or ROOT / "benchmarks" / "results" / f"learning_{args.env}_{time.strftime('%Y%m%d-%H%M%S')}"
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = [(run_ours, (args.env, preset, s, out_dir, args.overrides)) for s in args.seeds]
    if args.sb3:
        jobs += [(run_sb3, (args.env, preset, s, out_dir)) for s in args.seeds]
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        results = list(pool.map(lambda job: job[0](*job[1]), jobs))
    (out_dir / "results.json").write_text(json.dumps(results, indent=1))
    print(f"machine: {os.cpu_count()} cores; results in {out_dir}")
    report(args.env, preset, results)


if __name__ == "__main__":
    main()
