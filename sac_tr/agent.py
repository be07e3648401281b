"""Assemble a SAC agent from a config: networks, loss, optimizer, target updater, update step."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch._inductor.config
from omegaconf import DictConfig
from tensordict import TensorDictBase
from torch import nn
from torchrl.envs import EnvBase
from torchrl.modules import ProbabilisticActor
from torchrl.objectives import LossModule
from torchrl.objectives.utils import TargetNetUpdater

from sac_tr.envs import observation_dim
from sac_tr.faults import NonFiniteError, batch_statistics, first_nonfinite_loss
from sac_tr.losses import SACv1Loss, SACv2Loss
from sac_tr.modules import make_actor, make_qvalue, make_value
from sac_tr.targets import make_target_updater

__all__ = ["SACAgent", "make_agent", "make_optimizer", "update"]

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh, "elu": nn.ELU}


@dataclass
class SACAgent:
    """Everything that learns: the policy (also used by the collector), the loss holding every
    network and target, one optimizer over all of them, and the target updater."""

    actor: ProbabilisticActor
    loss: LossModule
    optimizer: torch.optim.Optimizer
    target_updater: TargetNetUpdater
    compiled_loss: Callable[[TensorDictBase], TensorDictBase] | None = None

    def losses(self, batch: TensorDictBase) -> TensorDictBase:
        """The loss TensorDict of ``batch``, through the compiled forward when there is one
        (inputs are then checked here, eagerly, since the check reads values on the host)."""
        if self.compiled_loss is None:
            return self.loss(batch)
        self.loss._check_inputs(batch)
        return self.compiled_loss(batch)


def make_agent(env: EnvBase, cfg: DictConfig, device: torch.device) -> SACAgent:
    """Build the SAC agent for ``env`` from ``cfg.network``, ``cfg.loss`` (``sac_v1`` or
    ``sac_v2``), ``cfg.optim`` and ``cfg.target_update``."""
    obs_dim = observation_dim(env)
    act_dim = int(env.action_spec.shape[-1])
    net = {
        "hidden_sizes": tuple(cfg.network.hidden_sizes),
        "activation": ACTIVATIONS[cfg.network.activation],
    }
    actor = make_actor(
        env.action_spec.to("cpu"),
        obs_dim,
        log_std_bounds=(cfg.network.log_std_min, cfg.network.log_std_max),
        **net,
    )
    qvalue = make_qvalue(obs_dim, act_dim, **net)
    if cfg.loss.name == "sac_v1":
        loss = SACv1Loss(
            actor,
            qvalue,
            make_value(obs_dim, **net),
            num_qvalue_nets=cfg.loss.num_qvalue_nets,
            alpha=cfg.loss.alpha,
            reward_scale=cfg.loss.reward_scale,
        )
    else:  # sac_v2 (validate_config admits no other name)
        loss = SACv2Loss(
            actor,
            qvalue,
            num_qvalue_nets=cfg.loss.num_qvalue_nets,
            alpha_init=cfg.loss.alpha_init,
            fixed_alpha=cfg.loss.fixed_alpha,
            target_entropy=cfg.loss.target_entropy,
            reward_scale=cfg.loss.reward_scale,
        )
    loss.make_value_estimator(gamma=cfg.loss.gamma)
    loss = loss.to(device)
    actor = actor.to(device)
    compiled_loss = None
    if cfg.compile:
        loss.validate_inputs = False  # checked eagerly by SACAgent.losses instead
        # Draw random numbers from torch's generator, as eager does: the same seed then gives the
        # same run with or without compile (inductor's own RNG would not).
        torch._inductor.config.fallback_random = True
        compiled_loss = torch.compile(loss)
    return SACAgent(
        actor=actor,
        loss=loss,
        optimizer=make_optimizer(loss, cfg.optim),
        target_updater=make_target_updater(
            loss,
            cfg.target_update.kind,
            tau=cfg.target_update.tau,
            hard_update_every=cfg.target_update.hard_update_every,
        ),
        compiled_loss=compiled_loss,
    )


def make_optimizer(loss: LossModule, optim_cfg: DictConfig) -> torch.optim.Adam:
    """One Adam over all networks (and the temperature of SAC-v2), a learning rate per network
    (the paper: 3e-4 each).

    One optimizer with a parameter group per network is the same update as one optimizer per
    network (Adam is per-parameter) and takes one ``step()`` call; ``foreach`` batches the
    arithmetic.
    """
    groups = [
        {"params": list(loss.actor_network_params.values(True, True)), "lr": optim_cfg.lr_actor},
        {"params": list(loss.qvalue_network_params.values(True, True)), "lr": optim_cfg.lr_qvalue},
    ]
    if getattr(loss, "value_network_params", None) is not None:
        groups.append(
            {"params": list(loss.value_network_params.values(True, True)), "lr": optim_cfg.lr_value}
        )
    if isinstance(getattr(loss, "log_alpha", None), nn.Parameter):
        groups.append({"params": [loss.log_alpha], "lr": optim_cfg.lr_alpha})
    return torch.optim.Adam(groups, fused=True)


def update(
    agent: SACAgent, batch: TensorDictBase, *, skip_nonfinite: bool = False
) -> TensorDictBase | None:
    """One gradient step of SAC on ``batch`` (Algorithm 1, inner loop), then the target update.

    The value, policy and Q gradients are all taken at the current parameters and applied
    together; this is the paper's update, because no loss reads a parameter another updates
    in the same step (Q's target is V_psibar, not V_psi).

    A NaN/inf loss is caught before any parameter moves: ``NonFiniteError`` (naming the loss,
    with the batch's statistics), or, with ``skip_nonfinite``, no step and ``None`` returned.

    Returns the loss TensorDict detached (for logging).
    """
    out = agent.losses(batch)
    bad = first_nonfinite_loss(out)  # one host read; nothing has changed yet
    if bad is not None:
        if skip_nonfinite:
            return None
        raise NonFiniteError(
            f"{bad} is {float(out.get(bad)):.4g}. The batch:\n{batch_statistics(batch)}"
        )
    total = sum(value for key, value in out.items() if key.startswith("loss_"))
    agent.optimizer.zero_grad(set_to_none=True)
    total.backward()
    agent.optimizer.step()
    agent.target_updater.step()  # psibar <- tau psi + (1 - tau) psibar
    return out.detach()
