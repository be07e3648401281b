"""Network builders for SAC: a squashed-Gaussian actor, soft Q-functions and a state-value function.

Every builder returns a TensorDict-keyed TorchRL module whose keys can be changed, so that a
loss, a collector or a user's own code can read and write them by name. Defaults follow the
paper (Haarnoja et al. 2018, appendix D): two hidden layers of 256 units with ReLU.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tensordict.nn import TensorDictModule, TensorDictModuleBase, TensorDictSequential
from torch import nn
from torchrl.data import Bounded, TensorSpec, Unbounded
from torchrl.envs.utils import ExplorationType
from torchrl.modules import (
    MLP,
    AdditiveGaussianModule,
    ProbabilisticActor,
    TanhModule,
    TanhNormal,
    ValueOperator,
)

__all__ = [
    "ClampToBounds",
    "ClampedLogStdNormalParams",
    "make_actor",
    "make_deterministic_actor",
    "make_gaussian_exploration",
    "make_qvalue",
    "make_value",
    "tanh_normal_actor",
]

DEFAULT_HIDDEN_SIZES: tuple[int, ...] = (256, 256)
# The original SAC code and Stable-Baselines3 clamp the policy's log-std to this range.
DEFAULT_LOG_STD_BOUNDS: tuple[float, float] = (-20.0, 2.0)


def _check_sizes(name: str, value: int, hidden_sizes: Sequence[int]) -> None:
    if not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    if any((not isinstance(h, int)) or h <= 0 for h in hidden_sizes):
        raise ValueError(
            f"hidden_sizes must be positive integers, got {list(hidden_sizes)!r} "
            "(for example hidden_sizes=(256, 256))."
        )


class ClampedLogStdNormalParams(nn.Module):
    """Split a network output into the Gaussian mean and a standard deviation.

    The last dimension ``2 * d`` becomes ``loc`` (``d``) and ``log_std`` (``d``); ``log_std``
    is clamped to ``log_std_bounds`` and exponentiated, as in the paper's code.
    """

    def __init__(self, log_std_bounds: tuple[float, float] = DEFAULT_LOG_STD_BOUNDS) -> None:
        super().__init__()
        low, high = log_std_bounds
        if not low < high:
            raise ValueError(
                f"log_std_bounds must be (low, high) with low < high, got {log_std_bounds}."
            )
        self.log_std_min = float(low)
        self.log_std_max = float(high)

    def forward(self, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(loc, scale)``, each of shape ``[*B, d]`` for an input ``[*B, 2d]``."""
        loc, log_std = params.chunk(2, dim=-1)
        log_std = log_std.clamp(self.log_std_min, self.log_std_max)
        return loc, log_std.exp()


def make_actor(
    action_spec: TensorSpec,
    observation_dim: int,
    *,
    hidden_sizes: Sequence[int] = DEFAULT_HIDDEN_SIZES,
    activation: type[nn.Module] = nn.ReLU,
    log_std_bounds: tuple[float, float] = DEFAULT_LOG_STD_BOUNDS,
    observation_key: str = "observation",
    action_key: str = "action",
    log_prob_key: str = "action_log_prob",
) -> ProbabilisticActor:
    """Build the SAC policy pi_phi(a|s): a Gaussian squashed by tanh and scaled to the action bounds.

    The action is ``a = low + (high - low) / 2 * (tanh(u) + 1)`` with ``u ~ N(mu(s), sigma(s))``
    (paper eq. 21 and appendix C). Under ``ExplorationType.DETERMINISTIC`` the actor returns the
    squashed mean ``tanh(mu)`` scaled to the bounds: the evaluation policy of the paper.

    Args:
        action_spec: a bounded TorchRL spec of the action, shape ``[action_dim]``.
        observation_dim: size of the flat observation vector.
        hidden_sizes: width of each hidden layer.
        activation: activation class between layers.
        log_std_bounds: clamp of the pre-squash log standard deviation.
        observation_key, action_key, log_prob_key: TensorDict keys read and written.

    Returns:
        A ``ProbabilisticActor`` writing ``action_key`` and ``log_prob_key`` (sampling by default).
    """
    _check_action_spec("make_actor", action_spec)
    action_dim = int(action_spec.shape[-1])
    _check_sizes("observation_dim", observation_dim, hidden_sizes)
    net = nn.Sequential(
        MLP(
            in_features=observation_dim,
            out_features=2 * action_dim,
            num_cells=list(hidden_sizes),
            activation_class=activation,
        ),
        ClampedLogStdNormalParams(log_std_bounds),
    )
    return tanh_normal_actor(
        net,
        action_spec,
        observation_key=observation_key,
        action_key=action_key,
        log_prob_key=log_prob_key,
    )


