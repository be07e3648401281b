"""sac_tr: Soft Actor-Critic built from TorchRL components."""

from sac_tr.losses import SACv1Loss
from sac_tr.modules import make_actor, make_qvalue, make_value

__all__ = ["SACv1Loss", "make_actor", "make_qvalue", "make_value"]
__version__ = "0.1.0"
