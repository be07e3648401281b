"""A run's ``eval.csv`` (written by ``sac_tr.tracking.EvalCSV``, one row per evaluation) read
back: for resuming, reporting and plotting. Uses the standard library only.

The writer appends each row whole, ending in a newline, flushed to disk, and a run evaluates
before it checkpoints. So a last line without its newline is a row being appended right now, or
one whose run was killed while appending it. The readers leave it out, saying so
(``UnfinishedRowWarning``), and ``trim_eval_csv`` (on resume) drops it with the other rows after
the checkpoint, after checking that the rows it keeps are as many as the checkpoint counts. Any
other line that is not one number per column (edited by hand, files joined, a disk fault) is
refused with the file and the line named, rather than read as a shorter curve, a crash
elsewhere, or (for ``trim_eval_csv``) a cut ``frames`` value kept as an early evaluation."""

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
    "UnfinishedRowWarning",
    "check_counted",
    "last_eval_row",
    "read_eval_file",
    "read_eval_rows",
    "trim_eval_csv",
    "write_eval_file",
]


class EvalCSVError(ValueError):
    """An ``eval.csv`` that cannot be read as one row of numbers per evaluation; the message names
    the file, the line and what to do."""


class UnfinishedRowWarning(UserWarning):
    """An ``eval.csv`` read without its last line, which has no newline yet."""


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
    # Undecodable bytes become U+FFFD: on a complete line they fail the check below and are named.
    text = path.read_text(encoding="utf-8-sig", errors="replace")
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
                    f"{path}, line {reader.line_num}: {problem} ({','.join(row)[:80]!r}). "
                    "sac_tr writes each row whole, so this line was changed after it was written "
                    "(edited, files joined, a disk fault), or it is a row cut by a kill that a "
                    "resume by sac_tr before 2026-12-01 kept. Restore it from a copy of the file, "
                    "or delete a cut row (a resume checks that every evaluation up to its "
                    "checkpoint is there)."
                )
            rows.append(row)
    except csv.Error as err:  # e.g. a NUL byte on Python < 3.11
        raise EvalCSVError(
            f"{path}, line {reader.line_num}: {err}. Restore the file from a copy."
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


def write_eval_file(path: str | os.PathLike, header: list[str], rows: list[list[str]]) -> None:
    """Write ``header`` and ``rows`` to ``path`` through a temporary file and a rename, both
    flushed to disk."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as f:
        csv.writer(f).writerows([header, *rows])
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    folder = os.open(path.parent, os.O_RDONLY)  # the rename, on disk too
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def check_counted(path: str | os.PathLike, frames: int, evaluations: int | None) -> EvalFile:
    """Read ``path`` (``read_eval_file``) and check that its rows up to ``frames`` are the
    ``evaluations`` a checkpoint at ``frames`` counts (``None``: a checkpoint that does not count
    them, nothing to check). A file that lost rows (a machine that lost power before they reached
    the disk) or gained some is refused, as is an unfinished last line that is one of the counted
    evaluations; raises ``EvalCSVError``."""
    path = Path(path)
    read = read_eval_file(path)
    column = read.header.index("frames") if read.header else 0
    kept = sum(int(float(row[column])) <= frames for row in read.rows)
    if evaluations is None or kept == evaluations:
        return read
    cut_frames = read.unfinished.split(",")[0]
    if (
        kept == evaluations - 1
        and read.unfinished
        and not (
            cut_frames.isdigit() and int(cut_frames) > frames  # a row after the checkpoint
        )
    ):
        raise EvalCSVError(
            f"{path}: its last line {read.unfinished[:60]!r} has no newline, but it is the "
            f"evaluation number {evaluations} that the checkpoint at {frames:,} frames counts. "
            "If the line is whole, end it with a newline; if not, restore the file from a copy."
        )
    raise EvalCSVError(
        f"{path} {'holds' if path.exists() else 'is missing: it would hold'} {kept} "
        f"evaluation(s) up to {frames:,} frames, but the checkpoint there counts {evaluations}: "
        "rows were lost (a machine that lost power before they reached the disk) or added (an "
        "edit, files joined, or a newer checkpoint left behind by a resume=PATH from an older one "
        "before sac_tr set those aside). Restore the file from a copy, or resume from the "
        "checkpoint the curve belongs to (resume=PATH sets the newer ones aside)."
    )


def trim_eval_csv(path: str | os.PathLike, frames: int, evaluations: int | None) -> int:
    """Drop the rows of ``eval.csv`` written after ``frames`` (a run killed after its last
    checkpoint evaluated once more, or was killed while appending a row; the resumed run evaluates
    those frames again). Returns the number of rows dropped, an unfinished line among them.
    ``evaluations``: what the checkpoint at ``frames`` counts, checked first (``check_counted``;
    ``None``, a checkpoint that does not count them: not checked).
    Raises ``EvalCSVError`` for a damaged file, before changing it."""
    header, body, unfinished = check_counted(path, frames, evaluations)
    if not header:
        return 0
    column = header.index("frames")
    keep = [row for row in body if int(float(row[column])) <= frames]
    dropped = len(body) - len(keep) + bool(unfinished)
    if dropped:
        write_eval_file(path, header, keep)
    return dropped


def _rows(path: str | os.PathLike) -> list[dict[str, str]]:
    header, rows, unfinished = read_eval_file(path)
    if unfinished:
        warnings.warn(
            f"{path}: its last line {unfinished[:40]!r} is unfinished (its run is appending it, "
            "or was killed while appending it; a resume drops it); read without it.",
            UnfinishedRowWarning,
            stacklevel=3,  # the caller of read_eval_rows / last_eval_row
        )
    return [dict(zip(header, row, strict=True)) for row in rows]


def read_eval_rows(path: str | os.PathLike) -> list[dict[str, str]]:
    """The complete rows of an ``eval.csv`` as dicts (none when the file does not exist); an
    unfinished last line is left out with an ``UnfinishedRowWarning``. Raises ``EvalCSVError``
    for a damaged file."""
    return _rows(path)


def last_eval_row(path: str | os.PathLike) -> dict[str, str] | None:
    """The last complete row of an ``eval.csv`` as a dict, or ``None`` when there is none; raises
    ``EvalCSVError`` for a damaged file (``read_eval_rows``)."""
    rows = _rows(path)
    return rows[-1] if rows else None
