"""Training-loop speed at threads=1, 2 and auto, on an idle machine and beside a second run.

    python benchmarks/bench_threads.py                        # Pendulum and HalfCheetah, 3,000 frames
    python benchmarks/bench_threads.py --frames 300 --envs pendulum --threads 1,auto   # a smoke test

Each measurement runs the recipe's command line (``recipes/sac_mujoco.py``, the whole loop:
collection, one update per frame, the progress bookkeeping) for ``--random-frames`` random frames
and then ``--frames`` frames with updates; the speed is the updating part only, from the wall
times eval.csv records at the end of the random phase and at the end (evaluations of one step,
no video, no checkpoint in between). "beside another run": this script first starts a second
training run (HalfCheetah, the same ``threads`` setting: two seeds side by side), waits until it
is updating, measures, then stops it. Prints a table of env steps/s with the CPU model and date.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path
from tempfile import TemporaryDirectory

from sac_tr.eval_csv import read_eval_rows

ROOT = Path(__file__).resolve().parents[1]
RECIPE = [sys.executable, str(ROOT / "recipes" / "sac_mujoco.py")]
# threads=auto never exceeds OMP_NUM_THREADS when it is set: measure it as a user's shell runs it.
ENV = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
QUIET = [
    "logger=csv",
    "progress=false",
    "eval.episodes=1",
    "eval.max_steps=1",
    "eval.video_every=0",
    "checkpoint.save_buffer=false",
]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def start_neighbour(threads: str, run_dir: Path) -> subprocess.Popen:
    """A second HalfCheetah training run that updates until stopped."""
    args = [
        "env=halfcheetah",
        f"threads={threads}",
        "total_frames=10_000_000",
        "env.init_random_frames=300",
        "eval.every_frames=300",  # a one-step evaluation row: the sign it is updating
        "checkpoint.every_frames=10_000_000",
        *QUIET,
        f"hydra.run.dir={run_dir}",
    ]
    return subprocess.Popen(
        [*RECIPE, *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=run_dir.parent,
        env=ENV,
    )


def wait_until_updating(run_dir: Path, timeout_s: float = 120.0) -> None:
    """The neighbour is past its random phase once its first evaluation row is written."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        eval_csv = run_dir / "eval.csv"
        if eval_csv.exists() and len(eval_csv.read_text().splitlines()) > 1:
            return
        time.sleep(0.5)
    raise TimeoutError(f"the second run did not start updating in {timeout_s:.0f} s")


def measure(env: str, threads: str, frames: int, random_frames: int, run_dir: Path) -> float:
    """Env steps/s of the loop after the random phase, from the run's own eval.csv."""
    args = [
        f"env={env}",
        f"threads={threads}",
        f"total_frames={random_frames + frames}",
        f"env.init_random_frames={random_frames}",
        f"eval.every_frames={random_frames}",
        f"checkpoint.every_frames={10 * (random_frames + frames)}",
        *QUIET,
        f"hydra.run.dir={run_dir}",
    ]
    subprocess.run([*RECIPE, *args], check=True, capture_output=True, cwd=run_dir.parent, env=ENV)
    rows = read_eval_rows(run_dir / "eval.csv")
    start = next(r for r in rows if int(r["frames"]) == random_frames)
    end = rows[-1]
    return (int(end["frames"]) - random_frames) / (
        float(end["wall_time_s"]) - float(start["wall_time_s"])
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--envs", default="pendulum,halfcheetah", help="configs/env names")
    parser.add_argument("--threads", default="1,2,auto", help="threads settings to compare")
    parser.add_argument(
        "--frames", type=int, default=3000, help="frames timed, after the random ones"
    )
    parser.add_argument("--random-frames", type=int, default=1000)
    parser.add_argument(
        "--conditions", default="idle,beside", help="idle and/or beside (a second run going)"
    )
    args = parser.parse_args()
    envs, settings = args.envs.split(","), args.threads.split(",")
    conditions = args.conditions.split(",")
    results: dict[tuple[str, str, str], float] = {}
    with TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for condition in conditions:
            for threads in settings:
                neighbour = None
                if condition == "beside":
                    neighbour_dir = tmp / f"neighbour_{threads}"
                    neighbour = start_neighbour(threads, neighbour_dir)
                    wait_until_updating(neighbour_dir)
                try:
                    for env in envs:
                        run_dir = tmp / f"{condition}_{threads}_{env}"
                        sps = measure(env, threads, args.frames, args.random_frames, run_dir)
                        results[condition, threads, env] = sps
                        print(
                            f"  {condition:<7} threads={threads:<5} {env:<12} {sps:7.1f} env steps/s"
                        )
                finally:
                    if neighbour is not None:
                        neighbour.send_signal(signal.SIGTERM)  # it checkpoints and exits
                        try:
                            neighbour.wait(timeout=60)
                        except subprocess.TimeoutExpired:
                            neighbour.kill()
    print()
    print(
        f"Training loop, env steps/s after {args.random_frames} random frames ({args.frames} "
        f"frames, 1 update per frame, batch 256, 2 x 256); {datetime.date.today().isoformat()}, "
        f"{cpu_model()}, {len(os.sched_getaffinity(0))} cores"
    )
    header = "| condition | threads | " + " | ".join(envs) + " |"
    print(header)
    print("|" + "---|" * (2 + len(envs)))
    for condition in conditions:
        for threads in settings:
            cells = " | ".join(f"{results[condition, threads, env]:.0f}" for env in envs)
            print(f"| {condition} | {threads} | {cells} |")


if __name__ == "__main__":
    main()
