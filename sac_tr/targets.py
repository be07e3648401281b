"""Target-network updaters: TorchRL's SoftUpdate and HardUpdate, configured as the paper means them."""

from __future__ import annotations

from typing import Literal

from torchrl.objectives import HardUpdate, LossModule, SoftUpdate
from torchrl.objectives.utils import TargetNetUpdater

__all__ = ["make_target_updater"]


def make_target_updater(
    loss: LossModule,
    kind: Literal["soft", "hard"] = "soft",
    *,
    tau: float = 0.005,
    hard_update_every: int = 1000,
) -> TargetNetUpdater:
    """Build the updater that moves the loss's target parameters after each gradient step.

    ``soft``: psibar <- tau psi + (1 - tau) psibar every step (the paper's default, tau = 0.005).
    ``hard``: psibar <- psi once every ``hard_update_every`` steps (the paper's Figure 3 ablation).

    TorchRL's ``HardUpdate(value_network_update_interval=n)`` copies on the (n+1)-th call of
    ``step()`` and every n+1 calls after that (its counter starts at 0 and copies when it
    reaches n), so it is given ``hard_update_every - 1`` here to copy every N steps exactly.
    """
    if kind == "soft":
        if not 0.0 < tau <= 1.0:
            raise ValueError(f"tau must be in (0, 1], got {tau!r} (the paper uses 0.005).")
        return SoftUpdate(loss, tau=tau)
    if kind == "hard":
        if not isinstance(hard_update_every, int) or hard_update_every < 1:
            raise ValueError(
                f"hard_update_every must be a positive integer, got {hard_update_every!r} (the paper uses 1000)."
            )
        return HardUpdate(loss, value_network_update_interval=hard_update_every - 1)
    raise ValueError(f"Unknown target update kind {kind!r}: use 'soft' or 'hard'.")
