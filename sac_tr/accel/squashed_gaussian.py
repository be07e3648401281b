"""Sample the squashed-Gaussian policy of ``make_actor`` straight from its parameters.

``ProbabilisticActor.get_dist`` builds a ``TanhNormal`` (and its transforms) on every call, which
costs about as much as the policy network itself at batch 256. For the actor ``make_actor``
builds (an MLP, a clamped log-std head, a ``TanhNormal`` over the action bounds) the same sample
and log-probability are computed here with plain tensor operations: the same noise, TorchRL's
own saturating tanh and affine map, and the paper's stable log-density (eq. 21). Any other actor
is sampled through ``get_dist`` (``squashed_gaussian_plan`` returns ``None``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import ProbabilisticTensorDictSequential, TensorDictModuleBase
from torchrl.envs.utils import ExplorationType, exploration_type
from torchrl.modules import TanhNormal
from torchrl.modules.distributions.utils import safetanh_noeps

from sac_tr.losses.fast_mlp import Plan, mlp_forward, mlp_forward_fused, sequential_plan
from sac_tr.modules import ClampedLogStdNormalParams

__all__ = [
    "SquashedGaussianPlan",
    "SquashedGaussianPolicy",
    "fast_acting_policy",
    "sample_squashed_gaussian",
    "sample_squashed_gaussian_pair",
    "squashed_gaussian_plan",
]

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


@dataclass
class SquashedGaussianPlan:
    """What the fast sampler needs to know about a ``make_actor`` policy."""

    mlp: Plan
    in_keys: list
    log_std_min: float
    log_std_max: float
    low: torch.Tensor
    high: torch.Tensor


def squashed_gaussian_plan(actor: ProbabilisticTensorDictSequential) -> SquashedGaussianPlan | None:
    """Recognise ``make_actor``'s structure; ``None`` for anything else."""
    try:
        net_module, dist_module = actor.module[0], actor.module[-1]
        mlp, head = net_module.module
    except (AttributeError, TypeError, ValueError, IndexError):
        return None
    plan = sequential_plan(mlp)
    kwargs = getattr(dist_module, "distribution_kwargs", {})
    if (
        plan is None
        or len(actor.module) != 2
        or type(head) is not ClampedLogStdNormalParams
        or getattr(dist_module, "distribution_class", None) is not TanhNormal
        or kwargs.get("tanh_loc", False)
        or not {"low", "high"} <= set(kwargs)
    ):
        return None
    return SquashedGaussianPlan(
        plan,
        list(net_module.in_keys),
        head.log_std_min,
        head.log_std_max,
        torch.as_tensor(kwargs["low"]),
        torch.as_tensor(kwargs["high"]),
    )


def sample_squashed_gaussian(
    plan: SquashedGaussianPlan, params: TensorDictBase, td: TensorDictBase
) -> tuple[torch.Tensor, torch.Tensor]:
    """a~ = f_phi(eps; s) (eq. 11) and log pi(a~|s) (eq. 21), as ``TanhNormal`` would give them.

    Shapes ``[*B, dA]`` and ``[*B]``. ``params`` are the actor's (``loss.actor_network_params``).
    """
    x = _actor_input(plan, td)
    action, log_prob = _sample_rows(plan, params, x.reshape(-1, x.shape[-1]))
    return action.reshape(*x.shape[:-1], -1), log_prob.reshape(x.shape[:-1])


def sample_squashed_gaussian_pair(
    plan: SquashedGaussianPlan, params: TensorDictBase, td: TensorDictBase, next_td: TensorDictBase
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``sample_squashed_gaussian`` on ``td`` and, detached, on ``next_td`` (same batch shape),
    in one pass through the network: ``(a~, log pi(a~|s), a', log pi(a'|s'))``."""
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
    out = mlp_forward_fused(
        plan.mlp,
        params,
        x,
        prefix=("module", "0", "module", "0"),
        weight_rows=live_rows,
        grad_rows=live_rows,
    )
    loc, log_std = out.chunk(2, -1)
    log_std = log_std.clamp(plan.log_std_min, plan.log_std_max)
    # The draws Normal.rsample makes (row-major whatever the layout of loc): one per batch, in
    # order, so sampling both batches at once consumes the generator as two samples would.
    sizes = [loc.shape[0]] if live_rows is None else [live_rows, loc.shape[0] - live_rows]
    draws = [torch.randn(n, loc.shape[1], dtype=loc.dtype, device=loc.device) for n in sizes]
    eps = draws[0] if len(draws) == 1 else torch.cat(draws)
    low, high = plan.low.to(loc), plan.high.to(loc)
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
    """The acting policy of a ``make_actor`` actor for the collector, in plain tensor operations.

    Reads the observation, writes the action: ``mid + half_range * tanh(mu + sigma * eps)``
    under ``ExplorationType.RANDOM`` (the collector's default), the squashed mean
    ``mid + half_range * tanh(mu)`` otherwise, exactly what the ``ProbabilisticActor`` returns,
    without building a ``TanhNormal`` per step (which costs more than the network at batch 1).
    It shares the actor's parameters, so optimizer steps act at once, as with the actor itself.
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
        plan = self.plan
        x = torch.cat([tensordict.get(key) for key in plan.in_keys], -1)
        prefix = ("module", "0", "module", "0")
        out = mlp_forward(plan.mlp, self._params, x.reshape(-1, x.shape[-1]), prefix=prefix)
        loc, log_std = out.reshape(*x.shape[:-1], -1).chunk(2, -1)
        if exploration_type() in (ExplorationType.RANDOM, None):
            log_std = log_std.clamp(plan.log_std_min, plan.log_std_max)
            loc = loc + log_std.exp() * torch.randn_like(loc)
        low, high = plan.low.to(loc), plan.high.to(loc)
        tensordict.set(self.out_keys[0], (high + low) / 2 + (high - low) / 2 * safetanh_noeps(loc))
        return tensordict


def fast_acting_policy(actor: TensorDictModuleBase) -> TensorDictModuleBase:
    """``SquashedGaussianPolicy`` for an actor ``make_actor`` built; the actor itself otherwise."""
    plan = squashed_gaussian_plan(actor) if hasattr(actor, "get_dist") else None
    return actor if plan is None else SquashedGaussianPolicy(actor, plan)
