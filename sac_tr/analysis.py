"""Read sweeps of runs and summarise them the ``rliable`` way (Agarwal et al. 2021): interquartile
mean (IQM) over runs and stratified-bootstrap confidence intervals, for final and area-under-curve
scores, plus mean learning curves with a bootstrap band.

A run is a directory with ``eval.csv`` and hydra's ``.hydra/config.yaml`` and
``.hydra/overrides.yaml`` (what ``recipes/sac_mujoco.py`` writes). Runs are grouped by environment
and by *variant*: the command-line overrides of the run, leaving out the seed and anything every
run shares, e.g. ``loss=td3`` or ``loss.reward_scale=10`` (a sweep of a single variant is named
by the overrides its runs share).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from sac_tr.eval_csv import read_eval_rows

__all__ = [
    "Run",
    "area_under_curve",
    "find_runs",
    "group_runs",
    "iqm",
    "mean_curve_band",
    "stratified_bootstrap_ci",
    "summary_table",
]

# Overrides that never make another variant: the seed, where and how a run ran, how it resumed,
# and its frame budget (nothing is scheduled by it; curves of unequal length pool to the shortest).
IGNORED_OVERRIDE_KEYS = {
    "seed",
    "total_frames",
    "hydra.run.dir",
    "hydra.sweep.dir",
    "logger",
    "progress",
    "resume",
    "threads",
}


@dataclass
class Run:
    """One run's evaluations: ``frames[i]`` and ``returns[i]`` (the metric asked for)."""

    path: Path
    env: str
    seed: int
    overrides: tuple[str, ...]
    frames: np.ndarray
    returns: np.ndarray
    variant: str = field(default="")


def find_runs(roots: list[str | Path], metric: str = "return_mean") -> list[Run]:
    """Every run directory (one holding ``eval.csv``) under ``roots``, with ``metric`` read from
    its eval.csv. Raises ``FileNotFoundError`` if there is none, ``KeyError`` for a metric the
    csv does not have, ``sac_tr.eval_csv.EvalCSVError`` (a ``ValueError``) for a damaged one."""
    runs, seen = [], set()
    for root in map(Path, roots):
        for csv_path in sorted(root.rglob("eval.csv")):
            run_dir = csv_path.parent
            if (where := run_dir.resolve()) in seen:  # a root given twice, or one inside another
                continue
            seen.add(where)
            rows = read_eval_rows(csv_path)
            if not rows:
                continue
            if metric not in rows[0]:
                raise KeyError(f"{csv_path} has no column {metric!r} (it has {list(rows[0])}).")
            config = _read_yaml(run_dir / ".hydra" / "config.yaml") or {}
            overrides = _read_yaml(run_dir / ".hydra" / "overrides.yaml") or []
            env = (config.get("env") or {}).get("id") or (config.get("env") or {}).get("name")
            runs.append(
                Run(
                    path=run_dir,
                    env=str(env or "unknown"),
                    seed=int(config.get("seed", 0)),
                    overrides=tuple(str(o) for o in overrides),
                    frames=np.array([float(r["frames"]) for r in rows]),
                    returns=np.array([float(r[metric]) for r in rows]),
                )
            )
    if not runs:
        raise FileNotFoundError(
            f"No run directory (with an eval.csv) under {list(map(str, roots))}."
        )
    return runs


def _read_yaml(path: Path):
    return yaml.safe_load(path.read_text()) if path.exists() else None


def group_runs(runs: list[Run]) -> dict[str, dict[str, list[Run]]]:
    """``{env: {variant: [runs]}}``; a run's variant is its overrides minus the seed, the env
    and the overrides shared by every run, ``"default"`` when nothing is left (the baseline of a
    sweep). When nothing is left for any run (a single variant, e.g. a suite with only
    ``loss=sac_v1`` runs so far), the variant is the shared overrides instead."""

    def key(override: str) -> str:
        return override.lstrip("+~").split("=", 1)[0]

    candidates = [
        {o for o in r.overrides if key(o) not in IGNORED_OVERRIDE_KEYS and key(o) != "env"}
        for r in runs
    ]
    shared = set.intersection(*candidates) if candidates else set()
    if all(overrides == shared for overrides in candidates):  # a single variant: name it
        shared = set()
    grouped: dict[str, dict[str, list[Run]]] = defaultdict(lambda: defaultdict(list))
    for run, overrides in zip(runs, candidates, strict=True):
        run.variant = " ".join(sorted(o.lstrip("+") for o in overrides - shared)) or "default"
        twin = next((r for r in grouped[run.env][run.variant] if r.seed == run.seed), None)
        if twin is not None:  # counted twice, it would narrow the band and the intervals
            raise ValueError(
                f"{twin.path} and {run.path} are the same run ({run.env}, {run.variant}, seed "
                f"{run.seed}), e.g. the committed results and the campaign directory given "
                "together: give one of them."
            )
        grouped[run.env][run.variant].append(run)
    return {env: dict(variants) for env, variants in sorted(grouped.items())}


def iqm(scores: np.ndarray, axis: int = -1) -> np.ndarray:
    """Interquartile mean: the mean of the middle 50% of ``scores`` along ``axis`` (the lowest and
    highest ``floor(n / 4)`` values dropped, as ``scipy.stats.trim_mean(x, 0.25)``)."""
    x = np.sort(np.asarray(scores, dtype=float), axis=axis)
    n = x.shape[axis]
    k = int(np.floor(0.25 * n))
    return np.take(x, np.arange(k, n - k), axis=axis).mean(axis=axis)


