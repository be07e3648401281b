"""Stop a training run cleanly on SIGINT (Ctrl-C) or SIGTERM (a cluster's pre-emption)."""

from __future__ import annotations

import signal
import threading
from types import FrameType

__all__ = ["StopOnSignal"]


class StopOnSignal:
    """Within ``with StopOnSignal() as stop:``, SIGINT and SIGTERM set ``stop.signum`` instead of
    killing the process, so the loop can finish its step, save, and exit. A second Ctrl-C while
    a stop is pending raises ``KeyboardInterrupt`` at once. Outside the main thread (where Python
    cannot install handlers) it does nothing."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

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
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc_info) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
