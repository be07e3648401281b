"""Stop a training run cleanly on SIGINT (Ctrl-C), SIGTERM (a cluster's pre-emption), SIGUSR2
(submitit's warning before a SLURM time limit) or SIGHUP (its terminal closed), then hand the
signal on to whoever was listening; ``say`` prints what a stopped run reports, even with its
terminal gone, and ``outlive_lost_output`` keeps a run training when whoever read its output
went away (``| less`` quit, ``| tee`` killed)."""

from __future__ import annotations

import errno
import logging
import os
import signal
import stat
import sys
import threading
from collections.abc import Iterable
from types import FrameType
from typing import TextIO

__all__ = ["StopOnSignal", "forward_signal", "outlive_lost_output", "say"]

_GONE = (errno.EIO, errno.EPIPE)  # a closed terminal answers EIO; a pipe without a reader, EPIPE


class StopOnSignal:
    """Within ``with StopOnSignal() as stop:``, SIGINT and SIGTERM set ``stop.signum`` instead of
    killing the process, so the loop can finish its step, save, and exit. A second Ctrl-C while
    a stop is pending raises ``KeyboardInterrupt`` at once. Outside the main thread (where Python
    cannot install handlers) it does nothing. SIGUSR2 is what submitit sends before a SLURM job's
    time limit: the run checkpoints first, then ``forward_signal`` lets submitit requeue the job.
    SIGHUP (the terminal the run was started from closed) stops it the same way, unless the
    process ignores SIGHUP (started under ``nohup``), when it goes on as asked."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR2, signal.SIGHUP)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else ""

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                if sig == signal.SIGHUP and signal.getsignal(sig) == signal.SIG_IGN:
                    continue  # nohup: the user asked the run to outlive its terminal
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc_info) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def forward_signal(name: str) -> bool:
    """After a run stopped on signal ``name`` has checkpointed, call the handler that was installed
    before the run for it, if that is a Python function (submitit's on SLURM, which requeues the
    job: the requeued job continues with ``resume=auto``). Returns whether one was called."""
    signum = signal.Signals[name]
    handler = signal.getsignal(signum)
    if not callable(handler) or handler is signal.default_int_handler:
        return False
    handler(signum, None)
    return True


def say(text: str) -> None:
    """Print ``text``. When the terminal is gone (the SIGHUP case: a closed terminal answers
    EIO; a pipe whose reader went with it, EPIPE), point this process's stdout and stderr at
    ``/dev/null``: neither this line nor any output still buffered (Python exits with 120 when
    it cannot flush it) turns a run that stopped cleanly into an error exit. Any other error (a
    full disk, or a disk error, under a redirected log) is raised."""
    try:
        print(text, flush=True)
    except OSError as err:
        if not _reader_gone(err, 1):
            raise
        _to_devnull(1, 2)


def _reader_gone(err: OSError, fd: int) -> bool:
    """Whether ``err``, from writing to ``fd``, means that no one reads it any more: EIO from a
    terminal or EPIPE from a pipe; not an error of a file the output is redirected to."""
    try:
        regular = stat.S_ISREG(os.fstat(fd).st_mode)
    except OSError:
        regular = False
    return err.errno in _GONE and not regular


def _to_devnull(*fds: int) -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    for fd in fds:
        os.dup2(devnull, fd)
    os.close(devnull)


class _OutlivingStream:
    """``sys.stdout`` or ``sys.stderr`` for a long run: when a write or flush finds its reader
    gone (``_reader_gone``), its file descriptor is pointed at ``/dev/null`` and the output is
    dropped from then on, instead of the error ending the run between two checkpoints.
    Everything else is the wrapped stream's."""

    def __init__(self, stream: TextIO, fd: int) -> None:
        self._stream, self._fd = stream, fd

    def _outlive(self, method: str, *args: object) -> object:
        try:
            return getattr(self._stream, method)(*args)
        except OSError as err:
            if not _reader_gone(err, self._fd):
                raise
            _to_devnull(self._fd)
        try:  # what the stream still buffers now goes to /dev/null
            return getattr(self._stream, method)(*args)
        except OSError:
            return None

    def write(self, text: str) -> int:
        written = self._outlive("write", text)
        return written if isinstance(written, int) else len(text)

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        self._outlive("flush")

    def __getattr__(self, name: str) -> object:
        return getattr(self._stream, name)


def outlive_lost_output() -> None:
    """Keep this process running when its stdout's or stderr's reader goes away (``| less``
    quit, ``| tee`` killed, a log pipe closed): what it would have printed there is lost (the
    results are in eval.csv and the checkpoints) rather than the next progress line raising
    ``BrokenPipeError`` and losing what was learned since the last checkpoint. The logging
    handlers already writing to those streams (hydra's console, torchrl's) write through the
    wrapped ones too, so that ``logging_redirect_tqdm`` still knows them for console handlers.
    A closed terminal sends SIGHUP, which stops the run with a checkpoint (``StopOnSignal``)."""
    wrapped: dict[int, _OutlivingStream] = {}
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is None or isinstance(stream, _OutlivingStream):
            continue
        try:
            fd = stream.fileno()
        except (AttributeError, OSError, ValueError):  # not a file (a test's capture): as it is
            continue
        setattr(sys, name, _OutlivingStream(stream, fd))
        wrapped[id(stream)] = getattr(sys, name)
    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    for logger in loggers:
        for handler in getattr(logger, "handlers", ()):
            if isinstance(handler, logging.StreamHandler) and id(handler.stream) in wrapped:
                handler.setStream(wrapped[id(handler.stream)])
