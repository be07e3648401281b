"""Stop a training run cleanly on SIGINT (Ctrl-C), SIGTERM (a cluster's pre-emption), SIGUSR2
(submitit's warning before a SLURM time limit) or SIGHUP (its terminal closed), then hand the
signal on to whoever was listening; ``say`` prints what a stopped run reports, even with its
terminal gone."""

from __future__ import annotations

import errno
import os
import signal
import threading
from types import FrameType

__all__ = ["StopOnSignal", "forward_signal", "say"]


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
        if err.errno not in (errno.EIO, errno.EPIPE):
            raise
        devnull = os.open(os.devnull, os.O_WRONLY)
        for fd in (1, 2):
            os.dup2(devnull, fd)
        os.close(devnull)