def tanh_normal_actor(
    net: nn.Module,
    action_spec: TensorSpec,
    *,
    observation_key: str = "observation",
    action_key: str = "action",
    log_prob_key: str = "action_log_prob",
) -> ProbabilisticActor:
    """TorchRL's standard assembly of a squashed-Gaussian policy around ``net``.

    ``net`` maps the observation to ``(loc, scale)`` (e.g. ``nn.Sequential(MLP, NormalParamExtractor())``
    or ``make_actor``'s MLP with ``ClampedLogStdNormalParams``); the action is a ``TanhNormal``
    over the bounds of ``action_spec``, sampled by default (``ExplorationType.RANDOM``).
    """
    _check_action_spec("tanh_normal_actor", action_spec)
    space = action_spec.space
    module = TensorDictModule(net, in_keys=[observation_key], out_keys=["loc", "scale"])
    return ProbabilisticActor(
        module,
        in_keys=["loc", "scale"],
        out_keys=[action_key],
        spec=action_spec,
        distribution_class=TanhNormal,
        distribution_kwargs={"low": space.low, "high": space.high, "tanh_loc": False},
        return_log_prob=True,
        log_prob_key=log_prob_key,
        default_interaction_type=ExplorationType.RANDOM,
    )


def _check_action_spec(builder: str, action_spec: TensorSpec) -> None:
    if not isinstance(action_spec, Bounded):
        raise ValueError(
            f"{builder} needs a bounded action spec (torchrl.data.Bounded), got "
            f"{type(action_spec).__name__}: actions are squashed into [low, high]."
        )
    if len(action_spec.shape) != 1:
        raise ValueError(
            f"{builder} expects a flat action spec [action_dim], got shape {tuple(action_spec.shape)}."
        )


def make_deterministic_actor(
    action_spec: TensorSpec,
    observation_dim: int,
    *,
    hidden_sizes: Sequence[int] = DEFAULT_HIDDEN_SIZES,
    activation: type[nn.Module] = nn.ReLU,
    observation_key: str = "observation",
    action_key: str = "action",
) -> TensorDictSequential:
    """Build a deterministic policy mu_phi(s) = low + (high - low) / 2 * (tanh(f_phi(s)) + 1).

    The actor of the paper's deterministic SAC variant (Figure 2) and of TD3 and DDPG. It has
    no distribution and no log-probability, so it cannot serve an entropy-regularised loss;
    exploration noise is added by ``make_gaussian_exploration`` in front of the collector.
    """
    _check_action_spec("make_deterministic_actor", action_spec)
    _check_sizes("observation_dim", observation_dim, hidden_sizes)
    net = MLP(
        in_features=observation_dim,
        out_features=int(action_spec.shape[-1]),
        num_cells=list(hidden_sizes),
        activation_class=activation,
    )
    return TensorDictSequential(
        TensorDictModule(net, in_keys=[observation_key], out_keys=["param"]),
        TanhModule(in_keys=["param"], out_keys=[action_key], spec=action_spec),
    )


