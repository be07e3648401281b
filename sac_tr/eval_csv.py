"""A run's ``eval.csv`` (written by ``sac_tr.tracking.EvalCSV``, one row per evaluation) read
back: for resuming, reporting and plotting. Uses the standard library only."""

from __future__ import annotations

import csv
import os
from pathlib import Path

__all__ = ["last_eval_row", "read_eval_rows", "trim_eval_csv"]


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
