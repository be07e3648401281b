"""Assemble a SAC agent from a config: networks, loss, optimizer, target updater, update step."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch._inductor.config
from omegaconf import DictConfig
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torchrl.envs import EnvBase
from torchrl.objectives import LossModule
from torchrl.objectives.utils import TargetNetUpdater

from sac_tr.accel import accelerate, accelerate_policy
from sac_tr.components import (
    make_actor_from_config,
    make_collector_policy,
    make_loss_from_config,
)
from sac_tr.envs import observation_dim
from sac_tr.faults import NonFiniteError, batch_statistics, first_nonfinite_loss
from sac_tr.modes import ModeSwitch, loss_networks
from sac_tr.targets import make_target_updater

__all__ = ["SACAgent", "make_agent", "make_optimizer", "update"]


@dataclass
class SACAgent:
    """Everything that learns: the policy (also used by the collector), the loss holding every
    network and target, one optimizer over all of them, and the target updater.

    Modes: ``update`` puts every network in train mode (``train_mode``); the training loop puts
    them back in acting mode (``act_mode``: eval, or train with ``act_in_train_mode``) before the
    collector acts again. Evaluation and videos use eval mode (``sac_tr.evaluation``).
    """

    actor: TensorDictModuleBase
    loss: LossModule
    optimizer: torch.optim.Optimizer
    target_updater: TargetNetUpdater
    compiled_loss: Callable[[TensorDictBase], TensorDictBase] | None = None
    policy: TensorDictModuleBase | None = None  # what the collector runs (actor + exploration)
    policy_delay: int = 1  # TD3: update the actor and the targets every this many steps
    # Which path each network takes ("Q": "accelerated" / "reference path (<reason>)", ...).
    paths: dict[str, str] = field(default_factory=dict)
    act_in_train_mode: bool = False  # the collector's policy acts in train mode (default: eval)
    notes: list[str] = field(default_factory=list)  # how each part was built, printed at start

    def __post_init__(self) -> None:
        if self.policy is None:
            self.policy = self.actor
        self._switch = ModeSwitch(*loss_networks(self.loss), self.policy)
        self._mode: str | None = None
        self.act_mode()

    def train_mode(self) -> None:
        """Every network of the loss (and the policy) in train mode, as updates run them."""
        if self._mode != "train":
            self._switch(True)
            self._mode = "train"

    def act_mode(self) -> None:
        """The networks as the collector acts with them: eval mode, or train mode with
        ``act_in_train_mode`` (then Dropout draws masks and BatchNorm uses the acting batch)."""
        if self._mode != "act":
            self._switch(self.act_in_train_mode)
            self._mode = "act"

    def losses(self, batch: TensorDictBase) -> TensorDictBase:
        """The loss TensorDict of ``batch``, through the compiled forward when there is one
        (inputs are then checked here, eagerly, since the check reads values on the host)."""
        if self.compiled_loss is None:
            return self.loss(batch)
        check = getattr(self.loss, "_check_inputs", None)  # TorchRL's TD3/DDPG losses have none
        if check is not None:
            check(batch)
        return self.compiled_loss(batch)


def make_agent(
    env: EnvBase, cfg: DictConfig, device: torch.device, accelerate_mode: str | None = None
) -> SACAgent:
    """Build the agent for ``env`` from ``cfg.actor``, ``cfg.critic``, ``cfg.loss``
    (``sac_v1``, ``sac_v2``, ``sac_deterministic``, ``td3``, ``ddpg`` or a user's class),
    ``cfg.optim`` and ``cfg.target_update`` (see ``sac_tr.components``).

    ``accelerate_mode`` (default ``cfg.accelerate``, else ``auto``): ``auto`` installs the fast
    evaluators proven equal to each network, ``on`` raises when a network cannot be accelerated,
    ``off`` runs every network through its own module; ``agent.paths`` says which path each took.
    """
    mode = accelerate_mode or cfg.get("accelerate", "auto")
    obs_dim = observation_dim(env)
    # The bounds on the training device, as TorchRL's SAC builds its networks: the actor's
    # distribution, TD3's noise clip and the exploration noise then read them where they run.
    action_spec = env.action_spec.to(device)
    notes: list[str] = []
    actor = make_actor_from_config(cfg, action_spec, obs_dim, notes)
    loss = make_loss_from_config(cfg, actor, action_spec, obs_dim, notes).to(device)
    actor = actor.to(device)
    paths = accelerate(loss, mode)  # after .to(device): the probe runs where the loss will
    policy, paths["policy"] = accelerate_policy(
        make_collector_policy(cfg, actor, action_spec.to(device)), mode
    )
    compiled_loss = None
    if cfg.compile:
        if hasattr(loss, "validate_inputs"):
            loss.validate_inputs = False  # checked eagerly by SACAgent.losses instead
        # Draw random numbers from torch's generator, as eager does: the same seed then gives the
        # same run with or without compile (inductor's own RNG would not).
        torch._inductor.config.fallback_random = True
        compiled_loss = torch.compile(loss)
    return SACAgent(
        actor=actor,
        loss=loss,
        optimizer=make_optimizer(loss, cfg.optim, notes),
        target_updater=make_target_updater(
            loss,
            cfg.target_update.kind,
            tau=cfg.target_update.tau,
            hard_update_every=cfg.target_update.hard_update_every,
        ),
        compiled_loss=compiled_loss,
        policy=policy,
        policy_delay=int(cfg.loss.get("policy_delay", 1)),
        paths=paths,
        act_in_train_mode=bool(cfg.collector.get("act_in_train_mode", False)),
        notes=notes,
    )


def make_optimizer(
    loss: LossModule, optim_cfg: DictConfig, notes: list[str] | None = None
) -> torch.optim.Adam:
    """One Adam over every trainable parameter of ``loss`` except its target copies: a group
    per network with its learning rate (the paper: 3e-4 each), the temperature of SAC-v2, and
    one group at ``optim_cfg.lr_default`` for any other (a user's loss's own parameters), which
    are listed in ``notes``.

    One optimizer with a parameter group per network is the same update as one optimizer per
    network (Adam is per-parameter) and takes one ``step()`` call; fused Adam batches the
    arithmetic. (A single group holding everything measured 30x slower with fused Adam on
    torch 2.13, so the groups stay per network.)
    """
    # DDPG's critic is Q(s, a) but TorchRL names it value_network: it takes the Q rate.
    has_q = getattr(loss, "qvalue_network_params", None) is not None
    named = (
        ("actor_network_params", optim_cfg.lr_actor),
        ("qvalue_network_params", optim_cfg.lr_qvalue),
        ("value_network_params", optim_cfg.lr_value if has_q else optim_cfg.lr_qvalue),
        ("log_alpha", optim_cfg.lr_alpha),
    )
    trainable = {
        name: p
        for name, p in loss.named_parameters()
        if p.requires_grad and not _is_target(name.split(".")[0])
    }
    groups, taken = [], set()
    for prefix, lr in named:
        params = [p for name, p in trainable.items() if name.split(".")[0] == prefix]
        if params:
            groups.append({"params": params, "lr": lr})
            taken.update(map(id, params))
    rest = {name: p for name, p in trainable.items() if id(p) not in taken}
    if rest:
        lr = optim_cfg.get("lr_default", optim_cfg.lr_qvalue)
        groups.append({"params": list(rest.values()), "lr": lr})
    if notes is not None:
        listed = ", ".join(f"{n} {list(p.shape)}" for n, p in rest.items()) or "none"
        notes.append(
            f"optimizer: parameters outside the named networks (optim.lr_default): {listed}"
        )
    return torch.optim.Adam(groups, fused=True)


def _is_target(name: str) -> bool:
    """TorchRL's name for a target copy: ``target_<network>_params``."""
    return name.startswith("target_") and name.endswith("_params")


def update(
    agent: SACAgent, batch: TensorDictBase, *, skip_nonfinite: bool = False, step: int = 0
) -> TensorDictBase | None:
    """One gradient step of SAC on ``batch`` (Algorithm 1, inner loop), then the target update.

    The value, policy and Q gradients are all taken at the current parameters and applied
    together; this is the paper's update, because no loss reads a parameter another updates
    in the same step (Q's target is V_psibar, not V_psi).

    A NaN/inf loss is caught before any parameter moves: ``NonFiniteError`` (naming the loss,
    with the batch's statistics), or, with ``skip_nonfinite``, no step and ``None`` returned.

    ``step`` (the number of updates done before this one) times TD3's delayed policy updates:
    with ``agent.policy_delay = d``, the actor and the targets move on steps d-1, 2d-1, ...

    The networks run in train mode (``agent.train_mode()``).

    Returns the loss TensorDict detached (for logging).
    """
    agent.train_mode()
    out = agent.losses(batch)
    bad = first_nonfinite_loss(out)  # one host read; nothing has changed yet
    if bad is not None:
        if skip_nonfinite:
            return None
        raise NonFiniteError(
            f"{bad} is {float(out.get(bad)):.4g}. The batch:\n{batch_statistics(batch)}"
        )
    # TD3's delayed policy updates: the actor and the targets move every policy_delay steps.
    delayed = agent.policy_delay > 1 and step % agent.policy_delay != agent.policy_delay - 1
    total = sum(
        value
        for key, value in out.items()
        if key.startswith("loss_") and not (delayed and key == "loss_actor")
    )
    agent.optimizer.zero_grad(set_to_none=True)
    total.backward()
    agent.optimizer.step()  # parameters without a gradient (the delayed actor) do not move
    if not delayed:
        agent.target_updater.step()  # psibar <- tau psi + (1 - tau) psibar
    return out.detach()
