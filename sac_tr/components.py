"""Build the swappable parts of an agent from the config: actor, critic, value network, loss.

Each part is chosen by one config group (``actor=``, ``critic=``, ``value=``, ``loss=``); each
group may instead name a user's class or function by its import path (``<group>.target``). The
built-in part and a user's are called the same way: the positional arguments below, then every
keyword the recipe offers that the signature names (through the class's MRO when a constructor
only forwards ``*args, **kwargs``; see ``sac_tr.signatures``), then the group's ``kwargs``:

* actor:  ``fn(action_spec, observation_dim, *, hidden_sizes, activation, log_std_bounds)``
* critic: ``fn(observation_dim, action_dim, *, hidden_sizes, activation)`` (one Q-function)
* value:  ``fn(observation_dim, *, hidden_sizes, activation)`` (V(s), for the losses that take one)
* loss:   ``cls(actor, qvalue, *, value_network, action_spec, discount, <every key of cfg.loss>)``

A loss receives a value network (built by the ``value`` group) when its signature requires
``value_network``, or names it and the config's ``loss.name`` is a loss with one (``sac_v1``,
``sac_deterministic``); every key of ``cfg.loss`` but ``name``/``target``/``kwargs`` it names
(``alpha``, ``reward_scale``, ``num_qvalue_nets``, ...); the discount ``cfg.loss.gamma`` as
``discount`` (and as ``gamma`` unless that is TorchRL's deprecated constructor argument), and in
every case through TorchRL's ``loss.make_value_estimator(gamma=...)`` afterwards. ``policy_noise``
and ``noise_clip`` are given relative to the action half-range in the config and passed in action
units, as TorchRL's ``TD3Loss`` takes them. A ``kwargs`` key the part does not take, or a required
parameter nobody supplies, fails in ``sac_tr.config.validate_config``. The loss must be a TorchRL
``LossModule`` whose ``loss_*`` outputs are summed and stepped together.

Which actor each loss needs is listed in ``ACTOR_OF_LOSS``; a wrong pair fails in
``sac_tr.config.validate_config`` before anything is built.
"""

from __future__ import annotations

import importlib
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
from sac_tr.signatures import Lazy, accepted_arguments, argument_problems, select_arguments

