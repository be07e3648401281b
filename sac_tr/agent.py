"""Assemble a SAC agent from a config: networks, loss, optimizer, target updater, update step."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch._inductor.config
from omegaconf import DictConfig
from tensordict import TensorDictBase
from tensordict.nn import CudaGraphModule, TensorDictModuleBase
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
from sac_tr.faults import NonFiniteError, batch_statistics, first_nonfinite_loss, loss_finite_flags
from sac_tr.modes import ModeSwitch, loss_networks
from sac_tr.targets import BatchedSoftUpdate, make_target_updater

__all__ = [
    "SACAgent",
    "check_dtypes",
    "defers_fault_checks",
    "make_agent",
    "make_optimizer",
    "update",
]

CUDAGRAPH_WARMUP = 5  # eager (then compiled) calls of an update before CUDA graph capture


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
    policy: TensorDictModuleBase | None = None  # what the collector runs (actor + exploration)
    policy_delay: int = 1  # TD3: update the actor and the targets every this many steps
    # Which path each network takes ("Q": "accelerated" / "reference path (<reason>)", ...).
    paths: dict[str, str] = field(default_factory=dict)
    act_in_train_mode: bool = False  # the collector's policy acts in train mode (default: eval)
    notes: list[str] = field(default_factory=list)  # how each part was built, printed at start
    # NaN/inf losses flagged on the device and read by read_faults() (see update()); on CUDA,
    # where a read per update would make the host wait for the forward pass.
    defer_fault_checks: bool = False
    check_inputs: bool = True  # the loss checks each batch's keys, shapes and finiteness
    # compile=true: the whole update (loss, backward, optimizer, target update) through
    # torch.compile; cudagraphs=true: captured in a CUDA graph (both with defer_fault_checks).
    compile_update: bool = False
    cudagraphs: bool = False
    _steps: dict = field(default_factory=dict, init=False, repr=False)  # delayed -> update fn
    # With defer_fault_checks: per loss_* entry, then any, the batches that were NaN/inf.
    _fault_names: list[str] = field(default_factory=list, init=False, repr=False)
    _fault_counts: torch.Tensor | None = field(default=None, init=False, repr=False)
    # 0-dim bool: the last update's losses were finite (defer_fault_checks)
    last_finite: torch.Tensor | None = field(default=None, init=False, repr=False)

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

    def check_batch(self, batch: TensorDictBase) -> None:
        """The loss's input check, run here (eagerly) when the loss does not run it itself
        because its forward is compiled or captured."""
        check = getattr(self.loss, "_check_inputs", None)  # TorchRL's TD3/DDPG losses have none
        if check is not None and self.check_inputs and not getattr(self.loss, "validate_inputs", 1):
            check(batch)

    def deferred_update(self, delayed: bool) -> Callable[[TensorDictBase], TensorDictBase]:
        """The update without host reads for a batch (``_deferred_update``), compiled and/or
        captured as asked; one function per kind of step (TD3: with and without the actor)."""
        step = self._steps.get(delayed)
        if step is None:
            step = functools.partial(_deferred_update, self, delayed)
            if self.compile_update:
                step = torch.compile(step)
            if self.cudagraphs:  # as TorchRL's SAC example captures its update
                step = CudaGraphModule(step, in_keys=[], out_keys=[], warmup=CUDAGRAPH_WARMUP)
            self._steps[delayed] = step
        return step

    def skip_input_checks(self) -> None:
        """Stop checking each batch in the loss (its finiteness test is a host read): for a
        caller that screens every transition before storing it, as ``TrainingRun`` does."""
        self.check_inputs = False
        if hasattr(self.loss, "validate_inputs"):
            self.loss.validate_inputs = False

    def flag_faults(self, losses: TensorDictBase) -> torch.Tensor:
        """Tally which ``loss_*`` entries of ``losses`` are NaN/inf, on the device; returns
        ``found_inf``, 1. if any is (0. otherwise), as a 0-dim float32 tensor. No host read."""
        names, finite = loss_finite_flags(losses)
        any_bad = (~finite).any()
        counts = torch.cat([~finite, any_bad.reshape(1)]).to(torch.int64)
        if self._fault_counts is None or self._fault_names != names:
            self._fault_names, self._fault_counts = names, torch.zeros_like(counts)
        self._fault_counts += counts
        return any_bad.to(torch.float32)

    def read_faults(self) -> tuple[int, dict[str, int]]:
        """With ``defer_fault_checks``: the number of batches skipped for a NaN/inf loss since the
        last read, and how many times each loss was NaN/inf (one host read); resets both."""
        if self._fault_counts is None:
            return 0, {}
        counts = self._fault_counts.tolist()
        self._fault_counts.zero_()
        named = {name: n for name, n in zip(self._fault_names, counts[:-1], strict=True) if n}
        return counts[-1], named


def check_dtypes(loss: torch.nn.Module, observation_dtype: torch.dtype) -> None:
    """Raise ``ValueError`` before training when a network's parameters are not in the
    observations' dtype: the losses give the networks the observations as they come, and the
    first update would stop on a bare dtype mismatch (on either path)."""
    for name, param in loss.named_parameters():
        if param.is_floating_point() and param.dtype != observation_dtype:
            raise ValueError(
                f"The loss's parameter {name!r} is {param.dtype}, but the environment's "
                f"observations are {observation_dtype}. Build every network in "
                f"{observation_dtype} (leave out .double() / .to(dtype)), or cast the "
                "observations to the networks' dtype with a TorchRL transform "
                "(DTypeCastTransform) in your environment."
            )


def make_agent(
    env: EnvBase, cfg: DictConfig, device: torch.device | str, accelerate_mode: str | None = None
) -> SACAgent:
    """Build the agent for ``env`` from ``cfg.actor``, ``cfg.critic``, ``cfg.loss``
    (``sac_v1``, ``sac_v2``, ``sac_deterministic``, ``td3``, ``ddpg`` or a user's class),
    ``cfg.optim`` and ``cfg.target_update`` (see ``sac_tr.components``).

    ``accelerate_mode`` (default ``cfg.accelerate``, else ``auto``): ``auto`` installs the fast
    evaluators proven equal to each network, ``on`` raises when a network cannot be accelerated,
    ``off`` runs every network through its own module; ``agent.paths`` says which path each took.
    """
    mode = accelerate_mode or cfg.get("accelerate", "auto")
    device = torch.device(device)  # a name ("cpu", "cuda:0") is fine too
    obs_dim = observation_dim(env)
    # The bounds on the training device, as TorchRL's SAC builds its networks: the actor's
    # distribution, TD3's noise clip and the exploration noise then read them where they run.
    action_spec = env.action_spec.to(device)
    notes: list[str] = []
    actor = make_actor_from_config(cfg, action_spec, obs_dim, notes)
    loss = make_loss_from_config(cfg, actor, action_spec, obs_dim, notes).to(device)
    check_dtypes(loss, env.observation_spec["observation"].dtype)
    actor = actor.to(device)
    paths = accelerate(loss, mode)  # after .to(device): the probe runs where the loss will
    policy, paths["policy"] = accelerate_policy(
        make_collector_policy(cfg, actor, action_spec.to(device)), mode
    )
    # Fused Adam: it skips its step on a device flag (found_inf), so the whole update can be
    # compiled or captured without a host read between the forward pass and the step.
    optimizer = make_optimizer(loss, cfg.optim, notes)
    cudagraphs = bool(cfg.get("cudagraphs", False))
    if cudagraphs:
        if device.type != "cuda":
            raise ValueError(
                f"cudagraphs=true needs the update on a CUDA device (it is on {device}): "
                f"set device=cuda, or cudagraphs=false."
            )
        for group in optimizer.param_groups:
            group["capturable"] = True  # the step's arithmetic on the device, as capture needs
    whole = bool(cfg.compile)
    if whole or cudagraphs:
        if hasattr(loss, "validate_inputs"):
            loss.validate_inputs = False  # checked eagerly by SACAgent.check_batch instead
    if whole:
        # Draw random numbers from torch's generator, as eager does: the same seed then gives the
        # same run with or without compile (inductor's own RNG would not).
        torch._inductor.config.fallback_random = True
    return SACAgent(
        actor=actor,
        loss=loss,
        optimizer=optimizer,
        target_updater=make_target_updater(
            loss,
            cfg.target_update.kind,
            tau=cfg.target_update.tau,
            hard_update_every=cfg.target_update.hard_update_every,
        ),
        policy=policy,
        policy_delay=int(cfg.loss.get("policy_delay", 1)),
        paths=paths,
        act_in_train_mode=bool(cfg.collector.get("act_in_train_mode", False)),
        notes=notes,
        defer_fault_checks=defers_fault_checks(device, optimizer) or whole or cudagraphs,
        compile_update=whole,
        cudagraphs=cudagraphs,
    )


def defers_fault_checks(device: torch.device, optimizer: torch.optim.Optimizer) -> bool:
    """Whether the update flags NaN/inf losses on the device instead of reading them per update:
    on CUDA, with an optimizer that can skip its step on a device flag (``found_inf``, as
    ``GradScaler`` uses it: fused Adam). On the CPU the read costs nothing."""
    return device.type == "cuda" and getattr(optimizer, "_step_supports_amp_scaling", False)


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
    With ``agent.defer_fault_checks`` (CUDA, ``compile``, ``cudagraphs``) nothing is read on the
    host: the flag stays on the device, the optimizer skips its step on it (``found_inf``:
    parameters, moments and step counts stay as they were), the soft target update takes
    weight 0, the losses are returned whatever they are, ``agent.last_finite`` says whether
    they were finite and ``agent.read_faults()`` tells later (``skip_nonfinite`` is then the
    caller's to apply, as ``TrainingRun`` does at log time).

    ``step`` (the number of updates done before this one) times TD3's delayed policy updates:
    with ``agent.policy_delay = d``, the actor and the targets move on steps d-1, 2d-1, ...

    The networks run in train mode (``agent.train_mode()``).

    Returns the loss TensorDict detached (for logging).
    """
    agent.train_mode()
    # TD3's delayed policy updates: the actor and the targets move every policy_delay steps.
    delayed = agent.policy_delay > 1 and step % agent.policy_delay != agent.policy_delay - 1
    if agent.defer_fault_checks:
        agent.check_batch(batch)
        out = agent.deferred_update(delayed)(batch)
        agent.last_finite = out.get("finite")
        return out.exclude("finite")
    out = agent.loss(batch)
    bad = first_nonfinite_loss(out)  # one host read; nothing has changed yet
    if bad is not None:
        if skip_nonfinite:
            return None
        raise NonFiniteError(
            f"{bad} is {float(out.get(bad)):.4g}. The batch:\n{batch_statistics(batch)}"
        )
    _learn(agent, out, delayed)
    return out.detach()


def _deferred_update(agent: SACAgent, delayed: bool, batch: TensorDictBase) -> TensorDictBase:
    """``update`` without a host read: the losses, their NaN/inf flag (tallied on the device),
    the step, skipped by the optimizer on the flag, and the target update, weight 0 then.
    Returns the losses detached, with ``"finite"`` (0-dim bool)."""
    out = agent.loss(batch)
    found_inf = agent.flag_faults(out)
    _learn(agent, out, delayed, found_inf)
    out = out.detach()
    out.set("finite", found_inf == 0)
    return out


def _learn(
    agent: SACAgent, out: TensorDictBase, delayed: bool, found_inf: torch.Tensor | None = None
) -> None:
    """Backward through the losses of ``out``, the optimizer step (skipped when ``found_inf``
    is 1.), the target update unless ``delayed``."""
    total = sum(
        value
        for key, value in out.items()
        if key.startswith("loss_") and not (delayed and key == "loss_actor")
    )
    agent.optimizer.zero_grad(set_to_none=True)
    total.backward()
    if delayed:  # no gradient, not a zero one: a compiled backward gives every input a gradient,
        for p in agent.loss.actor_network_params.values(True, True):  # and Adam would count a
            p.grad = None  # zero gradient as a step of the actor (its bias correction then moves)
    if found_inf is not None:
        agent.optimizer.found_inf = found_inf  # fused Adam skips the whole step when it is 1.
    try:
        agent.optimizer.step()  # parameters without a gradient (the delayed actor) do not move
    finally:
        agent.optimizer.__dict__.pop("found_inf", None)
    if not delayed:
        if found_inf is not None and isinstance(agent.target_updater, BatchedSoftUpdate):
            agent.target_updater.step(moved=1 - found_inf)  # weight 0 after a skipped step
        else:  # (a hard copy after a skipped step copies the unchanged parameters)
            agent.target_updater.step()  # psibar <- tau psi + (1 - tau) psibar
