"""A run's ``eval.csv`` (written by ``sac_tr.tracking.EvalCSV``, one row per evaluation) read
back: for resuming, reporting and plotting. Uses the standard library only.

Every reader checks each row: a line cut short (a machine that lost power while a row was being
written, a disk that filled up) or edited by hand is refused with the file and the line named,
rather than read as a shorter curve, a crash elsewhere, or (for ``trim_eval_csv``) a row whose
truncated ``frames`` value looks like an early evaluation and is kept."""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

__all__ = ["EvalCSVError", "last_eval_row", "read_eval_rows", "trim_eval_csv"]


class EvalCSVError(ValueError):
    """An ``eval.csv`` that cannot be read as one row of numbers per evaluation; the message names
    the file, the line and what to do."""


def _read(path: Path) -> tuple[list[str], list[list[str]]]:
    """The header and the rows of ``path`` (blank lines skipped), each row checked to hold one
    finite number per column of the header, and the header to have a ``frames`` column."""
    with path.open(newline="") as f:
        reader = csv.reader(f)
        header = next(reader, [])
        rows = []
        for row in reader:
            if not row:
                continue
            problem = _row_problem(header, row)
            if problem:
                raise EvalCSVError(
                    f"{path}, line {reader.line_num}: {problem} ({','.join(row)!r}). A line cut "
                    "short is what a run killed while writing it leaves. Delete that line (a "
                    "resumed run evaluates again from its checkpoint), or move the file aside."
                )
            rows.append(row)
    if (header or rows) and "frames" not in header:
        raise EvalCSVError(
            f"{path}: the first line {','.join(header)!r} is not an eval.csv header (it has no "
            "'frames' column). Move the file aside; sac_tr writes a new one."
        )
    return header, rows


def _row_problem(header: list[str], row: list[str]) -> str:
    """Why ``row`` is not an evaluation under ``header``, or ``""`` when it is one."""
    if len(row) != len(header):
        return f"{len(row)} value(s) where the header has {len(header)} columns"
    for name, value in zip(header, row, strict=True):
        try:
            number = float(value)
        except ValueError:
            return f"{name}={value!r} is not a number"
        if name == "frames" and not (math.isfinite(number) and number == int(number)):
            return f"frames={value!r} is not a whole number"
    return ""


def trim_eval_csv(path: str | os.PathLike, frames: int) -> int:
    """Drop the rows of ``eval.csv`` written after ``frames`` (a run killed after its last
    checkpoint evaluated once more; the resumed run evaluates those frames again). Returns the
    number of rows dropped. Raises ``EvalCSVError`` for a damaged file, before changing it."""
    path = Path(path)
    if not path.exists():
        return 0
    header, body = _read(path)
    if not header:
        return 0
    column = header.index("frames")
    keep = [row for row in body if int(float(row[column])) <= frames]
    if len(keep) < len(body):
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("w", newline="") as f:
            csv.writer(f).writerows([header, *keep])
        os.replace(tmp, path)
    return len(body) - len(keep)


def read_eval_rows(path: str | os.PathLike) -> list[dict[str, str]]:
    """The rows of an ``eval.csv`` as dicts (none when the file does not exist). Raises
    ``EvalCSVError`` for a damaged file."""
    path = Path(path)
    if not path.exists():
        return []
    header, rows = _read(path)
    return [dict(zip(header, row, strict=True)) for row in rows]


def last_eval_row(path: str | os.PathLike) -> dict[str, str] | None:
    """The last row of an ``eval.csv`` as a dict, or ``None`` when there is none."""
    rows = read_eval_rows(path)
    return rows[-1] if rows else None
