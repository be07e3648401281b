"""Build the swappable parts of an agent from the config: actor, critic, loss.

Each part is chosen by one config group (``actor=``, ``critic=``, ``loss=``); each group's YAML
may instead name a user's class or function by its import path (``target``), called with the
same arguments as the built-in one plus the group's ``kwargs``:

* actor:  ``fn(action_spec, observation_dim, hidden_sizes=..., activation=..., **kwargs)``
* critic: ``fn(observation_dim, action_dim, hidden_sizes=..., activation=..., **kwargs)`` (one Q)
* loss:   ``cls(actor, qvalue, [value_network=V,] **kwargs)``; it gets a value network when
  its signature has a ``value_network`` parameter. It must be a TorchRL ``LossModule`` whose
  ``loss_*`` outputs are summed and stepped together.

Which actor each loss needs is listed in ``ACTOR_OF_LOSS``; a wrong pair fails in
``sac_tr.config.validate_config`` before anything is built.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig, OmegaConf
from tensordict.nn import TensorDictModuleBase
from torch import nn
from torchrl.data import TensorSpec
from torchrl.objectives import DDPGLoss, LossModule, TD3Loss

from sac_tr.losses import DeterministicSACLoss, SACv1Loss, SACv2Loss
from sac_tr.modules import (
    make_actor,
    make_deterministic_actor,
    make_gaussian_exploration,
    make_qvalue,
    make_value,
)

__all__ = [
    "ACTIVATIONS",
    "ACTOR_OF_LOSS",
    "import_object",
    "make_actor_from_config",
    "make_collector_policy",
    "make_loss_from_config",
    "resolve_actor_kind",
]

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh, "elu": nn.ELU}
# The actor each built-in loss works with: the entropy losses need log pi (a stochastic actor).
ACTOR_OF_LOSS = {
    "sac_v1": "tanh_normal",
    "sac_v2": "tanh_normal",
    "sac_deterministic": "deterministic",
    "td3": "deterministic",
    "ddpg": "deterministic",
}


def import_object(path: str) -> Any:
    """``"package.module.Name"`` -> the object; a clear error if it cannot be imported."""
    module_name, _, attr = str(path).rpartition(".")
    if not module_name:
        raise ImportError(f"{path!r} is not an import path like 'my_package.my_module.MyLoss'.")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise ImportError(
            f"Cannot import {path!r}: {err}. Is the module on PYTHONPATH / installed?"
        ) from err


def resolve_actor_kind(cfg: DictConfig) -> str:
    """``actor.name`` with ``auto`` replaced by the kind the loss needs."""
    if cfg.actor.name != "auto":
        return cfg.actor.name
    return ACTOR_OF_LOSS.get(cfg.loss.name, "tanh_normal")


def _net_kwargs(cfg: DictConfig, part: str) -> dict[str, Any]:
    """Hidden sizes of ``cfg.<part>`` and the shared activation, as the builders take them."""
    return {
        "hidden_sizes": tuple(cfg[part].hidden_sizes),
        "activation": ACTIVATIONS[cfg.network.activation],
    }


def _kwargs(node: DictConfig) -> dict[str, Any]:
    kwargs = node.get("kwargs")
    return dict(OmegaConf.to_container(kwargs, resolve=True)) if kwargs else {}


def make_actor_from_config(
    cfg: DictConfig, action_spec: TensorSpec, observation_dim: int
) -> TensorDictModuleBase:
    """The policy network chosen by ``cfg.actor`` (``tanh_normal``, ``deterministic`` or a
    user's builder named by ``actor.target``)."""
    net = _net_kwargs(cfg, "actor")
    if cfg.actor.get("target"):
        return import_object(cfg.actor.target)(
            action_spec, observation_dim, **net, **_kwargs(cfg.actor)
        )
    if resolve_actor_kind(cfg) == "deterministic":
        return make_deterministic_actor(action_spec, observation_dim, **net)
    return make_actor(
        action_spec,
        observation_dim,
        log_std_bounds=(cfg.network.log_std_min, cfg.network.log_std_max),
        **net,
    )


def make_collector_policy(
    cfg: DictConfig, actor: TensorDictModuleBase, action_spec: TensorSpec
) -> TensorDictModuleBase:
    """What the collector runs: a stochastic actor as it is (it samples), a deterministic one
    behind fixed Gaussian noise of ``actor.exploration_sigma`` (relative to the action range).
    ``sac_tr.accel.accelerate_policy`` may then stand a proven-equal fast policy in for it."""
    if hasattr(actor, "get_dist"):
        return actor
    return make_gaussian_exploration(actor, action_spec, sigma=cfg.actor.exploration_sigma)


def _make_critic(cfg: DictConfig, observation_dim: int, action_dim: int) -> TensorDictModuleBase:
    net = _net_kwargs(cfg, "critic")
    if cfg.critic.get("target"):
        return import_object(cfg.critic.target)(
            observation_dim, action_dim, **net, **_kwargs(cfg.critic)
        )
    return make_qvalue(observation_dim, action_dim, **net)


def make_loss_from_config(
    cfg: DictConfig,
    actor: TensorDictModuleBase,
    action_spec: TensorSpec,
    observation_dim: int,
) -> LossModule:
    """The loss chosen by ``cfg.loss``, holding the actor, the critic(s) and their targets, with
    its discount set (``loss.gamma``)."""
    action_dim = int(action_spec.shape[-1])
    qvalue = _make_critic(cfg, observation_dim, action_dim)
    lc = cfg.loss

    def value() -> TensorDictModuleBase:
        return make_value(observation_dim, **_net_kwargs(cfg, "critic"))

    builders: dict[str, Callable[[], LossModule]] = {
        "sac_v1": lambda: SACv1Loss(
            actor,
            qvalue,
            value(),
            num_qvalue_nets=lc.num_qvalue_nets,
            alpha=lc.alpha,
            reward_scale=lc.reward_scale,
        ),
        "sac_v2": lambda: SACv2Loss(
            actor,
            qvalue,
            num_qvalue_nets=lc.num_qvalue_nets,
            alpha_init=lc.alpha_init,
            fixed_alpha=lc.fixed_alpha,
            target_entropy=lc.target_entropy,
            reward_scale=lc.reward_scale,
        ),
        "sac_deterministic": lambda: DeterministicSACLoss(
            actor,
            qvalue,
            value(),
            num_qvalue_nets=lc.num_qvalue_nets,
            reward_scale=lc.reward_scale,
        ),
        "td3": lambda: TD3Loss(
            actor,
            qvalue,
            action_spec=action_spec,
            num_qvalue_nets=lc.num_qvalue_nets,
            policy_noise=lc.policy_noise * _half_range(action_spec),
            noise_clip=lc.noise_clip * _half_range(action_spec),
            loss_function="l2",
        ),
        "ddpg": lambda: DDPGLoss(actor, qvalue, loss_function="l2", delay_actor=True),
    }
    if lc.get("target"):
        cls = import_object(lc.target)
        kwargs = _kwargs(lc)
        if "value_network" in inspect.signature(cls).parameters:
            kwargs["value_network"] = value()
        loss = cls(actor, qvalue, **kwargs)
    else:
        loss = builders[lc.name]()
    loss.make_value_estimator(gamma=lc.gamma)
    return loss


def _half_range(action_spec: TensorSpec) -> float:
    return float(((action_spec.space.high - action_spec.space.low) / 2).mean())