def make_gaussian_exploration(
    actor: TensorDictModuleBase,
    action_spec: TensorSpec,
    sigma: float = 0.1,
    action_key: str = "action",
) -> TensorDictSequential:
    """``actor`` followed by fixed Gaussian noise ``N(0, (sigma * (high - low) / 2)^2)`` on the
    action, clamped back into the bounds (TorchRL's ``AdditiveGaussianModule``, not annealed).

    The noise is only added under ``ExplorationType.RANDOM`` (the collector's default); under
    ``DETERMINISTIC`` (evaluation) the actor's own action passes through. ``sigma`` is relative
    to the half-range of the action (TD3's 0.1 of the maximum action). The noise and the bounds
    live on ``action_spec.device`` (the actor's device, so the noise is drawn there).

    The clamp is TorchRL's ``Bounded.project`` without its "already inside?" test, which reads
    a flag on the host (on a GPU, a wait at every step): clamping an action that is inside
    leaves it unchanged, so the actions are the same.
    """
    _check_action_spec("make_gaussian_exploration", action_spec)
    if not sigma >= 0:
        raise ValueError(f"sigma must be >= 0, got {sigma!r}.")
    half_range = float(((action_spec.space.high - action_spec.space.low) / 2).mean())
    noise = AdditiveGaussianModule(
        # Unbounded: the noise module only checks the shape and dtype; the bounds come next.
        spec=Unbounded(action_spec.shape, device=action_spec.device, dtype=action_spec.dtype),
        sigma_init=1.0,
        sigma_end=1.0,
        std=float(sigma) * half_range,
        action_key=action_key,
        device=action_spec.device,
    )
    clamp = TensorDictModule(
        ClampToBounds(action_spec), in_keys=[action_key], out_keys=[action_key]
    )
    return TensorDictSequential(actor, noise, clamp)


class ClampToBounds(nn.Module):
    """``clamp(a, low, high)`` with the bounds of a ``Bounded`` action spec held as buffers."""

    def __init__(self, action_spec: TensorSpec) -> None:
        super().__init__()
        self.register_buffer("low", action_spec.space.low.clone())
        self.register_buffer("high", action_spec.space.high.clone())

    def forward(self, action: torch.Tensor) -> torch.Tensor:
        """The action moved to the nearest point of the box ``[low, high]``."""
        return torch.clamp(action, self.low, self.high)


def make_qvalue(
    observation_dim: int,
    action_dim: int,
    *,
    hidden_sizes: Sequence[int] = DEFAULT_HIDDEN_SIZES,
    activation: type[nn.Module] = nn.ReLU,
    observation_key: str = "observation",
    action_key: str = "action",
    out_key: str = "state_action_value",
) -> ValueOperator:
    """Build one soft Q-function Q_theta(s, a) reading the observation and action, writing ``[*B, 1]``."""
    _check_sizes("observation_dim", observation_dim, hidden_sizes)
    _check_sizes("action_dim", action_dim, hidden_sizes)
    net = MLP(
        in_features=observation_dim + action_dim,
        out_features=1,
        num_cells=list(hidden_sizes),
        activation_class=activation,
    )
    return ValueOperator(net, in_keys=[observation_key, action_key], out_keys=[out_key])


def make_value(
    observation_dim: int,
    *,
    hidden_sizes: Sequence[int] = DEFAULT_HIDDEN_SIZES,
    activation: type[nn.Module] = nn.ReLU,
    observation_key: str = "observation",
    out_key: str = "state_value",
) -> ValueOperator:
    """Build the state-value function V_psi(s) of SAC-v1, writing ``[*B, 1]``."""
    _check_sizes("observation_dim", observation_dim, hidden_sizes)
    net = MLP(
        in_features=observation_dim,
        out_features=1,
        num_cells=list(hidden_sizes),
        activation_class=activation,
    )
    return ValueOperator(net, in_keys=[observation_key], out_keys=[out_key])
