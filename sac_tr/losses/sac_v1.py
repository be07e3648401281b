"""The SAC-v1 loss: value network, twin soft Q-functions and a stochastic actor.

Haarnoja, Zhou, Abbeel, Levine (2018), "Soft Actor-Critic: Off-Policy Maximum Entropy Deep
Reinforcement Learning with a Stochastic Actor", arXiv:1801.01290. Equation numbers below are
the paper's; ``../shared/SAC_NOTES.md`` writes them out.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from tensordict import TensorDict, TensorDictBase, TensorDictParams
from tensordict.nn import ProbabilisticTensorDictSequential, TensorDictModule
from tensordict.utils import NestedKey
from torchrl.objectives import LossModule, ValueEstimators
from torchrl.objectives.utils import _cache_values, _vmap_func, dispatch_value_estimator
from torchrl.objectives.value.functional import td0_return_estimate

__all__ = ["SACv1Loss"]


def _independent_copies(module: TensorDictModule, n: int) -> list[TensorDictModule]:
    """``n`` copies of ``module``, each re-initialised, so the Q-functions start independent."""
    copies = [module]
    for _ in range(n - 1):
        clone = copy.deepcopy(module)
        for sub in clone.modules():
            if sub is not clone and hasattr(sub, "reset_parameters"):
                sub.reset_parameters()
        copies.append(clone)
    return copies


class SACv1Loss(LossModule):
    """The paper's SAC loss with a state-value network V_psi and a target value network V_psibar.

    For a batch ``(s, a, r, s', terminated)`` and a fresh reparameterised action
    ``a~ = f_phi(eps; s)`` drawn once and shared by the value and actor terms:

    * ``loss_value  = mean(1/2 (V_psi(s) - [min_i Q_i(s, a~) - alpha log pi(a~|s)])^2)``   (eq. 5)
    * ``loss_qvalue = sum_i mean(1/2 (Q_i(s, a) - [c r + gamma (1 - terminated) V_psibar(s')])^2)``
      (eqs. 7-8, ``c`` the reward scale)
    * ``loss_actor  = mean(alpha log pi(a~|s) - min_i Q_i(s, a~))``                          (eq. 12)

    Each loss reaches only its own network: the value target and the Q parameters inside the
    actor loss are detached, and the target ``V_psibar`` never receives a gradient. Bootstrapping
    stops only at ``("next", "terminated")``; a time-limit truncation still bootstraps.

    The target value parameters live in ``target_value_network_params`` and are moved by
    ``torchrl.objectives.SoftUpdate`` (tau) or ``HardUpdate`` (every N steps), never by the loss.

    Args:
        actor_network: a ``ProbabilisticActor`` with a ``TanhNormal`` head (see ``make_actor``).
        qvalue_network: one Q module (copied and re-initialised ``num_qvalue_nets`` times) or a
            list of ``num_qvalue_nets`` Q modules with the same architecture.
        value_network: the state-value module V_psi.

    Keyword Args:
        num_qvalue_nets: size of the Q ensemble (the paper uses 2).
        alpha: temperature (the paper fixes 1 and tunes the reward scale instead).
        reward_scale: multiplies the reward in the Q target (eq. 8); the paper's per-task knob.
        validate_inputs: check keys, shapes and reward finiteness on every call (cheap on CPU;
            one host sync on GPU).

    The discount is set with ``loss.make_value_estimator(gamma=...)`` (default 0.99).
    """

    @dataclass
    class _AcceptedKeys:
        """TensorDict keys the loss reads and writes; change them with ``loss.set_keys``.

        Attributes:
            action: the replayed action (and where the fresh action is written for Q).
            value: output key of the value network.
            state_action_value: output key of the Q network.
            reward, done, terminated: read under ``"next"``.
            priority: written with ``max_i |Q_i(s,a) - Qhat|`` for prioritized replay.
        """

        action: NestedKey = "action"
        value: NestedKey = "state_value"
        state_action_value: NestedKey = "state_action_value"
        reward: NestedKey = "reward"
        done: NestedKey = "done"
        terminated: NestedKey = "terminated"
        priority: NestedKey = "td_error"

    default_keys = _AcceptedKeys
    tensor_keys: _AcceptedKeys
    default_value_estimator = ValueEstimators.TD0
    _value_estimator_default_keys = ("value", "reward", "done", "terminated")

    actor_network: ProbabilisticTensorDictSequential
    qvalue_network: TensorDictModule
    value_network: TensorDictModule
    actor_network_params: TensorDictParams
    qvalue_network_params: TensorDictParams
    value_network_params: TensorDictParams
    target_actor_network_params: TensorDictParams
    target_qvalue_network_params: TensorDictParams
    target_value_network_params: TensorDictParams

    def __init__(
        self,
        actor_network: ProbabilisticTensorDictSequential,
        qvalue_network: TensorDictModule | list[TensorDictModule],
        value_network: TensorDictModule,
        *,
        num_qvalue_nets: int = 2,
        alpha: float = 1.0,
        reward_scale: float = 1.0,
        validate_inputs: bool = True,
    ) -> None:
        if not isinstance(num_qvalue_nets, int) or num_qvalue_nets < 1:
            raise ValueError(
                f"num_qvalue_nets must be a positive integer, got {num_qvalue_nets!r}."
            )
        if not (float(alpha) > 0 and torch.isfinite(torch.tensor(float(alpha)))):
            raise ValueError(f"alpha (the temperature) must be a finite number > 0, got {alpha!r}.")
        if not (float(reward_scale) > 0 and torch.isfinite(torch.tensor(float(reward_scale)))):
            raise ValueError(f"reward_scale must be a finite number > 0, got {reward_scale!r}.")
        if not hasattr(actor_network, "get_dist"):
            raise TypeError(
                "actor_network must be a probabilistic actor with get_dist() "
                "(e.g. sac_tr.modules.make_actor), got " + type(actor_network).__name__
            )
        self._in_keys = None
        super().__init__()
        self.validate_inputs = validate_inputs
        self.num_qvalue_nets = num_qvalue_nets

        self.convert_to_functional(actor_network, "actor_network", create_target_params=False)
        self.convert_to_functional(value_network, "value_network", create_target_params=True)
        if isinstance(qvalue_network, (list, tuple)):
            if len(qvalue_network) != num_qvalue_nets:
                raise ValueError(
                    f"Got {len(qvalue_network)} Q modules but num_qvalue_nets={num_qvalue_nets}."
                )
            q_modules = list(qvalue_network)
        else:
            q_modules = _independent_copies(qvalue_network, num_qvalue_nets)
        self.convert_to_functional(
            q_modules, "qvalue_network", num_qvalue_nets, create_target_params=False
        )
        device = next(iter(self.actor_network_params.values(True, True))).device
        self.register_buffer("alpha", torch.tensor(float(alpha), device=device))
        self.register_buffer("reward_scale", torch.tensor(float(reward_scale), device=device))
        # Read the action key from the actor, as TorchRL's SACLoss does; set_keys can override it.
        sample_keys = getattr(actor_network, "dist_sample_keys", None) or [self.tensor_keys.action]
        self.set_keys(action=sample_keys[0])
        spec = getattr(actor_network, "spec", None)
        self._action_dim = int(spec[sample_keys[0]].shape[-1]) if spec is not None else None
        self._make_vmap()

    def _make_vmap(self) -> None:
        # One call evaluates every Q-function: parameters stacked on dim 0, input shared.
        self._vmap_qvalue = _vmap_func(
            self.qvalue_network, (None, 0), randomness=self.vmap_randomness
        )

    # ------------------------------------------------------------------ TorchRL plumbing
    def make_value_estimator(self, value_type: ValueEstimators | None = None, **hyperparams):
        """Set the discount: ``loss.make_value_estimator(gamma=0.99)``. Only TD(0) is the paper's."""
        value_type, hp = self._prepare_value_estimator_kwargs(value_type, **hyperparams)
        if value_type is None:
            return self
        dispatch_value_estimator(
            self,
            value_type,
            supported=(ValueEstimators.TD0,),
            tensor_keys={
                "value": self.tensor_keys.value,
                "reward": self.tensor_keys.reward,
                "done": self.tensor_keys.done,
                "terminated": self.tensor_keys.terminated,
            },
            value_network=self.value_network,
            **hp,
        )
        return self

    def _set_in_keys(self) -> None:
        keys = [
            self.tensor_keys.action,
            ("next", self.tensor_keys.reward),
            ("next", self.tensor_keys.terminated),
            *self.actor_network.in_keys,
            *self.qvalue_network.in_keys,
            *self.value_network.in_keys,
            *[("next", key) for key in self.value_network.in_keys],
        ]
        self._in_keys = list(dict.fromkeys(keys))

    @property
    def in_keys(self) -> list[NestedKey]:
        if self._in_keys is None:
            self._set_in_keys()
        return self._in_keys

    @in_keys.setter
    def in_keys(self, values: list[NestedKey]) -> None:
        self._in_keys = values

    @property
    def out_keys(self) -> list[str]:
        return [
            "loss_actor",
            "loss_qvalue",
            "loss_value",
            "alpha",
            "entropy",
            "q_value",
            "state_value",
            "target_value",
        ]

    @property
    @_cache_values
    def _detached_qvalue_params(self) -> TensorDictBase:
        # Shares storage with the live parameters, so it stays current after optimizer steps.
        return self.qvalue_network_params.detach()

    @property
    def discount(self) -> torch.Tensor:
        """The discount gamma of the value estimator (``make_value_estimator(gamma=...)``)."""
        return self.value_estimator.gamma

    # ------------------------------------------------------------------ input checks
    def _check_inputs(self, td: TensorDictBase) -> None:
        batch = tuple(td.batch_size)
        for key in self.in_keys:
            if key not in td.keys(include_nested=True):
                raise KeyError(
                    f"SACv1Loss: the input TensorDict has no key {key!r}. It needs "
                    f"{self.in_keys}; rename yours with loss.set_keys(...) or the module keys."
                )
        for name in ("reward", "terminated"):
            key = ("next", getattr(self.tensor_keys, name))
            shape = tuple(td.get(key).shape)
            if shape != (*batch, 1):
                raise ValueError(
                    f"SACv1Loss: {key!r} has shape {shape}, expected {(*batch, 1)} "
                    "(batch dims followed by a trailing 1, as TorchRL environments write it)."
                )
        action = td.get(self.tensor_keys.action)
        if tuple(action.shape[:-1]) != batch or (
            self._action_dim is not None and action.shape[-1] != self._action_dim
        ):
            raise ValueError(
                f"SACv1Loss: {self.tensor_keys.action!r} has shape {tuple(action.shape)}, "
                f"expected {(*batch, self._action_dim)}."
            )
        reward = td.get(("next", self.tensor_keys.reward))
        if not torch.isfinite(reward).all():
            raise ValueError(
                f"SACv1Loss: ('next', {self.tensor_keys.reward!r}) holds NaN or inf "
                f"({int((~torch.isfinite(reward)).sum())} entries); check the environment's rewards."
            )

    # ------------------------------------------------------------------ the three losses
    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        """Compute ``loss_actor``, ``loss_qvalue``, ``loss_value`` and detached diagnostics.

        Args:
            tensordict: a batch of transitions of any batch shape ``[*B]``.

        Returns:
            A TensorDict with batch size ``[]``: the three scalar losses (to be summed or
            stepped separately) and ``alpha``, ``entropy``, ``q_value``, ``state_value``,
            ``target_value``, which carry no gradient.
        """
        if self.validate_inputs:
            self._check_inputs(tensordict)
        keys = self.tensor_keys

        # a~ = f_phi(eps; s), reparameterised (eq. 11), scored from the pre-tanh sample (eq. 21).
        actor_in = tensordict.select(*self.actor_network.in_keys)
        with self.actor_network_params.to_module(self.actor_network, preserve_module_state=False):
            dist = self.actor_network.get_dist(actor_in)
        fresh_action, log_prob = dist.rsample_and_log_prob()  # [*B, dA], [*B]

        # min_i Q_i(s, a~) with the Q parameters detached: the actor's gradient flows through a~.
        q_in = tensordict.select(*self.qvalue_network.in_keys, strict=False)
        q_in.set(keys.action, fresh_action)
        q_fresh = self._vmap_qvalue(q_in, self._detached_qvalue_params)
        min_q_fresh = q_fresh.get(keys.state_action_value).squeeze(-1).min(0).values  # [*B]

        loss_actor = (self.alpha * log_prob - min_q_fresh).mean()  # eq. 12

        # eq. 5: the soft value target uses the same a~, with no gradient into Q or pi.
        value_target = (min_q_fresh - self.alpha * log_prob).detach()
        value_in = tensordict.select(*self.value_network.in_keys)
        with self.value_network_params.to_module(self.value_network, preserve_module_state=False):
            state_value = self.value_network(value_in).get(keys.value).squeeze(-1)
        loss_value = 0.5 * (state_value - value_target).pow(2).mean()

        # eq. 8: Qhat = c r + gamma (1 - terminated) V_psibar(s'); truncation still bootstraps.
        with torch.no_grad():
            next_in = tensordict.get("next").select(*self.value_network.in_keys)
            with self.target_value_network_params.to_module(
                self.value_network, preserve_module_state=False
            ):
                next_value = self.value_network(next_in).get(keys.value)  # [*B, 1]
            q_target = td0_return_estimate(
                gamma=self.discount,
                next_state_value=next_value,
                reward=self.reward_scale * tensordict.get(("next", keys.reward)),
                terminated=tensordict.get(("next", keys.terminated)),
            ).squeeze(-1)

        # eq. 7, one term per Q-function, summed over the ensemble.
        q_replay_in = tensordict.select(*self.qvalue_network.in_keys)
        q_pred = self._vmap_qvalue(q_replay_in, self.qvalue_network_params)
        q_pred = q_pred.get(keys.state_action_value).squeeze(-1)  # [N, *B]
        td_error = q_pred - q_target
        loss_qvalue = 0.5 * td_error.pow(2).flatten(1).mean(1).sum(0)

        tensordict.set(keys.priority, td_error.detach().abs().max(0).values)
        return TensorDict(
            {
                "loss_actor": loss_actor,
                "loss_qvalue": loss_qvalue,
                "loss_value": loss_value,
                "alpha": self.alpha.detach(),
                "entropy": -log_prob.detach().mean(),
                "q_value": q_pred.detach().mean(),
                "state_value": state_value.detach().mean(),
                "target_value": q_target.mean(),
            },
            batch_size=[],
        )

    def extra_repr(self) -> str:
        return (
            f"num_qvalue_nets={self.num_qvalue_nets}, alpha={float(self.alpha)}, "
            f"reward_scale={float(self.reward_scale)}"
        )
