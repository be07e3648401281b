"""Soak benchmark: a long run stopped by SIGTERM again and again ends where an uninterrupted run
ends (counters, eval returns, every parameter).

Starts two copies of the main recipe at once (one thread each), same seed and config:
``whole`` runs to the end; ``interrupted`` receives SIGTERM every ``--interval`` seconds, as a
pre-empted cluster job would, and is resumed from its run directory each time. Prints the
number of interruptions, both runs' counters and final eval returns, and whether every
parameter, optimizer moment and eval row is identical.

    python benchmarks/soak.py                       # 200,000 frames of Pendulum-v1 (~45 min, 2 cores)
    python benchmarks/soak.py --frames 20000 --interval 30
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from sac_tr.checkpoint import find_checkpoint, load_checkpoint  # noqa: E402


def recipe(run_dir: Path, overrides: list[str], resume: bool) -> subprocess.Popen:
    args = [sys.executable, str(ROOT / "recipes" / "sac_mujoco.py"), *overrides]
    args += [f"hydra.run.dir={run_dir}"] + ([f"resume={run_dir}"] if resume else [])
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=200_000)
    parser.add_argument("--interval", type=float, default=150.0, help="seconds between SIGTERMs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("soak_runs"))
    args = parser.parse_args()
    overrides = [
        "env=pendulum",
        f"total_frames={args.frames}",
        f"seed={args.seed}",
        "threads=1",
        "logger=csv",
        "progress=false",
        f"checkpoint.every_frames={max(args.frames // 10, 1)}",
    ]
    whole_dir, cut_dir = args.out / "whole", args.out / "interrupted"
    start = time.time()
    whole = recipe(whole_dir, overrides, resume=False)
    cut = recipe(cut_dir, overrides, resume=False)
    interruptions, stopped_at = 0, []
    while True:
        try:
            code = cut.wait(timeout=args.interval)
        except subprocess.TimeoutExpired:
            cut.send_signal(signal.SIGTERM)
            code = cut.wait()
            if code == 0:  # it finished just as the signal came
                break
            # 128 + SIGTERM: stopped by our handler; -SIGTERM: the signal came before the
            # handler was installed (start-up), and the last periodic checkpoint is resumed.
            if code not in (128 + signal.SIGTERM, -signal.SIGTERM):
                sys.exit(f"interrupted run failed (exit {code}):\n{cut.stderr.read()[-3000:]}")
            interruptions += 1
            stopped_at.append(load_checkpoint(cut_dir)["frames"])
            cut = recipe(cut_dir, overrides, resume=True)
            continue
        if code != 0:
            sys.exit(f"interrupted run failed (exit {code}):\n{cut.stderr.read()[-3000:]}")
        break
    if whole.wait() != 0:
        sys.exit(f"uninterrupted run failed:\n{whole.stderr.read()[-3000:]}")
    minutes = (time.time() - start) / 60

    a = load_checkpoint(find_checkpoint(whole_dir))
    b = load_checkpoint(find_checkpoint(cut_dir))
    same_params = a["loss"].keys() == b["loss"].keys() and all(
        torch.equal(a["loss"][k], b["loss"][k]) for k in a["loss"]
    )
    same_moments = all(
        torch.equal(v, b["optimizer"]["state"][i][n])
        for i, moments in a["optimizer"]["state"].items()
        for n, v in moments.items()
    )

    def evals(run_dir: Path) -> list[list[str]]:
        rows = (run_dir / "eval.csv").read_text().splitlines()[1:]
        return [r.split(",")[:3] for r in rows]

    ea, eb = evals(whole_dir), evals(cut_dir)
    print(f"Pendulum-v1, {args.frames} frames, seed {args.seed}, {minutes:.1f} min wall")
    print(f"interruptions: {interruptions} (SIGTERM every {args.interval:.0f} s)")
    print(f"  stopped at frames: {stopped_at}")
    for name, s, e in (("whole", a, ea), ("interrupted", b, eb)):
        print(
            f"{name:12s} frames {s['frames']}  updates {s['updates']}  evals {len(e)}  "
            f"final eval return {float(e[-1][2]):.2f}"
        )
    print(f"eval rows identical: {ea == eb}")
    print(f"parameters identical: {same_params}; optimizer moments identical: {same_moments}")
    if not (same_params and same_moments and ea == eb):
        sys.exit(1)


if __name__ == "__main__":
    main()
