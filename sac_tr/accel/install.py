"""Install fast evaluators on a loss (and the collector's policy) where they are proven equal.

``accelerate(loss, mode)`` looks at each network of an sac_tr loss (the Q ensemble, the value
network of SAC-v1, the actor's sampler) and sets the loss's ``q_evaluator``, ``value_evaluator`` or
``actor_sampler`` only when (a) ``checks`` and the network's plan accept every type, hook,
parametrization and method in it (none replaced on an instance or a class), (b) the loss does not
change what the evaluator stands in for (``_BYPASSED``), and (c) ``probe`` finds the fast
evaluator's outputs and gradients equal to the module's own and to the loss's own reference code
on a random batch, in train and in eval mode. It returns one line per network: ``"accelerated"``
or ``"reference path (<reason>)"``. ``accelerate_policy`` does the same for the acting policy.
The decision is made once: a network changed afterwards (a layer swapped, distribution keywords
edited, ``load_state_dict(assign=True)`` on the actor) needs ``accelerate`` called again.

Modes: ``auto`` (accelerate what is proven, the rest runs through its own module), ``on`` (raise
``AccelerationError`` naming the network and the reason when one cannot be accelerated), ``off``
(the reference path everywhere).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from tensordict.nn import TensorDictModuleBase
from torch import nn
from torchrl.objectives import LossModule

from sac_tr.accel.checks import UnsupportedNetworkError, check_library_classes, check_readable
from sac_tr.accel.critics import MLPQEnsemble, MLPValue
from sac_tr.accel.mlp import Plan, module_plan
from sac_tr.accel.probe import probe_policy, probe_q, probe_sampler, probe_value
from sac_tr.accel.squashed_gaussian import (
    SquashedGaussianPlan,
    SquashedGaussianPolicy,
    SquashedGaussianSampler,
    squashed_gaussian_plan,
)
from sac_tr.losses.common import SACLossBase
from sac_tr.losses.sac_v1 import SACv1Loss

__all__ = ["MODES", "AccelerationError", "accelerate", "accelerate_policy", "check_mode"]

MODES = ("auto", "on", "off")
ACCELERATED = "accelerated"


class AccelerationError(ValueError):
    """``accelerate=on`` and a network cannot be accelerated."""


def check_mode(mode: str) -> None:
    """Raise ``ValueError`` unless ``mode`` is one of ``MODES``."""
    if mode not in MODES:
        raise ValueError(f"accelerate={mode!r}: must be one of {', '.join(MODES)}.")


def _first_in_features(inner: nn.Module, plan: Plan) -> int:
    return int(getattr(inner, plan[0][0]).in_features)


def _widths(in_keys: list, total: int, known: dict) -> dict:
    """The width of each input key: those in ``known``, and the rest of ``total`` for the one
    key left (``UnsupportedNetworkError`` if several are)."""
    unknown = [k for k in in_keys if k not in known]
    if len(unknown) > 1:
        raise UnsupportedNetworkError(f"cannot tell the widths of the inputs {unknown}")
    widths = {k: known[k] for k in in_keys if k in known}
    if unknown:
        widths[unknown[0]] = total - sum(widths.values())
    if sum(widths.values()) != total or any(w <= 0 for w in widths.values()):
        raise UnsupportedNetworkError(f"inputs {in_keys} do not add up to {total} features")
    return widths


# What each fast evaluator stands in for in the loss: the methods it replaces and those the replaced
# code reads (the Q ensemble's vmap, the detached Q parameters of the actor and value terms). A
# loss that changes any of them, in its class or on the instance, keeps that network's reference
# path: the evaluator would compute the stock version and skip the change.
_BYPASSED = {
    "Q": (
        "_q_values",
        "_q_replayed_and_fresh",
        "_make_vmap",
        "_register_qvalue",
        "_detached_qvalue_params",
    ),
    "V": ("_state_values",),
    "actor": ("_sample_action", "_sample_current_and_next", "_register_actor"),
}


def _not_overridden(loss: LossModule, base: type, network: str) -> None:
    """``UnsupportedNetworkError`` if ``loss`` changes what ``network``'s evaluator bypasses."""
    for name in _BYPASSED[network]:
        if inspect.getattr_static(type(loss), name) is not inspect.getattr_static(base, name):
            raise UnsupportedNetworkError(f"{type(loss).__name__} overrides {name}")
        if name in vars(loss):
            raise UnsupportedNetworkError(
                f"{type(loss).__name__}.{name} is replaced on the instance"
            )
    check_library_classes([type(loss)], names=_BYPASSED[network])
    if network == "Q" and loss._vmap_qvalue is not getattr(loss, "_stock_vmap_qvalue", None):
        raise UnsupportedNetworkError(
            f"{type(loss).__name__}._vmap_qvalue is not the one _make_vmap built (it was "
            "assigned afterwards)"
        )


