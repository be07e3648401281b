"""Plot a sweep: eval return vs frames per environment (mean across seeds with a 95% bootstrap
band on the frames every seed reached, one curve per variant, each seed as a thin line) and a
table of final and area-under-curve scores (IQM with 95% stratified-bootstrap intervals, the
rliable approach).

    python recipes/plot.py multirun/<date>/ --out figures/fig1
    python recipes/plot.py runs/a runs/b --metric return_mean --metric stochastic_return_mean

Writes ``<out>/curves.png``, ``<out>/summary.csv`` and ``<out>/summary.md`` and prints the table.
A variant is what a run's command-line overrides change (``loss=td3``), seeds pooled.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.ticker import FuncFormatter

from sac_tr.analysis import find_runs, group_runs, mean_curve_band, summary_table

COLUMNS = [
    "env",
    "variant",
    "runs",
    "seeds",
    "frames",
    "final_iqm",
    "final_ci_low",
    "final_ci_high",
    "final_mean",
    "auc_iqm",
    "auc_ci_low",
    "auc_ci_high",
]


def load(roots: list[Path], metrics: list[str]):
    """Runs grouped by environment and variant; with several metrics, each is its own variant."""
    runs = []
    for metric in metrics:
        for run in find_runs(roots, metric):
            if len(metrics) > 1:
                run.overrides = (*run.overrides, f"metric={metric}")
            runs.append(run)
    return group_runs(runs)


def plot(grouped, path: Path, title: str | None) -> None:
    """Write ``figure(grouped, title)`` to ``path``."""
    fig = figure(grouped, title)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def figure(grouped, title: str | None) -> plt.Figure:
    """One panel per environment: per variant, the mean over seeds with its bootstrap band on the
    frames every seed reached, and, for several seeds, each seed's own curve as a thin line to
    wherever it got (runs still under way have unequal lengths)."""
    envs = list(grouped)
    cols = 2 if len(envs) == 4 else min(len(envs), 3)  # the MuJoCo suite as a 2x2 grid
    rows = -(-len(envs) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.5 * cols, 4 * rows), squeeze=False)
    for ax in axes.flat[len(envs) :]:
        ax.set_visible(False)
    for ax, env in zip(axes.flat, envs, strict=False):
        for variant, runs in sorted(grouped[env].items()):
            frames, mean, low, high = mean_curve_band(runs)
            (line,) = ax.plot(frames, mean, label=f"{variant} (n={len(runs)})")
            ax.fill_between(frames, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
            if len(runs) > 1:
                for run in runs:
                    ax.plot(  # a leading "_" keeps it out of the legend
                        run.frames,
                        run.returns,
                        color=line.get_color(),
                        alpha=0.4,
                        lw=0.7,
                        label=f"_seed {run.seed}",
                    )
        ax.set_title(env)
        ax.set_xlabel("environment frames")
        ax.xaxis.set_major_formatter(FuncFormatter(_frames_label))
        ax.set_ylabel("eval return (mean over seeds, 95% CI)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def _frames_label(value: float, _position: int) -> str:
    """A tick label: 250k, 1M, 1.5M."""
    if abs(value) >= 1e6:
        return f"{value / 1e6:g}M"
    return f"{value / 1e3:g}k" if abs(value) >= 1e3 else f"{value:g}"


def fmt(value) -> str:
    return f"{value:.1f}" if isinstance(value, float) else str(value)


def write_tables(rows: list[dict], out: Path) -> str:
    with (out / "summary.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    lines = [
        "| env | variant | runs (seeds) | frames | final IQM [95% CI] | final mean | AUC IQM [95% CI] |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        runs = f"{r['runs']} ({r['seeds']})" if "seeds" in r else str(r["runs"])
        auc = (
            f"{fmt(r['auc_iqm'])} [{fmt(r['auc_ci_low'])}, {fmt(r['auc_ci_high'])}]"
            if "auc_iqm" in r
            else ""
        )
        lines.append(
            f"| {r['env']} | {r['variant']} | {runs} | "
            f"{r.get('frames', '')} | {fmt(r['final_iqm'])} [{fmt(r['final_ci_low'])}, "
            f"{fmt(r['final_ci_high'])}] | {fmt(r.get('final_mean', ''))} | {auc} |"
        )
    table = "\n".join(lines) + "\n"
    (out / "summary.md").write_text(table)
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("roots", nargs="+", type=Path, help="sweep or run directories")
    parser.add_argument("--out", type=Path, default=Path("figures"), help="output directory")
    parser.add_argument(
        "--metric",
        action="append",
        help="eval.csv column(s) to plot (default return_mean; stochastic_return_mean for Fig. 3a)",
    )
    parser.add_argument("--title", default=None)
    parser.add_argument("--reps", type=int, default=2000, help="bootstrap resamples")
    args = parser.parse_args(argv)
    try:
        grouped = load(args.roots, args.metric or ["return_mean"])
    except (FileNotFoundError, KeyError, ValueError) as err:
        print(f"error: {err}\nNothing was written to {args.out}.", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    plot(grouped, args.out / "curves.png", args.title)
    print(write_tables(summary_table(grouped, reps=args.reps), args.out), end="")
    print(f"Wrote {args.out / 'curves.png'}, summary.csv, summary.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