__all__ = [
    "ACTIVATIONS",
    "ACTOR_OF_LOSS",
    "LOSS_CLASSES",
    "PARTS",
    "import_object",
    "make_actor_from_config",
    "make_collector_policy",
    "make_loss_from_config",
    "part_builder",
    "part_offers",
    "part_problems",
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
LOSS_CLASSES: dict[str, type[LossModule]] = {
    "sac_v1": SACv1Loss,
    "sac_v2": SACv2Loss,
    "sac_deterministic": DeterministicSACLoss,
    "td3": TD3Loss,
    "ddpg": DDPGLoss,
}
# The config groups that build a part, and how many positional arguments the recipe passes it.
PARTS = {"actor": 2, "critic": 2, "value": 1, "loss": 2}
# cfg.loss keys that are the recipe's, not constructor arguments.
_RECIPE_LOSS_KEYS = ("name", "target", "kwargs", "gamma", "policy_delay")


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


def _kwargs(node: DictConfig) -> dict[str, Any]:
    kwargs = node.get("kwargs")
    return dict(OmegaConf.to_container(kwargs, resolve=True)) if kwargs else {}


def _node(cfg: DictConfig, group: str) -> DictConfig:
    """``cfg.<group>``; a config saved before the ``value`` group existed sized V as the critic."""
    return cfg.critic if group == "value" and "value" not in cfg else cfg[group]


def part_builder(cfg: DictConfig, group: str) -> Any:
    """The class or function that builds ``group`` (one of ``PARTS``): ``<group>.target`` when
    set, else the built-in one the config names."""
    if _node(cfg, group).get("target"):
        return import_object(_node(cfg, group).target)
    if group == "actor":
        deterministic = resolve_actor_kind(cfg) == "deterministic"
        return make_deterministic_actor if deterministic else make_actor
    return {"critic": make_qvalue, "value": make_value, "loss": LOSS_CLASSES.get(cfg.loss.name)}[
        group
    ]


def part_offers(
    cfg: DictConfig,
    group: str,
    action_spec: TensorSpec | None = None,
    value_network: Lazy | None = None,
) -> dict[str, Any]:
    """The keyword arguments the recipe offers ``group``'s builder (it takes those it names).
    The names depend on the config only, so ``validate_config`` calls this without the env."""
    activation = ACTIVATIONS.get(cfg.network.activation)
    if group != "loss":
        offers = {"hidden_sizes": tuple(_node(cfg, group).hidden_sizes), "activation": activation}
        if group == "actor":
            offers["log_std_bounds"] = (cfg.network.log_std_min, cfg.network.log_std_max)
        return offers
    lc = cfg.loss
    config = OmegaConf.to_container(lc, resolve=True)  # plain lists and dicts, not OmegaConf's
    offers = {k: v for k, v in config.items() if k not in _RECIPE_LOSS_KEYS}
    offers.update(action_spec=action_spec, discount=lc.gamma)
    # A value network for a loss that requires one, or takes one and replaces a built-in loss
    # that has one (loss=sac_v1 with loss.target=torchrl.objectives.SACLoss: V; loss=sac_v2: none).
    accepted = accepted_arguments(part_builder(cfg, "loss"), PARTS["loss"])
    builtin = LOSS_CLASSES.get(lc.name)
    if "value_network" in accepted.required or (
        builtin is not None and "value_network" in accepted_arguments(builtin, 2).names
    ):
        offers["value_network"] = value_network
    half_range = _half_range(action_spec) if action_spec is not None else 1.0
    for key in ("policy_noise", "noise_clip"):  # relative in the config, action units in TD3Loss
        if key in offers:
            offers[key] = offers[key] * half_range
    owner = accepted.names.get("gamma")
    if owner is not None and not getattr(owner, "__module__", "").startswith("torchrl"):
        offers["gamma"] = lc.gamma  # TorchRL's losses refuse gamma= (make_value_estimator sets it)
    return offers


def part_problems(cfg: DictConfig, group: str) -> list[str]:
    """What would stop ``group``'s builder from being called with the config (see
    ``sac_tr.signatures.argument_problems``); empty when it can be built."""
    return argument_problems(
        part_builder(cfg, group),
        PARTS[group],
        part_offers(cfg, group),
        _kwargs(_node(cfg, group)),
        group,
    )


def _build(cfg: DictConfig, group: str, *args: Any, notes: list[str] | None, **context: Any) -> Any:
    """Call ``group``'s builder with ``args`` and the offered keywords it takes; note the call."""
    fn = part_builder(cfg, group)
    offers = part_offers(cfg, group, **context)
    kwargs = select_arguments(fn, len(args), offers, _kwargs(_node(cfg, group)), group)
    if notes is not None:
        shown = ", ".join(f"{k}={_show(v)}" for k, v in kwargs.items())
        notes.append(f"{group}: {fn.__module__}.{fn.__qualname__}({shown})")
    return fn(*args, **kwargs)


def _show(value: Any) -> str:
    if isinstance(value, type):
        return value.__name__
    if isinstance(value, nn.Module):
        return type(value).__name__
    if isinstance(value, TensorSpec):
        return f"{type(value).__name__}{tuple(value.shape)}"
    return repr(value)


def make_actor_from_config(
    cfg: DictConfig,
    action_spec: TensorSpec,
    observation_dim: int,
    notes: list[str] | None = None,
) -> TensorDictModuleBase:
    """The policy network chosen by ``cfg.actor`` (``tanh_normal``, ``deterministic`` or a
    user's builder named by ``actor.target``); the call is appended to ``notes``."""
    return _build(cfg, "actor", action_spec, observation_dim, notes=notes)


def make_collector_policy(
    cfg: DictConfig, actor: TensorDictModuleBase, action_spec: TensorSpec
) -> TensorDictModuleBase:
    """What the collector runs: a stochastic actor as it is (it samples), a deterministic one
    behind fixed Gaussian noise of ``actor.exploration_sigma`` (relative to the action range).
    ``sac_tr.accel.accelerate_policy`` may then stand a proven-equal fast policy in for it."""
    if hasattr(actor, "get_dist"):
        return actor
    return make_gaussian_exploration(actor, action_spec, sigma=cfg.actor.exploration_sigma)


def make_loss_from_config(
    cfg: DictConfig,
    actor: TensorDictModuleBase,
    action_spec: TensorSpec,
    observation_dim: int,
    notes: list[str] | None = None,
) -> LossModule:
    """The loss chosen by ``cfg.loss`` (built-in or ``loss.target``), holding the actor, the
    critic (``cfg.critic``), the value network (``cfg.value``) if it takes one, and their
    targets; its discount set from the config's ``loss.gamma``. Each call is noted in ``notes``."""
    action_dim = int(action_spec.shape[-1])
    qvalue = _build(cfg, "critic", observation_dim, action_dim, notes=notes)
    value = Lazy(lambda: _build(cfg, "value", observation_dim, notes=notes))
    loss = _build(
        cfg, "loss", actor, qvalue, notes=notes, action_spec=action_spec, value_network=value
    )
    loss.make_value_estimator(gamma=cfg.loss.gamma)
    unused = _value_settings(cfg)
    if not value.built and unused and notes is not None:  # said, not silently dropped
        notes.append(
            f"value: none built, the loss takes no value network: {', '.join(unused)} unused"
        )
    return loss


def _value_settings(cfg: DictConfig) -> list[str]:
    """The ``value.*`` keys set away from their defaults: a builder, its ``kwargs``, hidden
    sizes other than the critic's (which they follow by default)."""
    node = _node(cfg, "value")
    if node is cfg.critic:  # a config from before the value group: nothing of its own
        return []
    unused = [f"value.{key}" for key in ("target", "kwargs") if node.get(key)]
    if list(node.hidden_sizes) != list(cfg.critic.hidden_sizes):
        unused.append("value.hidden_sizes")
    return unused


def _half_range(action_spec: TensorSpec) -> float:
    return float(((action_spec.space.high - action_spec.space.low) / 2).mean())