def _actor_plan(actor: TensorDictModuleBase) -> SquashedGaussianPlan:
    if not hasattr(actor, "get_dist"):
        raise UnsupportedNetworkError(
            f"{type(actor).__name__} has no action distribution (get_dist)"
        )
    check_readable(actor)
    plan = squashed_gaussian_plan(actor)
    if len(plan.in_keys) != 1:
        raise UnsupportedNetworkError("the actor's network reads several keys")
    return plan


def _actor_widths(actor: TensorDictModuleBase, plan: SquashedGaussianPlan) -> dict:
    mlp = actor.module[0].module[0]
    return {plan.in_keys[0]: _first_in_features(mlp, plan.mlp)}


def _fast_q(loss: SACLossBase) -> MLPQEnsemble:
    _not_overridden(loss, SACLossBase, "Q")
    module = loss.qvalue_network
    check_readable(module)
    plan = module_plan(module)
    known = {loss.tensor_keys.action: loss._action_dim} if loss._action_dim else {}
    if loss._observation_dim() is not None:
        known.update({key: loss._observation_dim() for key in loss.actor_network.in_keys})
    widths = _widths(module.in_keys, _first_in_features(module.module, plan), known)
    evaluator = MLPQEnsemble(plan, module.in_keys, loss.tensor_keys.action)
    probe_q(loss, evaluator, widths)
    return evaluator


def _fast_value(loss: SACv1Loss) -> MLPValue:
    _not_overridden(loss, SACv1Loss, "V")
    module = loss.value_network
    check_readable(module)
    plan = module_plan(module)
    widths = _widths(module.in_keys, _first_in_features(module.module, plan), {})
    evaluator = MLPValue(plan, module.in_keys)
    probe_value(loss, evaluator, widths)
    return evaluator


def _fast_sampler(loss: SACLossBase) -> SquashedGaussianSampler:
    plan = _actor_plan(loss.actor_network)
    _not_overridden(loss, SACLossBase, "actor")
    sampler = SquashedGaussianSampler(plan)
    probe_sampler(loss, sampler, _actor_widths(loss.actor_network, plan))
    return sampler


def _path(name: str, module: object, mode: str, build: Callable[[], object]) -> tuple[object, str]:
    """``(evaluator, "accelerated")`` or ``(None, "reference path (reason)")``; raises under ``on``."""
    if mode == "off":
        return None, "reference path (accelerate=off)"
    try:
        return build(), ACCELERATED
    except Exception as err:  # unsupported, or the probe itself failed: never stop an auto run
        reason = str(err)
        if not isinstance(err, UnsupportedNetworkError):
            reason = f"probe failed: {type(err).__name__}: {err}"
        if mode == "on":
            raise AccelerationError(
                f"accelerate=on: {name} ({type(module).__name__}) cannot be accelerated: "
                f"{reason}. Set accelerate=auto to run it through its own module (the reference path)."
            ) from err
        return None, f"reference path ({reason})"


def accelerate(loss: LossModule, mode: str = "auto") -> dict[str, str]:
    """Install the fast evaluators ``loss``'s networks are proven to support (see the module
    docstring); returns ``{"Q": ..., "V": ..., "actor": ...}``, each ``"accelerated"`` or
    ``"reference path (<reason>)"`` (``"V"`` only for losses with a value network).

    Call it on the finished loss: after ``loss.to(device)`` (the probe runs where the loss will)
    and after any ``loss.set_keys(...)`` (the evaluators read the keys at installation). Calling
    it again re-decides every network; ``mode="off"`` removes every fast evaluator.
    """
    check_mode(mode)
    if not isinstance(loss, SACLossBase):
        reason = f"{type(loss).__name__} is not an sac_tr loss"
        paths = {"Q": f"reference path ({reason})", "actor": f"reference path ({reason})"}
        if mode == "on":
            raise AccelerationError(f"accelerate=on: {reason}; its networks cannot be accelerated.")
        return paths
    loss.q_evaluator = loss.actor_sampler = None
    if isinstance(loss, SACv1Loss):
        loss.value_evaluator = None
    paths = {}
    loss.q_evaluator, paths["Q"] = _path("Q", loss.qvalue_network, mode, lambda: _fast_q(loss))
    if isinstance(loss, SACv1Loss):
        loss.value_evaluator, paths["V"] = _path(
            "V", loss.value_network, mode, lambda: _fast_value(loss)
        )
    loss.actor_sampler, paths["actor"] = _path(
        "actor", loss.actor_network, mode, lambda: _fast_sampler(loss)
    )
    return paths


def accelerate_policy(
    policy: TensorDictModuleBase, mode: str = "auto"
) -> tuple[TensorDictModuleBase, str]:
    """The collector's acting policy: a ``SquashedGaussianPolicy`` when ``policy`` is a squashed-
    Gaussian actor proven equal to it, else ``policy`` itself; with its path line."""
    check_mode(mode)

    def build() -> SquashedGaussianPolicy:
        plan = _actor_plan(policy)
        fast = SquashedGaussianPolicy(policy, plan)
        probe_policy(policy, fast, _actor_widths(policy, plan))
        return fast

    fast, path = _path("policy", policy, mode, build)
    return (policy if fast is None else fast), path
