"""SAC losses, each a ``torchrl.objectives.LossModule``."""

from sac_tr.losses.sac_deterministic import DeterministicSACLoss
from sac_tr.losses.sac_v1 import SACv1Loss
from sac_tr.losses.sac_v2 import SACv2Loss

__all__ = ["DeterministicSACLoss", "SACv1Loss", "SACv2Loss"]
