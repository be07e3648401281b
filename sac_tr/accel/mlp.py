"""Evaluate plain MLPs straight from their (stacked) parameters.

``make_qvalue`` and ``make_value`` build a ``ValueOperator`` around TorchRL's ``MLP`` of ``Linear``
and activation layers. For exactly those types ``mlp_forward`` computes the same function with one
matmul per layer over the whole Q ensemble (parameters stacked on dim 0), without the per-call cost
of ``vmap``, functional parameter swaps and TensorDict bookkeeping. ``mlp_apply`` is what the
evaluators call: a ReLU chain runs as one fused autograd node (``relu_mlp.relu_mlp``); Tanh and ELU
MLPs run layer by layer (``mlp_forward``), not fused.

``module_plan`` reads a module's layers or raises ``UnsupportedNetworkError`` naming what it cannot read.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModule
from torch import nn
from torchrl.modules import MLP, ValueOperator

from sac_tr.accel.checks import UnsupportedNetworkError, check_exact_type
from sac_tr.accel.relu_mlp import relu_mlp

__all__ = ["Plan", "mlp_apply", "mlp_forward", "module_plan", "sequential_plan"]

# In place: an activation here always follows a linear layer, whose fresh output nothing else
# reads (the linear backward needs its input and weight, the activation's backward its result).
_ACTIVATIONS: dict[type[nn.Module], Callable[[torch.Tensor], torch.Tensor]] = {
    nn.ReLU: torch.relu_,
    nn.Tanh: torch.tanh_,
    nn.ELU: lambda h: F.elu(h, inplace=True),
}

Plan = list[tuple[str, Callable[[torch.Tensor], torch.Tensor] | None]]


def module_plan(module: nn.Module) -> Plan:
    """The layers of a single-output ``TensorDictModule``/``ValueOperator`` around an ``MLP`` or
    ``nn.Sequential`` (``sequential_plan``); ``UnsupportedNetworkError`` for anything else."""
    check_exact_type(module, (TensorDictModule, ValueOperator))
    if len(module.out_keys) != 1:
        raise UnsupportedNetworkError(
            f"{type(module).__name__} writes {len(module.out_keys)} keys, not 1"
        )
    inner = module.module
    if type(inner) is nn.Sequential and len(module.in_keys) > 1:
        raise UnsupportedNetworkError("nn.Sequential takes one input but in_keys has several")
    return sequential_plan(inner)


def sequential_plan(inner: nn.Module) -> Plan:
    """``[(name, None) for Linear | (name, activation)]`` for an exact ``MLP``/``nn.Sequential`` of
    biased ``Linear`` layers and ReLU/Tanh/ELU(alpha=1), ending with a ``Linear``."""
    check_exact_type(inner, (MLP, nn.Sequential))
    if type(inner) is MLP and inner._reshape_out:
        raise UnsupportedNetworkError("MLP reshapes its output (out_features is not an int)")
    plan: Plan = []
    seen: dict[int, str] = {}
    # What the forward runs: every entry, a module placed twice included (named_children would
    # list it once).
    for name, layer in inner._modules.items():
        if type(layer) is nn.Linear:
            if id(layer) in seen:  # one Linear at two places: the weights are tied
                raise UnsupportedNetworkError(
                    f"the same Linear is at positions {seen[id(layer)]} and {name} of the "
                    f"{type(inner).__name__} (tied weights)"
                )
            seen[id(layer)] = name
            if layer.bias is None:
                raise UnsupportedNetworkError("Linear without bias not supported")
            plan.append((name, None))
        elif type(layer) in _ACTIVATIONS:
            if type(layer) is nn.ELU and layer.alpha != 1.0:
                raise UnsupportedNetworkError(f"ELU(alpha={layer.alpha}) not supported")
            if plan and plan[-1][1] is not None:  # the evaluators apply one after each Linear
                raise UnsupportedNetworkError(f"{type(layer).__name__} follows another activation")
            plan.append((name, _ACTIVATIONS[type(layer)]))
        else:
            check_exact_type(layer, tuple(_ACTIVATIONS))  # names a subclass or the unknown type
    if not plan or plan[-1][1] is not None:
        raise UnsupportedNetworkError(f"{type(inner).__name__} does not end with a Linear layer")
    return plan


def mlp_forward(
    plan: Plan, params: TensorDictBase, x: torch.Tensor, prefix: tuple[str, ...] = ("module",)
) -> torch.Tensor:
    """Apply the MLP described by ``plan`` with ``params`` (keys ``(*prefix, name, "weight")``).

    ``x`` is ``[B, in]``. With parameters stacked as ``[N, out, in]`` the result is
    ``[N, B, out]`` (every ensemble member on the same input); otherwise ``[B, out]``.
    """
    h = x
    for name, activation in plan:
        if activation is not None:
            h = activation(h) if h is not x else activation(h.clone())  # never touch the caller's x
            continue
        weight, bias = params[(*prefix, name, "weight")], params[(*prefix, name, "bias")]
        if weight.dim() == 2:
            h = F.linear(h, weight, bias)
        elif h.dim() == 2:  # first layer of an ensemble: a shared input, broadcast over members
            h = torch.matmul(h, weight.transpose(1, 2)) + bias.unsqueeze(1)
        else:
            h = torch.baddbmm(bias.unsqueeze(1), h, weight.transpose(1, 2))
    return h


def _is_relu_chain(plan: Plan) -> bool:
    """``Linear, ReLU, Linear, ..., Linear`` exactly: what ``relu_mlp`` computes."""
    return len(plan) % 2 == 1 and all(
        (activation is None) == (i % 2 == 0) and (i % 2 == 0 or activation is torch.relu_)
        for i, (_, activation) in enumerate(plan)
    )


def mlp_apply(
    plan: Plan,
    params: TensorDictBase,
    x: torch.Tensor,
    prefix: tuple[str, ...] = ("module",),
    *,
    weight_rows: int | None = None,
    grad_rows: int | None = None,
) -> torch.Tensor:
    """``mlp_forward`` with row-wise gradient control; a ReLU chain is one fused node (``relu_mlp``).

    ``weight_rows=k``: only rows ``[0, k)`` of ``x`` contribute to the parameter gradients; the
    other rows are differentiated with respect to ``x`` only (their parameters act as detached).
    ``grad_rows=m``: rows ``[m, B)`` are not differentiated at all (returned detached).
    Shapes as for ``mlp_forward``.
    """
    if _is_relu_chain(plan):
        weights = [
            params[(*prefix, name, kind)]
            for name, activation in plan
            if activation is None
            for kind in ("weight", "bias")
        ]
        out = relu_mlp(x, weights, weight_rows, grad_rows)
        if grad_rows is None:
            return out
        return torch.cat([out[..., :grad_rows, :], out[..., grad_rows:, :].detach()], -2)
    rows = x.shape[0]
    live = rows if grad_rows is None else grad_rows
    trained = live if weight_rows is None else weight_rows
    parts = [mlp_forward(plan, params, x[:trained], prefix)]
    if trained < live:
        parts.append(mlp_forward(plan, params.detach(), x[trained:live], prefix))
    if live < rows:
        with torch.no_grad():
            parts.append(mlp_forward(plan, params, x[live:], prefix))
    return parts[0] if len(parts) == 1 else torch.cat(parts, -2)
