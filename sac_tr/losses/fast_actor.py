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
from tensordict import TensorDictBase
from tensordict.nn import ProbabilisticTensorDictSequential
from torchrl.modules import TanhNormal
from torchrl.modules.distributions.utils import safetanh_noeps

from sac_tr.losses.fast_mlp import Plan, mlp_forward, sequential_plan
from sac_tr.modules import ClampedLogStdNormalParams

__all__ = ["SquashedGaussianPlan", "sample_squashed_gaussian", "squashed_gaussian_plan"]

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
