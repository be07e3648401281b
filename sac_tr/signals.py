"""Stop a training run cleanly on SIGINT (Ctrl-C), SIGTERM (a cluster's pre-emption), SIGUSR2
(submitit's warning before a SLURM time limit) or SIGHUP (its terminal closed), then hand the
signal on to whoever was listening; ``say`` prints what a stopped run reports, even with its
terminal gone, and ``outlive_lost_output`` keeps a run training when whoever read its output
went away (``| less`` quit, ``| tee`` killed)."""

from __future__ import annotations

import errno
import os
import signal
import sys
import threading
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
    full disk under a redirected log) is raised."""
    try:
        print(text, flush=True)
    except OSError as err:
        if err.errno not in _GONE:
            raise
        _to_devnull(1, 2)


def _to_devnull(*fds: int) -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    for fd in fds:
        os.dup2(devnull, fd)
    os.close(devnull)


class _OutlivingStream:
    """``sys.stdout`` or ``sys.stderr`` for a long run: when a write or flush finds its reader
    gone (EIO, EPIPE), its file descriptor is pointed at ``/dev/null`` and the output is dropped
    from then on, instead of the error ending the run between two checkpoints. Everything else
    is the wrapped stream's."""

    def __init__(self, stream: TextIO, fd: int) -> None:
        self._stream, self._fd = stream, fd

    def _outlive(self, method: str, *args: object) -> object:
        try:
            return getattr(self._stream, method)(*args)
        except OSError as err:
            if err.errno not in _GONE:
                raise
            _to_devnull(self._fd)
        try:  # what the stream still buffers now goes to /dev/null
            return getattr(self._stream, method)(*args)
        except OSError:
            return None

    def write(self, text: str) -> int:
        written = self._outlive("write", text)
        return written if isinstance(written, int) else len(text)

    def flush(self) -> None:
        self._outlive("flush")

    def __getattr__(self, name: str) -> object:
        return getattr(self._stream, name)


def outlive_lost_output() -> None:
    """Keep this process running when its stdout's or stderr's reader goes away (``| less``
    quit, ``| tee`` killed, a log pipe closed): that stream's output is dropped from then on
    (hydra's log file keeps the log) rather than the next progress line raising
    ``BrokenPipeError`` and losing what was learned since the last checkpoint. A closed
    terminal sends SIGHUP, which stops the run with a checkpoint (``StopOnSignal``)."""
    for name, fd in (("stdout", 1), ("stderr", 2)):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, _OutlivingStream):
            setattr(sys, name, _OutlivingStream(stream, fd))
