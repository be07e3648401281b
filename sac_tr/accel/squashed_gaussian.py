"""Sample a squashed-Gaussian policy straight from its parameters.

``ProbabilisticActor.get_dist`` builds a ``TanhNormal`` (and its transforms) on every call, which
costs about as much as the policy network itself at batch 256. For an actor of exactly the
standard structure (``make_actor``'s, or a hand-built ``ProbabilisticActor`` around
``TensorDictModule(nn.Sequential(MLP, NormalParamExtractor))`` with a ``TanhNormal``) the same
sample and log-probability are computed here with plain tensor operations: the same noise, TorchRL's
own saturating tanh and affine map, and the paper's stable log-density (eq. 21).
``squashed_gaussian_plan`` raises ``UnsupportedNetworkError`` for any other actor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import (
    NormalParamExtractor,
    ProbabilisticTensorDictSequential,
    TensorDictModule,
    TensorDictModuleBase,
)
from torch import distributions as D
from torch import nn
from torchrl.envs.utils import ExplorationType, exploration_type
from torchrl.modules import ProbabilisticActor, SafeProbabilisticModule, TanhNormal
from torchrl.modules.distributions import continuous
from torchrl.modules.distributions.utils import safetanh_noeps

from sac_tr.accel.checks import UnsupportedNetworkError, check_exact_type, check_library_classes
from sac_tr.accel.mlp import Plan, mlp_apply, mlp_forward, sequential_plan
from sac_tr.modules import ClampedLogStdNormalParams

__all__ = [
    "SquashedGaussianPlan",
    "SquashedGaussianPolicy",
    "SquashedGaussianSampler",
    "squashed_gaussian_plan",
]

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
_DISTRIBUTION_CLASSES = (
    TanhNormal,
    continuous.SafeTanhTransform,
    continuous._PatchedComposeTransform,
    continuous._PatchedAffineTransform,
    D.Normal,
    D.Independent,
)
_PREFIX = ("module", "0", "module", "0")  # the MLP's parameters inside the actor
# TanhNormal keywords and the values the fast sampler reproduces (low/high: any bounds).
_TANH_NORMAL_DEFAULTS = {"tanh_loc": False, "safe_tanh": True, "event_dims": 1}


@dataclass
class SquashedGaussianPlan:
    """What the fast sampler needs to know about a squashed-Gaussian actor."""

    mlp: Plan
    in_keys: list
    head: nn.Module  # ClampedLogStdNormalParams or NormalParamExtractor (exact types)
    low: torch.Tensor
    high: torch.Tensor
    # (device, dtype, action dim) -> (low, high) there: each copied once, reused on every call.
    _bounds: dict = field(default_factory=dict, repr=False, compare=False)

    def bounds(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(low, high)``, one per action dimension (scalar bounds broadcast), on ``like``'s
        device and dtype. Copied there at the first call on that device and reused after, so no
        call copies them from the host, even for an actor whose bounds came from a CPU spec and
        that acts on a GPU (moving the actor costs one copy at its next call)."""
        key = (like.device, like.dtype, like.shape[-1])
        cached = self._bounds.get(key)
        if cached is None:
            cached = tuple(b.to(like).expand(like.shape[-1:]) for b in (self.low, self.high))
            self._bounds[key] = cached
        return cached

    def loc_log_std(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The Gaussian's ``mu`` and ``log sigma`` from the MLP output, as the head computes them."""
        if type(self.head) is ClampedLogStdNormalParams:
            loc, log_std = out.chunk(2, -1)
            return loc, log_std.clamp(self.head.log_std_min, self.head.log_std_max)
        loc, scale = self.head(out)
        return loc, scale.log()

    def loc_scale(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mu, sigma)`` exactly as the head returns them."""
        if type(self.head) is ClampedLogStdNormalParams:
            loc, log_std = self.loc_log_std(out)
            return loc, log_std.exp()
        return self.head(out)


def squashed_gaussian_plan(actor: ProbabilisticTensorDictSequential) -> SquashedGaussianPlan:
    """Read ``ProbabilisticActor(TensorDictModule(nn.Sequential(MLP, head)), TanhNormal)``;
    ``UnsupportedNetworkError`` (naming what differs) for anything else."""
    check_exact_type(actor, (ProbabilisticActor,))
    if len(actor.module) != 2:
        raise UnsupportedNetworkError(f"ProbabilisticActor of {len(actor.module)} modules, not 2")
    net_module, dist_module = actor.module
    check_exact_type(net_module, (TensorDictModule,))
    check_exact_type(dist_module, (SafeProbabilisticModule,))
    check_exact_type(net_module.module, (nn.Sequential,))
    if len(net_module.module) != 2:
        raise UnsupportedNetworkError(
            "the actor's nn.Sequential is not (MLP, normal-parameter head)"
        )
    mlp, head = net_module.module
    plan = sequential_plan(mlp)
    check_exact_type(head, (ClampedLogStdNormalParams, NormalParamExtractor))
    if list(dist_module.dist_keys) != ["loc", "scale"] or list(dist_module.in_keys) != list(
        net_module.out_keys
    ):
        raise UnsupportedNetworkError(
            "the distribution does not read (loc, scale) from the network"
        )
    if dist_module.distribution_class is not TanhNormal:
        raise UnsupportedNetworkError(f"{dist_module.distribution_class.__name__} not supported")
    # What the sampler reproduces of the distribution: its classes as TorchRL and torch define them.
    check_library_classes(_DISTRIBUTION_CLASSES)
    kwargs = dict(dist_module.distribution_kwargs)
    low, high = kwargs.pop("low", -1.0), kwargs.pop("high", 1.0)
    for key, value in kwargs.items():
        if _TANH_NORMAL_DEFAULTS.get(key, object()) != value:
            raise UnsupportedNetworkError(f"TanhNormal({key}={value!r}) not supported")
    return SquashedGaussianPlan(
        plan, list(net_module.in_keys), head, torch.as_tensor(low), torch.as_tensor(high)
    )


class SquashedGaussianSampler:
    """The losses' ``actor_sampler``: ``(a~, log pi(a~|s))`` as ``TanhNormal`` gives them."""

    def __init__(self, plan: SquashedGaussianPlan) -> None:
        self.plan = plan

    def sample(
        self, td: TensorDictBase, params: TensorDictBase
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """a~ = f_phi(eps; s) (eq. 11) and log pi(a~|s) (eq. 21), shapes ``[*B, dA]`` and ``[*B]``.
        ``params`` are the actor's (``loss.actor_network_params``)."""
        x = _actor_input(self.plan, td)
        action, log_prob = _sample_rows(self.plan, params, x.reshape(-1, x.shape[-1]))
        return action.reshape(*x.shape[:-1], -1), log_prob.reshape(x.shape[:-1])

    def sample_pair(
        self, td: TensorDictBase, next_td: TensorDictBase, params: TensorDictBase
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``sample`` on ``td`` and, detached, on ``next_td`` (same batch shape), in one pass
        through the network: ``(a~, log pi(a~|s), a', log pi(a'|s'))``."""
        plan = self.plan
        x, x_next = _actor_input(plan, td), _actor_input(plan, next_td)
        batch_shape, width = x.shape[:-1], x.shape[-1]
        rows = x.numel() // width
        both = torch.cat([x.reshape(rows, width), x_next.reshape(rows, width)])
        action, log_prob = _sample_rows(plan, params, both, live_rows=rows)
        action, log_prob = action.reshape(2, *batch_shape, -1), log_prob.reshape(2, *batch_shape)
        return action[0], log_prob[0], action[1].detach(), log_prob[1].detach()


def _actor_input(plan: SquashedGaussianPlan, td: TensorDictBase) -> torch.Tensor:
    return torch.cat([td.get(key) for key in plan.in_keys], -1)


def _sample_rows(
    plan: SquashedGaussianPlan,
    params: TensorDictBase,
    x: torch.Tensor,
    live_rows: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample for the rows of ``x`` (``[B, in]``); rows from ``live_rows`` on take no gradient."""
    out = mlp_apply(plan.mlp, params, x, _PREFIX, weight_rows=live_rows, grad_rows=live_rows)
    loc, log_std = plan.loc_log_std(out)
    # The draws Normal.rsample makes (row-major whatever the layout of loc): one per batch, in
    # order, so sampling both batches at once consumes the generator as two samples would.
    sizes = [loc.shape[0]] if live_rows is None else [live_rows, loc.shape[0] - live_rows]
    draws = [torch.randn(n, loc.shape[1], dtype=loc.dtype, device=loc.device) for n in sizes]
    eps = draws[0] if len(draws) == 1 else torch.cat(draws)
    low, high = plan.bounds(loc)  # one per action dimension: log h is summed over them
    return _SquashedSample.apply(loc, log_std, eps, low, high)


class _SquashedSample(torch.autograd.Function):
    """``(a~, log pi(a~|s))`` from ``(mu, log sigma, eps)`` as one autograd node.

    Forward, as ``TanhNormal.rsample_and_log_prob``: ``u = mu + sigma eps``, ``a~ = m + h tanh(u)``
    (``m``, ``h`` the middle and half-range of the action bounds; TorchRL's saturating tanh), and
    ``log pi = sum_d [-eps^2/2 - log sigma - log(2 pi)/2 - log(1 - tanh(u)^2) - log h]`` with
    ``log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u))`` (eq. 21, finite where tanh saturates).

    Backward (``eps`` and the bounds are constants): ``du/dmu = 1``, ``du/dlog sigma = sigma eps``,
    ``da~/du = h (1 - t^2)`` with ``t`` the saturated tanh (as TorchRL's ``safetanh``),
    ``dlog pi/du = 2 tanh(u)`` and ``dlog pi/dlog sigma = -1`` besides its path through ``u``.
    """

    @staticmethod
    def forward(ctx, loc, log_std, eps, low, high):
        std_eps = log_std.exp() * eps
        u = loc + std_eps
        half_range = (high - low) / 2
        tanh_u = u.tanh()
        limit = 1.0 - torch.finfo(u.dtype).resolution  # TorchRL's safetanh_noeps: never +-1
        squashed = tanh_u.clamp(-limit, limit)
        action = (high + low) / 2 + half_range * squashed
        log_normal = (-0.5 * eps.pow(2) - log_std - _HALF_LOG_2PI).sum(-1)
        log_det_tanh = (2 * (math.log(2) - u - F.softplus(-2 * u))).sum(-1)  # log(1 - tanh(u)^2)
        ctx.save_for_backward(std_eps, tanh_u, squashed, half_range)
        return action, log_normal - log_det_tanh - half_range.log().sum(-1)

    @staticmethod
    def backward(ctx, grad_action, grad_log_prob):
        std_eps, tanh_u, squashed, half_range = ctx.saved_tensors
        grad_log_prob = grad_log_prob.unsqueeze(-1)
        grad_u = grad_action * half_range * (1 - squashed.pow(2)) + grad_log_prob * 2 * tanh_u
        return grad_u, grad_u * std_eps - grad_log_prob, None, None, None


class SquashedGaussianPolicy(TensorDictModuleBase):
    """The acting policy of a squashed-Gaussian actor for the collector, in plain tensor operations.

    Reads the observation, writes the action: ``mid + half_range * tanh(mu + sigma * eps)``
    under ``ExplorationType.RANDOM``, the squashed mean ``mid + half_range * tanh(mu)`` under
    ``DETERMINISTIC``, exactly what the ``ProbabilisticActor`` returns, without building a
    ``TanhNormal`` per step (which costs more than the network at batch 1). Any other exploration
    type (MEAN, MODE) runs the actor itself. It shares the actor's parameters, so optimizer steps
    act at once, as with the actor itself.
    """

    def __init__(
        self, actor: ProbabilisticTensorDictSequential, plan: SquashedGaussianPlan
    ) -> None:
        super().__init__()
        self.actor, self.plan = actor, plan
        self.in_keys = list(plan.in_keys)
        self.out_keys = list(getattr(actor, "dist_sample_keys", None) or ["action"])[:1]
        self._params = TensorDict.from_module(actor)  # the live parameters (shared storage)

    @torch.no_grad()
    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        kind = exploration_type() or self.actor.default_interaction_type
        if kind not in (ExplorationType.RANDOM, ExplorationType.DETERMINISTIC):
            return self.actor(tensordict)
        plan = self.plan
        x = _actor_input(plan, tensordict)
        out = mlp_forward(plan.mlp, self._params, x.reshape(-1, x.shape[-1]), prefix=_PREFIX)
        loc, scale = plan.loc_scale(out.reshape(*x.shape[:-1], -1))
        if kind == ExplorationType.RANDOM:
            loc = loc + scale * torch.randn_like(loc)
        low, high = plan.bounds(loc)
        tensordict.set(self.out_keys[0], (high + low) / 2 + (high - low) / 2 * safetanh_noeps(loc))
        return tensordict
