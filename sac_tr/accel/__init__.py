"""The acceleration layer: fast evaluators installed on a loss only where they are proven to
compute what the network's own module computes (``accelerate``), and the collector's fast acting
policy (``accelerate_policy``). ``sac_tr.losses`` never imports it."""

from sac_tr.accel.checks import UnsupportedNetworkError
from sac_tr.accel.install import (
    MODES,
    AccelerationError,
    accelerate,
    accelerate_policy,
    check_mode,
)

__all__ = [
    "MODES",
    "AccelerationError",
    "UnsupportedNetworkError",
    "accelerate",
    "accelerate_policy",
    "check_mode",
]
