"""A run's ``eval.csv`` (written by ``sac_tr.tracking.EvalCSV``, one row per evaluation) read
back: for resuming, reporting and plotting. Uses the standard library only.

The writer appends each row whole, ending in a newline, flushed to disk, and a run evaluates
before it checkpoints. So a last line without its newline is a row being appended right now, or
one whose run was killed while appending it. The readers leave it out, saying so
(``UnfinishedRowWarning``); ``trim_eval_csv`` (on resume) drops it with the other rows after the
checkpoint, unless the checkpoint counts it, and checks the rows it keeps against the
evaluations the checkpoint counts. Any
other line that is not one number per column, or whose ``frames`` is not after the previous
row's (edited by hand, files joined, a disk fault), is refused with the file and the line named,
rather than read as a shorter curve, a crash elsewhere, or (for ``trim_eval_csv``) a cut
``frames`` value kept as an early evaluation."""

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
    "Trimmed",
    "UnfinishedRowWarning",
    "check_counted",
    "counted_rows",
    "fsync_path",
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
    ``EvalCSVError`` naming the line for a header without ``frames``, a complete line that is
    not one number per column (``frames`` a whole number), or one whose ``frames`` is not after
    the previous row's."""
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
        rows: list[list[str]] = []
        for row in reader:
            if not row:
                continue
            problem = _row_problem(header, row)
            if not problem and rows:
                previous, now = (int(float(r[header.index("frames")])) for r in (rows[-1], row))
                if now <= previous:
                    problem = f"frames {now} is not after the previous row's {previous}"
            if problem:
                raise EvalCSVError(
                    f"{path}, line {reader.line_num}: {problem} ({','.join(row)[:80]!r}). "
                    "sac_tr writes each row whole and in order, so this line was changed after "
                    "it was written (edited, files joined, a disk fault), or it is a row cut by a "
                    "kill that a resume by sac_tr before 2026-12-01 kept. Restore it from a copy "
                    "of the file, or delete it if it is the one bad line (a resume then reports the "
                    "gap)."
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
        return f"{len(row)} value(s) where the header (line 1) has {len(header)} columns"
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
    fsync_path(path.parent)  # the rename, on disk too


def fsync_path(path: str | os.PathLike) -> None:
    """Flush a file, or a folder's entries (a rename in it), to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Trimmed(NamedTuple):
    """What ``trim_eval_csv`` did (``check_counted``: would do) to a curve on resume."""

    dropped: int  # complete rows after the checkpoint: made again
    missing: int  # evaluations the checkpoint counts that the file lacks: a gap in the curve
    completed: bool  # an unfinished last line, whole as far as it can tell, counted: kept
    cut: bool  # an unfinished last line that is not kept: dropped


def _plan(
    path: Path, frames: int, evaluations: int | None, evaluated_at: int | None = None
) -> tuple[list[str], list[list[str]], Trimmed]:
    """The header, the rows to keep, and what keeping them does (see ``trim_eval_csv``)."""
    header, body, unfinished = read_eval_file(path)
    column = header.index("frames") if header else 0
    # A checkpoint evaluates before it saves: no row of it lies after its last evaluation.
    frames = frames if evaluated_at is None else evaluated_at
    keep = [row for row in body if int(float(row[column])) <= frames]
    completed = False
    if unfinished and header and (evaluations is None or len(keep) < evaluations):
        try:  # the checkpoint counts it (or cannot say): is it whole but for its newline?
            row = next(csv.reader([unfinished]))
        except csv.Error:  # e.g. NUL bytes on Python < 3.11
            row = []
        last = int(float(body[-1][column])) if body else -1  # and after every complete row
        completed = not _row_problem(header, row) and last < int(float(row[column])) <= frames
        keep += [row] if completed else []
    missing = 0 if evaluations is None else evaluations - len(keep)
    if missing < 0:
        raise EvalCSVError(
            f"{path} holds {len(keep)} evaluation(s) up to {frames:,} frames, but the checkpoint "
            f"there counts {evaluations}: rows from another run are in it (files joined). Restore "
            "the file from a copy, or delete the rows that are not this run's."
        )
    dropped = len(body) - (len(keep) - completed)
    return (
        header,
        keep,
        Trimmed(dropped, missing, completed, bool(unfinished and header) and not completed),
    )


def check_counted(path: str | os.PathLike, frames: int, evaluations: int | None) -> Trimmed:
    """What ``trim_eval_csv(path, frames, evaluations)`` would do, without doing it: the checks
    a resume makes before it builds anything. Raises ``EvalCSVError`` as it does."""
    return counted_rows(path, frames, evaluations)[1]


def counted_rows(
    path: str | os.PathLike, frames: int, evaluations: int | None, evaluated_at: int | None = None
) -> tuple[list[dict[str, str]], Trimmed]:
    """The rows ``trim_eval_csv(path, frames, evaluations, evaluated_at)`` would keep, as dicts
    (an unfinished last line it would keep among them), and what it would do, without changing
    the file. Raises ``EvalCSVError`` as it does."""
    header, keep, done = _plan(Path(path), frames, evaluations, evaluated_at)
    return [dict(zip(header, row, strict=True)) for row in keep], done


def trim_eval_csv(
    path: str | os.PathLike, frames: int, evaluations: int | None, evaluated_at: int | None = None
) -> Trimmed:
    """Drop the rows of ``eval.csv`` written after ``frames`` (a run killed after its last
    checkpoint evaluated once more, or was killed while appending a row; the resumed run evaluates
    those frames again).

    ``evaluations`` is the number of evaluations the checkpoint at ``frames`` counts (``None``: a
    checkpoint that does not count them, nothing checked). An unfinished last line at or before
    the checkpoint that it counts, and whole as far as can be told (a value cut inside its last
    field cannot be told), is kept; rows it counts that the file lacks (a machine that
    lost power before they reached the disk, or deleted by hand) are reported as ``missing``, a
    gap the caller says; more rows than it counts (two curves joined) raise ``EvalCSVError``, as
    does a damaged file, before anything is changed. ``evaluated_at``, the frames of the
    checkpoint's last evaluation (-1: none; ``None``: not recorded, before 2026-12-03), drops the
    rows after it too: a checkpoint that a fault stop wrote before an evaluation due at its
    frames counts none there, so a row there was made after it (``train.evaluation_due``)."""
    path = Path(path)
    header, keep, done = _plan(path, frames, evaluations, evaluated_at)
    if header and (done.dropped or done.completed or done.cut):
        write_eval_file(path, header, keep)
    return done


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
