"""A user's own actor builder and loss class, plugged in by import path (tests/test_variants.py)."""

from sac_tr.losses import SACv1Loss
from sac_tr.modules import make_actor


def make_narrow_actor(action_spec, observation_dim, *, hidden_sizes, activation, width=16):
    """A user's actor: the library's squashed Gaussian with one hidden layer of ``width``."""
    return make_actor(action_spec, observation_dim, hidden_sizes=(width,), activation=activation)


class DoubledActorLoss(SACv1Loss):
    """A user's loss: SAC-v1 with the actor loss counted twice (to see that it is this one)."""

    def forward(self, tensordict):
        out = super().forward(tensordict)
        out.set("loss_actor", 2 * out.get("loss_actor"))
        return out
