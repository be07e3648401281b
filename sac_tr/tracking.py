"""Run tracking: a TorchRL logger (W&B offline by default, CSV, or none) plus an eval CSV that is
always written to the run directory, so results can be plotted without W&B."""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torchrl.record.loggers import Logger

from sac_tr.eval_csv import EvalCSVError, read_eval_file

__all__ = ["EvalCSV", "log_metrics", "log_video_file", "make_logger"]

WANDB_MODES = ("offline", "online", "disabled")
BACKENDS = ("wandb", "csv", "none")


def make_logger(
    backend: str,
    run_dir: str | os.PathLike,
    exp_name: str,
    *,
    project: str = "sac_tr",
    wandb_mode: str = "offline",
    config: Mapping[str, Any] | None = None,
    run_id: str | None = None,
) -> Logger | None:
    """Build the run's logger.

    Args:
        backend: ``"wandb"`` (TorchRL's ``WandbLogger``), ``"csv"`` (TorchRL's ``CSVLogger``) or
            ``"none"``.
        run_dir: the run directory; W&B writes its offline run under ``run_dir/wandb``.
        exp_name: the run's name.
        project: the W&B project.
        wandb_mode: ``"offline"`` (default: no account or network needed; upload later with
            ``wandb sync run_dir/wandb/offline-run-*``), ``"online"`` or ``"disabled"``.
        config: the resolved configuration, logged with the run.
        run_id: a W&B run id to continue (used when resuming).
    """
    if backend not in BACKENDS:
        raise ValueError(f"logger.backend must be one of {BACKENDS}, got {backend!r}.")
    run_dir = Path(run_dir)
    if backend == "none":
        return None
    if backend == "csv":
        from torchrl.record.loggers.csv import CSVLogger

        logger = CSVLogger(exp_name=exp_name, log_dir=str(run_dir / "csv"))
    else:
        if wandb_mode not in WANDB_MODES:
            raise ValueError(f"logger.wandb_mode must be one of {WANDB_MODES}, got {wandb_mode!r}.")
        from torchrl.record.loggers.wandb import WandbLogger

        os.environ["WANDB_MODE"] = wandb_mode  # read by wandb.init before any network call
        logger = WandbLogger(
            exp_name=exp_name,
            offline=wandb_mode == "offline",
            save_dir=str(run_dir),
            project=project,
            id=run_id,
            mode=wandb_mode,
            log_env_packages=False,
        )
    if config is not None:
        logger.log_hparams(dict(config))
    return logger


def log_metrics(logger: Logger | None, metrics: Mapping[str, float], step: int) -> None:
    """Log a dict of scalars at ``step`` (environment frames)."""
    if logger is None:
        return
    # "frames" is logged with every row, so the run's summary holds the last frame count.
    for name, value in {**metrics, "frames": step}.items():
        logger.log_scalar(name, float(value), step=step)


def log_video_file(logger: Logger | None, name: str, path: str | os.PathLike, step: int) -> None:
    """Log an mp4 already on disk (W&B only; needs no moviepy since the file is encoded)."""
    if logger is None or type(logger).__name__ != "WandbLogger":
        return
    import wandb

    logger.experiment.log({name: wandb.Video(str(path), format="mp4"), "frames": step})


class EvalCSV:
    """Appends one row per evaluation to ``run_dir/eval.csv`` (created with a header)."""

    FIELDS = ("frames", "updates", "return_mean", "return_std", "episodes", "wall_time_s")
    STOCHASTIC = ("stochastic_return_mean", "stochastic_return_std")  # with eval.stochastic

    def __init__(self, run_dir: str | os.PathLike, extra: tuple[str, ...] = ()) -> None:
        """Open ``run_dir/eval.csv`` for appending: a file with no complete row yet gets a fresh
        header; one with rows under other columns is refused (``check``)."""
        self.FIELDS = (*self.FIELDS, *extra)  # e.g. the stochastic policy's return
        self.path = Path(run_dir) / "eval.csv"
        if not self.check(run_dir, extra):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("w", newline="") as f:
                csv.writer(f).writerow(self.FIELDS)

    @classmethod
    def check(
        cls, run_dir: str | os.PathLike, extra: tuple[str, ...] = (), unfinished_ok: bool = False
    ) -> int:
        """The number of evaluations in ``run_dir/eval.csv`` (0 when it has none). Raises
        ``EvalCSVError`` for a damaged file, one whose rows are under other columns than this
        writer's (``eval.stochastic`` differs from the run's, or another program's file), or,
        unless ``unfinished_ok`` (before a resume trims it), one ending in an unfinished line."""
        path, fields = Path(run_dir) / "eval.csv", (*cls.FIELDS, *extra)
        header, rows, unfinished = read_eval_file(path)
        if rows and (tuple(header) != fields or (unfinished and not unfinished_ok)):
            raise EvalCSVError(
                f"{path} holds {len(rows)} evaluation(s) "
                + (
                    f"under the columns {','.join(header)}, not {','.join(fields)}"
                    if tuple(header) != fields
                    else f"and ends in an unfinished line {unfinished[:40]!r}"
                )
                + ": resume the run under its own configuration (eval.stochastic included), or "
                "give this one another run directory."
            )
        return len(rows)

    def append(self, **row: float) -> None:
        missing = set(self.FIELDS) - set(row)
        if missing:
            raise KeyError(f"EvalCSV row is missing {sorted(missing)}")
        with self.path.open("a", newline="") as f:
            csv.writer(f).writerow([row[k] for k in self.FIELDS])
            f.flush()
            os.fsync(f.fileno())  # on disk before the checkpoint that counts it
