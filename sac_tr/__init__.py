"""sac_tr: Soft Actor-Critic built from TorchRL components.

The names below are imported on first use (PEP 562), so that ``import sac_tr.eval_csv`` and the
other standard-library-only modules do not load torch: the suite's launcher stays small, and a
child's peak memory (``ru_maxrss``, which starts from the launcher's at fork) is the child's own.
"""

from __future__ import annotations

import importlib

__all__ = ["SACv1Loss", "make_actor", "make_qvalue", "make_value"]
__version__ = "0.1.0"

_HOMES = {
    "SACv1Loss": "sac_tr.losses",
    "make_actor": "sac_tr.modules",
    "make_qvalue": "sac_tr.modules",
    "make_value": "sac_tr.modules",
}


def __getattr__(name: str):
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'sac_tr' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOMES])
