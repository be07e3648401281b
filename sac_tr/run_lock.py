"""One process per run directory: a second launch into a directory another run is training in
(the same sweep started twice, a requeued job whose first copy still runs, two sweep jobs that map
to one directory) is refused with the holder's pid, instead of two runs writing one ``eval.csv``
and one set of checkpoints.

The lock is ``fcntl.flock`` on ``<run_dir>/.sac_tr.lock``: the kernel releases it when the holder
exits, however it exits, so a killed run leaves no stale lock behind. (The suite's launcher,
``benchmarks/learning.py``, holds its own ``.lock`` in the same directory while its child process
trains there: one file for both would make the child refuse its own launcher.)"""

from __future__ import annotations

import errno
import json
import os
import socket
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from sac_tr.config import ConfigError

LOCK_NAME = ".sac_tr.lock"

try:
    import fcntl
except ImportError:  # not POSIX: no lock
    fcntl = None  # type: ignore[assignment]

_HELD = (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)
_ATTEMPTS = 5  # 0.2 s of retries before a launch is refused as held


class RunDirInUseError(ConfigError):
    """Another process holds the run directory (see ``hold_run_dir``): ``run_dir``, and the
    ``record`` its holder keeps in the lock file."""

    def __init__(self, message: str, run_dir: Path, record: dict[str, str]) -> None:
        super().__init__(message)
        self.run_dir, self.record = run_dir, record


@contextmanager
def hold_run_dir(
    run_dir: str | os.PathLike, record: Mapping[str, str] | None = None
) -> Iterator[None]:
    """Hold ``run_dir`` for this process while the block runs; raise ``RunDirInUseError``
    (naming the holder's pid, host and start time) when another process holds it.

    ``record`` (the holder's ``.hydra/`` files, name to text) is kept in the lock file, so that
    a launch refused here can put back the record its hydra wrote over the holder's.

    A directory made here for the lock and left holding nothing else is removed on leaving. On a
    file system that cannot lock (``ENOLCK`` on some network mounts) the run goes on unlocked,
    and says so on stderr."""
    run_dir = Path(run_dir)
    made = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if _lock(fd, run_dir):
            holder = f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%F %T')}"
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{holder}\n{json.dumps(dict(record or {}))}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the file releases the lock
        if made and [p.name for p in run_dir.iterdir()] == [LOCK_NAME]:
            (run_dir / LOCK_NAME).unlink()
            run_dir.rmdir()


def _lock(fd: int, run_dir: Path) -> bool:
    """Take the lock on ``fd``; False where the file system has none to take."""
    if fcntl is None:
        return False
    for _ in range(_ATTEMPTS):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError as err:
            error = err
        if error.errno not in _HELD:
            break
        time.sleep(0.05)  # a holder_record() check holds it shared for a moment only
    if error.errno in _HELD:
        holder, kept = _holder(fd)
        raise RunDirInUseError(_in_use_message(run_dir, holder), run_dir, kept) from None
    print(
        f"Note: {run_dir} cannot be locked ({os.strerror(error.errno)}): nothing stops a second "
        "launch from training in this directory at the same time.",
        file=sys.stderr,
    )
    return False


def holder_record(run_dir: str | os.PathLike) -> dict[str, str] | None:
    """The ``.hydra/`` record kept by the process holding ``run_dir`` (``hold_run_dir``), or
    ``None`` when no other process holds it; reads only (call it where this process does not
    hold ``run_dir``: its own lock would read as another's)."""
    try:
        fd = os.open(Path(run_dir) / LOCK_NAME, os.O_RDONLY)
    except OSError:  # no lock file: never held
        return None
    try:
        if fcntl is None:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # granted unless a holder has it
        except OSError as err:
            return _holder(fd)[1] if err.errno in _HELD else None
        return None
    finally:
        os.close(fd)  # and the shared lock taken, if any


def _holder(fd: int) -> tuple[str, dict[str, str]]:
    """The holder's line and its kept record, from the lock file open at ``fd``."""
    holder, _, record = _read(fd).partition("\n")
    try:
        kept = json.loads(record) if record.strip() else {}
    except ValueError:  # written by an older sac_tr, or mid-write
        kept = {}
    return holder, kept


def _read(fd: int) -> str:
    chunks = []
    while chunk := os.pread(fd, 1 << 16, sum(map(len, chunks))):
        chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


def _in_use_message(run_dir: Path, holder: str) -> str:
    who = holder.strip() or "pid unknown"
    return (
        f"{run_dir} is in use: another sac_tr process is training there ({who}). Two runs in one "
        "directory would write one eval.csv and one set of checkpoints. Wait for it to finish (the "
        "same command then continues the run, or reports it finished), stop it (Ctrl-C, or "
        "kill -TERM <pid>: it checkpoints first), or give this run another directory."
    )
