"""sac_tr: Soft Actor-Critic built from TorchRL components.

The names below, and the subpackages (``sac_tr.losses`` after ``import sac_tr``), are imported on
first use (PEP 562), so that ``import sac_tr.eval_csv`` and the other standard-library-only
modules do not load torch: the suite's launcher stays small, and a child's peak memory
(``ru_maxrss``, which carries the launcher's peak through fork and exec) is the child's own.
"""

from __future__ import annotations

import importlib as _importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the real names, for type checkers (``X as X``: a re-export)
    from sac_tr.losses import SACv1Loss as SACv1Loss
    from sac_tr.modules import make_actor as make_actor
    from sac_tr.modules import make_qvalue as make_qvalue
    from sac_tr.modules import make_value as make_value

_HOMES = {
    "SACv1Loss": "sac_tr.losses",
    "make_actor": "sac_tr.modules",
    "make_qvalue": "sac_tr.modules",
    "make_value": "sac_tr.modules",
}
__all__ = list(_HOMES)
__version__ = "0.1.0"


def __getattr__(name: str):
    if name in _HOMES:
        return getattr(_importlib.import_module(_HOMES[name]), name)
    try:  # a submodule, as an attribute of the package once imported
        return _importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as err:
        if err.name != f"{__name__}.{name}":  # the submodule exists but an import inside failed
            raise
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES})
