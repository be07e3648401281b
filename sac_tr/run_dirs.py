"""Run directories across restarts: which checkpoint a run continues from (``resume=auto`` or a
path), whether the saved configuration still matches, and tidying what a restart leaves behind."""

from __future__ import annotations

import csv
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from sac_tr.checkpoint import PREFIX, SUFFIX, find_checkpoint, list_checkpoints

__all__ = [
    "RESUMABLE_KEYS",
    "added_keys",
    "checkpoint_frames",
    "config_differences",
    "last_eval_row",
    "read_eval_rows",
    "remove_if_unused",
    "resolve_resume",
    "trim_eval_csv",
]

# The keys a resumed run may change: the frame budget, ``resume`` itself, and how the process runs
# (torch threads, the progress bar), which never changes what is learned.
RESUMABLE_KEYS = ("total_frames", "resume", "threads", "progress")


def resolve_resume(resume: str | None, run_dir: str | os.PathLike) -> Path | None:
    """The checkpoint a run continues from, or ``None`` for a fresh start.

    ``resume=auto``: the newest ``checkpoints/step_<frames>.pt`` in ``run_dir`` when there is one,
    else ``None`` (start fresh), so the same command starts a run and continues it after any stop.
    Any other value is a checkpoint file or a run directory (``find_checkpoint`` explains a miss).
    """
    if not resume:
        return None
    if str(resume) == "auto":
        found = list_checkpoints(Path(run_dir) / "checkpoints")
        return found[-1] if found else None
    return find_checkpoint(resume)


def checkpoint_frames(path: str | os.PathLike) -> int:
    """The frame count a checkpoint was written at, read from its name ``step_<frames>.pt``."""
    name = Path(path).name
    if not (name.startswith(PREFIX) and name.endswith(SUFFIX)):
        raise ValueError(f"{name!r} is not named {PREFIX}<frames>{SUFFIX}.")
    return int(name[len(PREFIX) : -len(SUFFIX)])


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, Mapping):
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out or {prefix[:-1]: {}}
    return {prefix[:-1]: node}


def config_differences(
    saved_yaml: str, cfg: DictConfig, ignore: tuple[str, ...] = RESUMABLE_KEYS
) -> list[str]:
    """The dotted keys whose values differ between a checkpoint's saved configuration and ``cfg``
    (a key the saved one has and ``cfg`` lacks counts), leaving out ``ignore`` (dotted keys, each
    with what is below it) and the keys a newer sac_tr added (``added_keys``). Both sides are
    compared as written, before interpolations are resolved, as the checkpoint stores them."""
    saved, new = _flat_pair(saved_yaml, cfg)
    return sorted(
        key
        for key in saved
        if not any(key == top or key.startswith(f"{top}.") for top in ignore)
        and saved[key] != new.get(key, _MISSING)
    )


def added_keys(saved_yaml: str, cfg: DictConfig) -> list[str]:
    """The dotted keys of ``cfg`` that a checkpoint's saved configuration does not have: options
    added to sac_tr after the run started, which the resumed run takes at their new values."""
    saved, new = _flat_pair(saved_yaml, cfg)
    return sorted(new.keys() - saved.keys())


def _flat_pair(saved_yaml: str, cfg: DictConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    saved = _flatten(OmegaConf.to_container(OmegaConf.create(saved_yaml), resolve=False))
    return saved, _flatten(OmegaConf.to_container(cfg, resolve=False))


_MISSING = object()


def trim_eval_csv(path: str | os.PathLike, frames: int) -> int:
    """Drop the rows of ``eval.csv`` written after ``frames`` (a run killed after its last
    checkpoint evaluated once more; the resumed run evaluates those frames again). Returns the
    number of rows dropped."""
    path = Path(path)
    if not path.exists():
        return 0
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return 0
    header, body = rows[0], rows[1:]
    keep = [row for row in body if int(float(row[header.index("frames")])) <= frames]
    if len(keep) < len(body):
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("w", newline="") as f:
            csv.writer(f).writerows([header, *keep])
        os.replace(tmp, path)
    return len(body) - len(keep)


def read_eval_rows(path: str | os.PathLike) -> list[dict[str, str]]:
    """The rows of an ``eval.csv`` as dicts (none when the file does not exist)."""
    path = Path(path)
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def last_eval_row(path: str | os.PathLike) -> dict[str, str] | None:
    """The last row of an ``eval.csv`` as a dict, or ``None`` when there is none."""
    rows = read_eval_rows(path)
    return rows[-1] if rows else None


def remove_if_unused(run_dir: str | os.PathLike) -> bool:
    """Delete a run directory that holds nothing but what hydra writes before a run starts (its
    ``.hydra/`` folder and an empty log): left by a run refused at validation, or by a resume that
    continued in the original directory. Returns whether it was deleted."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return False
    for entry in run_dir.iterdir():
        if entry.name == ".hydra":
            continue
        if entry.is_file() and entry.suffix == ".log" and entry.stat().st_size == 0:
            continue
        return False
    shutil.rmtree(run_dir)
    runs = (Path.cwd() / "runs").resolve()
    for parent in run_dir.resolve().parents:  # runs/<env>/ left empty by the removal
        if parent == runs or runs not in parent.parents or any(parent.iterdir()):
            break
        parent.rmdir()
    return True
