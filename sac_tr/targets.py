"""Target-network updaters: TorchRL's SoftUpdate and HardUpdate, configured as the paper means them."""

from __future__ import annotations

from typing import Literal

import torch
from torchrl.objectives import HardUpdate, LossModule, SoftUpdate
from torchrl.objectives.utils import TargetNetUpdater

__all__ = ["BatchedSoftUpdate", "make_target_updater"]


class BatchedSoftUpdate(SoftUpdate):
    """TorchRL's ``SoftUpdate`` with its arithmetic in one call: ``psibar <- psibar + tau (psi -
    psibar)`` for every target tensor at once (``torch._foreach_lerp_``).

    ``SoftUpdate.step`` walks the source and target TensorDicts on every call, which costs more
    than the arithmetic itself at SAC's sizes. Here the pairs of tensors are listed once, at the
    first ``step()``, and reused: they are the loss's own parameter storages, which optimizers,
    ``load_state_dict`` and this updater all change in place. (Build the updater after moving
    the loss to its device, as ``SACAgent`` does.) Everything else, including which targets
    exist and their initial copy, is TorchRL's.
    """

    def step(self, moved: torch.Tensor | None = None) -> None:
        """``psibar <- psibar + tau (psi - psibar)``; with ``moved`` (a 0-dim 0./1. tensor on the
        parameters' device, 0. when the optimizer skipped the step) the weight is ``tau * moved``,
        so a skipped step leaves the targets as they were, with no host read."""
        if not self.initialized:
            raise RuntimeError("BatchedSoftUpdate must be initialized (init_()) before step().")
        pairs = self.__dict__.get("_batched_pairs")
        if pairs is None:
            keys = list(self._sources.keys(True, True))
            pairs = self.__dict__["_batched_pairs"] = (
                [self._sources.get(key).data for key in keys],
                [self._targets.get(("target_" + key[0], *key[1:])).data for key in keys],
            )
        sources, targets = pairs
        if moved is None:
            torch._foreach_lerp_(targets, sources, 1 - self.eps)
        else:  # the scalar's float32 weight, times 1 or 0 (a kernel argument, no copy)
            weight = moved * (1 - self.eps)
            torch._foreach_lerp_(targets, sources, [weight] * len(targets))


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
        return BatchedSoftUpdate(loss, tau=tau)
    if kind == "hard":
        if not isinstance(hard_update_every, int) or hard_update_every < 1:
            raise ValueError(
                f"hard_update_every must be a positive integer, got {hard_update_every!r} (the paper uses 1000)."
            )
        return HardUpdate(loss, value_network_update_interval=hard_update_every - 1)
    raise ValueError(f"Unknown target update kind {kind!r}: use 'soft' or 'hard'.")
