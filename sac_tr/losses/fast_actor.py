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

from sac_tr.losses.fast_mlp import Plan, mlp_forward, sequential_plan
from sac_tr.modules import ClampedLogStdNormalParams

__all__ = [
    "SquashedGaussianPlan",
    "SquashedGaussianPolicy",
    "fast_acting_policy",
    "sample_squashed_gaussian",
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
    x = torch.cat([td.get(key) for key in plan.in_keys], -1)
    out = mlp_forward(plan.mlp, params, x, prefix=("module", "0", "module", "0"))
    loc, log_std = out.chunk(2, -1)
    log_std = log_std.clamp(plan.log_std_min, plan.log_std_max)
    eps = torch.randn_like(loc)  # the draw Normal.rsample makes
    u = loc + log_std.exp() * eps
    low, high = plan.low.to(u), plan.high.to(u)
    half_range = (high - low) / 2
    action = (high + low) / 2 + half_range * safetanh_noeps(u)
    log_normal = (-0.5 * eps.pow(2) - log_std - _HALF_LOG_2PI).sum(-1)
    log_det_tanh = (2 * (math.log(2) - u - F.softplus(-2 * u))).sum(-1)  # log(1 - tanh(u)^2)
    return action, log_normal - log_det_tanh - half_range.log().sum(-1)


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
