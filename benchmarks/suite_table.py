"""The MuJoCo suite's results table, read from the run directories' ``eval.csv`` files.

    python benchmarks/suite_table.py benchmarks/results/suite            # markdown, for the README
    python benchmarks/suite_table.py ~/sac_tr_suite --frames 100000 200000 300000

For each task and variant (sac_v1, sac_v2, SB3): the deterministic evaluation return at each of
``--frames`` (mean over the seeds that reached it, each seed as ``sN`` in brackets, ``sN x only`` for a single seed), the wall time of each
finished run and its frames per second, and frames per second in each window between two of
``--windows`` (whether the loop slows as the replay buffer fills). Wall time is ``wall_time_s`` of
the eval row: training and evaluation, summed over the segments of a resumed run.
"""

from __future__ import annotations

import argparse
import itertools
from dataclasses import dataclass
from pathlib import Path

from sac_tr.eval_csv import EvalCSVError, read_eval_rows

TASKS = {
    "halfcheetah": "HalfCheetah-v5",
    "hopper": "Hopper-v5",
    "walker2d": "Walker2d-v5",
    "ant": "Ant-v5",
}
VARIANTS = ("sac_v1", "sac_v2", "sb3")
SEEDS = (0, 1)


@dataclass
class RunRows:
    """One run's evaluations: ``{frames: (return, wall seconds)}``."""

    seed: int
    rows: dict[int, tuple[float, float]]

    @property
    def last_frames(self) -> int:
        return max(self.rows) if self.rows else 0

    def frames_per_second(self, start: int, end: int) -> float | None:
        """Frames per second between the evaluations at ``start`` and ``end`` (0: the start)."""
        if end not in self.rows or (start and start not in self.rows):
            return None
        seconds = self.rows[end][1] - (self.rows[start][1] if start else 0.0)
        return (end - start) / seconds if seconds > 0 else None


def read_run(run_dir: Path, seed: int) -> RunRows | None:
    """A run directory's evaluations, or ``None`` when it has none yet."""
    rows = read_eval_rows(run_dir / "eval.csv")
    if not rows:
        return None
    return RunRows(
        seed,
        {int(float(r["frames"])): (float(r["return_mean"]), float(r["wall_time_s"])) for r in rows},
    )


def _k(frames: int) -> str:
    """``300k`` for 300,000 frames; ``1,500`` where thousands would round (short runs)."""
    return f"{frames // 1000}k" if frames % 1000 == 0 else f"{frames:,}"


def _number(value: float) -> str:
    return f"{value:,.0f}"


def return_cell(runs: list[RunRows], frames: int) -> str:
    """``mean (s0 x, s1 y)`` over the runs that reached ``frames``; the others are named."""
    reached = [r for r in runs if frames in r.rows]
    if not reached:
        return ""
    mean = sum(r.rows[frames][0] for r in reached) / len(reached)
    seeds = ", ".join(f"s{r.seed} {_number(r.rows[frames][0])}" for r in reached)
    return f"{_number(mean)} ({seeds})" if len(reached) > 1 else f"{seeds} only"


def speed_cell(runs: list[RunRows], total: int) -> str:
    """The wall time and frames per second of each run that finished ``total`` frames."""
    done = [r for r in runs if total in r.rows]
    return "; ".join(
        f"s{r.seed} {r.rows[total][1] / 3600:.1f} h, {r.frames_per_second(0, total):.0f} f/s"
        for r in done
    )


def flatness_cell(runs: list[RunRows], windows: list[int]) -> str:
    """Frames per second of each run in each window ``windows[i] -> windows[i+1]``."""
    cells = []
    for r in runs:
        speeds = [r.frames_per_second(a, b) for a, b in itertools.pairwise(windows)]
        if any(s is not None for s in speeds):
            cells.append(
                f"s{r.seed} " + " / ".join("-" if s is None else f"{s:.0f}" for s in speeds)
            )
    return "; ".join(cells)


def suite_table(root: Path, frames: list[int], windows: list[int]) -> str:
    """The markdown table of every task and variant with at least one evaluation under ``root``."""
    spans = " / ".join(
        f"{a // 1000}-{b // 1000}k" if a % 1000 == b % 1000 == 0 else f"{_k(a)}-{_k(b)}"
        for a, b in itertools.pairwise(windows)
    )
    head = [
        "task",
        "variant",
        *(_k(f) for f in frames),
        f"wall time, frames/s to {_k(frames[-1])}",
        f"frames/s {spans}",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    damaged = []
    for env, env_id in TASKS.items():
        for variant in VARIANTS:
            runs = []
            for seed in SEEDS:
                try:
                    run = read_run(root / f"{env}_{variant}_seed{seed}", seed)
                except EvalCSVError as err:  # left out of the table, named under it
                    damaged.append(str(err))
                    continue
                if run is not None:
                    runs.append(run)
            if not runs:
                continue
            cells = [return_cell(runs, f) for f in frames]
            latest = [
                f"s{r.seed} at {_k(r.last_frames)}" for r in runs if r.last_frames < frames[-1]
            ]
            if latest:  # runs under way, or stopped before the end
                cells[-1] = (
                    (cells[-1] + "; " if cells[-1] else "") + "unfinished: " + ", ".join(latest)
                )
            lines.append(
                "| "
                + " | ".join(
                    [
                        env_id,
                        "SB3" if variant == "sb3" else variant,
                        *cells,
                        speed_cell(runs, frames[-1]),
                        flatness_cell(runs, windows),
                    ]
                )
                + " |"
            )
    lines += [f"\nLeft out, its eval.csv is damaged: {problem}" for problem in damaged]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("root", type=Path, help="the directory holding <env>_<variant>_seed<s>/")
    parser.add_argument("--frames", type=int, nargs="+", default=[100_000, 200_000, 300_000])
    parser.add_argument(
        "--windows", type=int, nargs="+", default=[10_000, 100_000, 200_000, 300_000]
    )
    args = parser.parse_args()
    print(suite_table(args.root.expanduser(), args.frames, args.windows))


if __name__ == "__main__":
    main()
