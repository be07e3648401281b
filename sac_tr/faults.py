"""Numerical faults: detect NaN/inf in incoming transitions, losses and parameters, and say
where they came from; and a gymnasium wrapper that injects such faults, to test a setup."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from tensordict import TensorDictBase
from torch import nn

__all__ = [
    "NonFiniteError",
    "NonFiniteInjector",
    "all_finite",
    "batch_statistics",
    "first_nonfinite_loss",
    "loss_finite_flags",
    "nonfinite_parameters",
    "nonfinite_rows",
]


class NonFiniteError(FloatingPointError):
    """NaN or inf in the data, a loss or a parameter; the message says which, at which frame,
    with the batch's statistics, and where the last good checkpoint is."""


def all_finite(tensors: list[torch.Tensor]) -> bool:
    """Quick test that ``tensors`` hold no NaN/inf: one reduction for all of them (a NaN or inf
    makes its tensor's norm non-finite). ``False`` can also mean a norm overflowed on huge finite
    values, so a caller that gets ``False`` looks element by element before reporting anything."""
    return not tensors or bool(torch.stack(torch._foreach_norm(tensors)).isfinite().all())


def nonfinite_rows(batch: TensorDictBase, keys: Iterable[Any]) -> tuple[torch.Tensor, list]:
    """A ``[N]`` mask of the transitions holding NaN/inf in any of ``keys`` (present ones), and
    the keys that do."""
    bad = torch.zeros(batch.shape[0], dtype=torch.bool, device=batch.device)
    culprits = []
    values = {key: batch.get(key, None) for key in keys}
    values = {k: v for k, v in values.items() if v is not None and v.is_floating_point()}
    if all_finite(list(values.values())):
        return bad, culprits
    for key, value in values.items():
        rows = ~torch.isfinite(value.reshape(value.shape[0], -1)).all(-1)
        if rows.any():
            culprits.append(key)
            bad |= rows
    return bad, culprits


def loss_finite_flags(losses: TensorDictBase) -> tuple[list[str], torch.Tensor]:
    """The names of the ``loss_*`` entries and a boolean tensor saying which are finite, on the
    losses' device (no host read)."""
    names = [k for k in losses.keys() if k.startswith("loss_")]
    return names, torch.stack([losses.get(k).detach().reshape(()) for k in names]).isfinite()


def first_nonfinite_loss(losses: TensorDictBase) -> str | None:
    """The name of the first ``loss_*`` entry that is NaN or inf, or ``None``. One host read."""
    names, finite = loss_finite_flags(losses)
    if bool(finite.all()):
        return None
    return names[int((~finite).nonzero()[0])]


def nonfinite_parameters(module: nn.Module) -> list[str]:
    """Names of the parameters of ``module`` that hold NaN or inf."""
    return [name for name, p in module.named_parameters() if not torch.isfinite(p).all()]


def batch_statistics(batch: TensorDictBase) -> str:
    """min / mean / max and the NaN/inf count of every float entry, one line each."""
    lines = []
    for key, value in batch.items(include_nested=True, leaves_only=True):
        if not value.is_floating_point():
            continue
        finite = value[torch.isfinite(value)]
        nonfinite = value.numel() - finite.numel()
        if finite.numel():
            stats = f"min {finite.min():.4g} mean {finite.mean():.4g} max {finite.max():.4g}"
        else:
            stats = "no finite entries"
        lines.append(f"    {key}: {stats}, {nonfinite} NaN/inf")
    return "\n".join(lines)


class NonFiniteInjector(gym.Wrapper):
    """Replace the reward and/or the observation by ``value`` (NaN by default) on the steps
    ``at_steps`` (counted from the wrapper's creation, across episodes).

    For testing how a training setup reacts to numerical faults, e.g.
    ``gym.register("FaultyPendulum-v1", entry_point=lambda **kw: NonFiniteInjector(
    gym.make("Pendulum-v1"), at_steps={150}, target="reward"))``.
    """

    def __init__(
        self,
        env: gym.Env,
        at_steps: Iterable[int],
        target: str = "reward",
        value: float = float("nan"),
    ) -> None:
        if target not in ("reward", "observation", "both"):
            raise ValueError(f"target={target!r}: must be 'reward', 'observation' or 'both'.")
        super().__init__(env)
        self.at_steps, self.target, self.value, self.steps = set(at_steps), target, value, 0

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.steps += 1
        if self.steps in self.at_steps:
            if self.target in ("reward", "both"):
                reward = self.value
            if self.target in ("observation", "both"):
                obs = np.full_like(obs, self.value)
        return obs, reward, terminated, truncated, info
