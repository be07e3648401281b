"""A run's ``eval.csv`` (written by ``sac_tr.tracking.EvalCSV``, one row per evaluation) read
back: for resuming, reporting and plotting. Uses the standard library only.

The writer appends each row whole, ending in a newline, and a run evaluates before it
checkpoints. So a last line without its newline is a row being appended right now, or one whose
run was killed (or lost its machine) while appending it: later than the run's newest checkpoint.
The readers leave it out, saying so, and ``trim_eval_csv`` (on resume) drops it with the other
rows after the checkpoint. Any other line that is not one number per column (edited by hand, two
files joined) is refused with the file and the line named, rather than read as a shorter curve,
a crash elsewhere, or (for ``trim_eval_csv``) a cut ``frames`` value kept as an early evaluation."""

from __future__ import annotations

import csv
import io
import math
import os
import warnings
from pathlib import Path
from typing import NamedTuple

__all__ = [
    "EvalCSVError",
    "EvalFile",
    "last_eval_row",
    "read_eval_file",
    "read_eval_rows",
    "trim_eval_csv",
]


class EvalCSVError(ValueError):
    """An ``eval.csv`` that cannot be read as one row of numbers per evaluation; the message names
    the file, the line and what to do."""


class EvalFile(NamedTuple):
    """An ``eval.csv`` as read: its header, its complete rows (each checked) and its unfinished
    last line (``""`` when every line is complete)."""

    header: list[str]
    rows: list[list[str]]
    unfinished: str


def read_eval_file(path: str | os.PathLike) -> EvalFile:
    """Read and check ``path`` (an empty ``EvalFile`` when it does not exist); raises
    ``EvalCSVError`` naming the line for a header without ``frames`` or a complete line that is
    not one finite number per column."""
    path = Path(path)
    if not path.exists():
        return EvalFile([], [], "")
    try:
        text = path.read_text()
    except UnicodeDecodeError as err:
        raise EvalCSVError(
            f"{path} is not text ({err}): not an eval.csv, or damaged on disk. Restore it from a "
            "copy, or move it aside (moving it aside loses its curve)."
        ) from None
    complete, _, unfinished = text.rpartition("\n")  # "": every line ends in its newline
    reader = csv.reader(io.StringIO(complete + "\n" if complete else ""))
    try:
        header = next(reader, [])
        if header and "frames" not in header:
            raise EvalCSVError(
                f"{path}: the first line {','.join(header)!r} is not an eval.csv header (it has "
                "no 'frames' column). Give the run's own eval.csv, or move this file aside."
            )
        rows = []
        for row in reader:
            if not row:
                continue
            problem = _row_problem(header, row)
            if problem:
                raise EvalCSVError(
                    f"{path}, line {reader.line_num}: {problem} ({','.join(row)!r}). sac_tr "
                    "writes each row whole, so this line was changed after it was written "
                    "(edited, or files joined). Restore it from a copy of the file, or delete it "
                    "(its evaluation is then missing from the curve)."
                )
            rows.append(row)
    except csv.Error as err:  # e.g. a NUL byte on Python < 3.11
        raise EvalCSVError(
            f"{path}, line {reader.line_num}: {err}. Restore the file from a copy, or delete that line."
        ) from None
    return EvalFile(header, rows, unfinished)


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
    checkpoint evaluated once more, or was killed while appending a row; the resumed run evaluates
    those frames again). Returns the number of rows dropped, an unfinished line among them.
    Raises ``EvalCSVError`` for a damaged file, before changing it."""
    path = Path(path)
    header, body, unfinished = read_eval_file(path)
    if not header:
        return 0
    column = header.index("frames")
    keep = [row for row in body if int(float(row[column])) <= frames]
    dropped = len(body) - len(keep) + bool(unfinished)
    if dropped:
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("w", newline="") as f:
            csv.writer(f).writerows([header, *keep])
        os.replace(tmp, path)
    return dropped


def read_eval_rows(path: str | os.PathLike) -> list[dict[str, str]]:
    """The complete rows of an ``eval.csv`` as dicts (none when the file does not exist); an
    unfinished last line is left out with a warning. Raises ``EvalCSVError`` for a damaged file."""
    header, rows, unfinished = read_eval_file(path)
    if unfinished:
        warnings.warn(
            f"{path}: its last line {unfinished!r} is unfinished (its run is appending it, or was "
            "killed while appending it; a resume drops it); read without it.",
            stacklevel=2,
        )
    return [dict(zip(header, row, strict=True)) for row in rows]


def last_eval_row(path: str | os.PathLike) -> dict[str, str] | None:
    """The last complete row of an ``eval.csv`` as a dict, or ``None`` when there is none; raises
    ``EvalCSVError`` for a damaged file (``read_eval_rows``)."""
    rows = read_eval_rows(path)
    return rows[-1] if rows else None