def stratified_bootstrap_ci(
    scores: dict[str, np.ndarray],
    statistic=iqm,
    reps: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Point estimate and percentile confidence interval of ``statistic`` over all runs pooled,
    resampling runs with replacement *within* each stratum (task), as rliable does.

    ``scores``: ``{task: [runs]}``. Returns ``(estimate, low, high)``.
    """
    rng = np.random.default_rng(seed)
    pooled = np.concatenate([np.asarray(v, dtype=float) for v in scores.values()])
    estimate = float(statistic(pooled))
    samples = []
    for values in scores.values():
        values = np.asarray(values, dtype=float)
        idx = rng.integers(0, len(values), size=(reps, len(values)))
        samples.append(values[idx])
    stats = statistic(np.concatenate(samples, axis=1), axis=1)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(stats, [tail, 100 - tail])
    return estimate, float(low), float(high)


def area_under_curve(frames: np.ndarray, returns: np.ndarray) -> float:
    """Trapezoidal area under return-vs-frames divided by the frame span: the average return
    over training (a single evaluation counts as its own value)."""
    frames, returns = np.asarray(frames, float), np.asarray(returns, float)
    if len(frames) < 2:
        return float(returns.mean())
    area = np.sum((returns[1:] + returns[:-1]) / 2 * np.diff(frames))
    return float(area / (frames[-1] - frames[0]))


def common_frames(runs: list[Run]) -> np.ndarray:
    """Evaluation frames present in every run (runs of one sweep evaluate on the same grid)."""
    common = set(runs[0].frames.tolist())
    for run in runs[1:]:
        common &= set(run.frames.tolist())
    return np.array(sorted(common))


def mean_curve_band(
    runs: list[Run], reps: int = 2000, confidence: float = 0.95, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Frames, the mean return across runs, and a bootstrap confidence band of that mean."""
    frames = common_frames(runs)
    curves = np.stack([r.returns[np.isin(r.frames, frames)] for r in runs])  # [runs, points]
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(runs), size=(reps, len(runs)))
    means = curves[idx].mean(axis=1)  # [reps, points]
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail], axis=0)
    return frames, curves.mean(axis=0), low, high


def summary_table(
    grouped: dict[str, dict[str, list[Run]]], reps: int = 2000, seed: int = 0
) -> list[dict[str, object]]:
    """One row per (environment, variant): runs, last common frame, final-score and AUC IQM with
    95% stratified-bootstrap intervals, and the plain mean of the final scores."""
    rows = []
    for env, variants in grouped.items():
        for variant, runs in sorted(variants.items()):
            frames = common_frames(runs)
            last = frames[-1]
            final = np.array([r.returns[r.frames == last][0] for r in runs])
            auc = np.array(
                [area_under_curve(frames, r.returns[np.isin(r.frames, frames)]) for r in runs]
            )
            f_est, f_lo, f_hi = stratified_bootstrap_ci({env: final}, reps=reps, seed=seed)
            a_est, a_lo, a_hi = stratified_bootstrap_ci({env: auc}, reps=reps, seed=seed)
            rows.append(
                {
                    "env": env,
                    "variant": variant,
                    "runs": len(runs),
                    "seeds": " ".join(str(r.seed) for r in sorted(runs, key=lambda r: r.seed)),
                    "frames": int(last),
                    "final_iqm": f_est,
                    "final_ci_low": f_lo,
                    "final_ci_high": f_hi,
                    "final_mean": float(final.mean()),
                    "auc_iqm": a_est,
                    "auc_ci_low": a_lo,
                    "auc_ci_high": a_hi,
                }
            )
    if len(grouped) > 1:
        rows += _normalized_rows(grouped, reps=reps, seed=seed)
    return rows


def _normalized_rows(
    grouped: dict[str, dict[str, list[Run]]], reps: int, seed: int
) -> list[dict[str, object]]:
    """Across environments: final scores min-max normalised per environment (over all its runs),
    IQM with a bootstrap stratified by environment, for variants run on every environment. No
    rows when fewer than two variants ran on every environment: the row compares variants, and
    with a variant alone (one run per environment) it would read 0 everywhere."""
    finals: dict[str, dict[str, np.ndarray]] = {}
    for env, variants in grouped.items():
        last = {v: common_frames(runs)[-1] for v, runs in variants.items()}
        finals[env] = {
            v: np.array([r.returns[r.frames == last[v]][0] for r in runs])
            for v, runs in variants.items()
        }
    rows = []
    everywhere = set.intersection(*(set(v) for v in finals.values()))
    if len(everywhere) < 2:
        return rows
    for variant in sorted(everywhere):
        strata = {}
        for env, by_variant in finals.items():
            pooled = np.concatenate(list(by_variant.values()))
            span = max(pooled.max() - pooled.min(), 1e-12)
            strata[env] = (by_variant[variant] - pooled.min()) / span
        est, lo, hi = stratified_bootstrap_ci(strata, reps=reps, seed=seed)
        rows.append(
            {
                "env": "all (min-max normalised)",
                "variant": variant,
                "runs": sum(len(v) for v in strata.values()),
                "final_iqm": est,
                "final_ci_low": lo,
                "final_ci_high": hi,
            }
        )
    return rows
