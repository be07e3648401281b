"""How a hydra recipe ends a job it refuses (bad input, a run directory another process holds):
exit status 2 when it runs alone, an exception when it is one job of a multirun sweep."""

from __future__ import annotations

import sys
from typing import NoReturn

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

__all__ = ["JobRefusedError", "refuse"]


class JobRefusedError(Exception):
    """A sweep job refused before it trained; its reason is already printed.

    Hydra's launchers record an exception as that one job's failure and run the sweep's other
    jobs on, then raise the first one when they have ended (the sweep exits 1; under submitit
    the refused job's own process ends normally, so SLURM shows it COMPLETED: read its log). A
    ``SystemExit`` instead escapes them: under the joblib launcher it ends the whole sweep,
    killing the jobs running beside it, which lose what they learned since their last
    checkpoint."""


def refuse(prog: str, reason: object) -> NoReturn:
    """Print ``prog: reason`` on stderr, then end this job: ``sys.exit(2)`` for a single run,
    ``JobRefusedError`` in a multirun (see there)."""
    print(f"{prog}: {reason}", file=sys.stderr)
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        raise JobRefusedError(f"{prog}: {reason}") from None  # the reason says it all
    sys.exit(2)
