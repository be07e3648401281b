"""What every SAC loss here shares: TorchRL's LossModule contract (keys, value estimator, functional
parameters), input checks, the reparameterised action sample and the batched Q ensemble.

Every network is evaluated through its own module (the reference path): the Q ensemble by
``vmap`` over TorchRL's stacked functional parameters, the value network by its own forward, the
actor through its own distribution (``get_dist``). A loss may hold optional fast evaluators
(``q_evaluator``, ``value_evaluator``, ``actor_sampler``, the protocols below), which replace one
network's evaluation when set; the losses never set them: ``sac_tr.accel.accelerate`` does, only
after proving on a probe batch that they compute what the module computes.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Protocol

import torch
from tensordict import TensorDictBase, TensorDictParams
from tensordict.nn import ProbabilisticTensorDictSequential, TensorDictModule
from tensordict.utils import NestedKey
from torch.nn.utils import parametrize
from torchrl.objectives import LossModule, ValueEstimators
from torchrl.objectives.utils import _cache_values, _vmap_func
from torchrl.objectives.value.functional import td0_return_estimate

from sac_tr.faults import all_finite

__all__ = [
    "ActionSampler",
    "QEnsembleEvaluator",
    "SACLossBase",
    "StateValueEvaluator",
    "check_positive",
]


class QEnsembleEvaluator(Protocol):
    """Stands in for the Q ensemble's ``vmap`` (``SACLossBase.q_evaluator``)."""

    def values(
        self, td: TensorDictBase, action: torch.Tensor | None, params: TensorDictBase
    ) -> torch.Tensor:
        """``Q_i(s, a)`` for every member, ``[N, *B]``; ``action=None``: the replayed action."""

    def replayed_and_fresh(
        self, td: TensorDictBase, fresh_action: torch.Tensor, params: TensorDictBase
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``Q_i(s, a)`` (gradients to ``params``) and ``Q_i(s, a~)`` (gradients to ``a~`` only)."""


class StateValueEvaluator(Protocol):
    """Stands in for the value network's forward (``SACv1Loss.value_evaluator``)."""

    def values(self, td: TensorDictBase, params: TensorDictBase) -> torch.Tensor:
        """``V(s)``, ``[*B]``."""


class ActionSampler(Protocol):
    """Stands in for ``actor.get_dist(...).rsample_and_log_prob()`` (``SACLossBase.actor_sampler``),
    drawing the same noise in the same order."""

    def sample(
        self, td: TensorDictBase, params: TensorDictBase
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(a~, log pi(a~|s))``, ``[*B, dA]`` and ``[*B]``."""

    def sample_pair(
        self, td: TensorDictBase, next_td: TensorDictBase, params: TensorDictBase
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``sample(td)``, then ``sample(next_td)`` detached."""


def check_positive(name: str, value: float) -> None:
    """Raise ``ValueError`` unless ``value`` is a finite number > 0."""
    if not (float(value) > 0 and torch.isfinite(torch.tensor(float(value)))):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}.")


def _independent_copies(module: TensorDictModule, n: int) -> list[TensorDictModule]:
    """``n`` copies of ``module``, each re-initialised, so the Q-functions start independent."""
    copies = [module]
    for _ in range(n - 1):
        try:
            clone = copy.deepcopy(module)
        except RuntimeError as err:  # e.g. torch.nn.utils.weight_norm's computed weight
            raise ValueError(
                f"The Q network cannot be copied for the ensemble of {n} Q-functions: {err}. "
                "A weight computed in a forward pre-hook (the old torch.nn.utils.weight_norm or "
                "spectral_norm) cannot be deep-copied: give the loss a list of num_qvalue_nets "
                "Q modules built independently, one per Q-function."
            ) from err
        for sub in clone.modules():
            if sub is clone or not hasattr(sub, "reset_parameters"):
                continue
            if parametrize.is_parametrized(sub):
                _reset_through_parametrizations(sub)
            else:
                sub.reset_parameters()
        copies.append(clone)
    return copies


def _reset_through_parametrizations(layer: torch.nn.Module) -> None:
    """Re-initialise a parametrized layer (e.g. ``parametrizations.weight_norm``): its own
    ``reset_parameters`` writes into the computed weight, recomputed at the next access, and
    leaves the stored originals, so the copy would start equal to the module it copies. Here it
    writes into the cached computed weight, which is then assigned back through each
    parametrization's ``right_inverse``."""
    with torch.no_grad():
        with parametrize.cached():
            layer.reset_parameters()
            fresh = {name: getattr(layer, name).clone() for name in layer.parametrizations}
        for name, value in fresh.items():
            try:
                setattr(layer, name, value)
            except (RuntimeError, NotImplementedError) as err:  # no right_inverse
                raise ValueError(
                    f"Cannot re-initialise the copy of {type(layer).__name__}.{name} for the Q "
                    f"ensemble through its parametrization ({err}), so the copies would start "
                    "equal. Give the loss a list of num_qvalue_nets Q modules built "
                    "independently, one per Q-function."
                ) from err


# Where nn.Module keeps its hooks, and what each is (sac_tr.accel.checks names them too).
MODULE_HOOKS = {
    "_forward_hooks": "a forward hook",
    "_forward_pre_hooks": "a forward pre-hook",
    "_backward_hooks": "a backward hook",
    "_backward_pre_hooks": "a backward pre-hook",
}


def _architecture(module: TensorDictModule) -> list[tuple]:
    """What the forward of ``module`` depends on besides its parameters' values: each
    submodule's class (a parametrized layer by the class it parametrizes: each gets a class of
    its own), its settings (``extra_repr``), hooks and methods set on the instance; the keys;
    the parameters' names and shapes."""

    def layer(name: str, sub: torch.nn.Module) -> tuple:
        cls = type(sub).__bases__[0] if parametrize.is_parametrized(sub) else type(sub)
        own = sorted(k for k, v in vars(sub).items() if callable(v) and hasattr(type(sub), k))
        hooks = [bool(getattr(sub, h, None)) for h in MODULE_HOOKS]
        return (name, cls, sub.extra_repr(), tuple(own), tuple(hooks))

    return [
        (tuple(getattr(module, "in_keys", ())), tuple(getattr(module, "out_keys", ()))),
        *(layer(name, sub) for name, sub in module.named_modules()),
        *((name, tuple(p.shape)) for name, p in module.named_parameters()),
    ]


def _refuse_other_architectures(q_modules: list[TensorDictModule]) -> None:
    """TorchRL's functional ensemble runs the first module's forward with every member's
    parameters, so a list whose members differ in their module types or shapes would train
    copies of the first, not what was given: refused."""
    first = _architecture(q_modules[0])
    for i, module in enumerate(q_modules[1:], start=1):
        if _architecture(module) != first:
            raise ValueError(
                f"Q module {i} of the list differs from Q module 0 (in its module types, their "
                "settings, hooks or replaced methods, its keys or its parameter shapes). The "
                "loss evaluates every Q-function with Q module 0's forward "
                "(each with its own parameters), so the list's modules must have one "
                "architecture; give one module (it is copied and re-initialised) or equal ones."
            )


def _refuse_tensor_hooks(q_modules: list[TensorDictModule]) -> None:
    """The loss trains stacked copies of the Q parameters (``qvalue_network_params``, one row per
    Q-function), so a hook on a Q module's own parameter would never fire: refused, not ignored."""
    for module in q_modules:
        for name, param in module.named_parameters():
            if param._backward_hooks or getattr(param, "_post_accumulate_grad_hooks", None):
                raise ValueError(
                    f"The Q network's parameter {name!r} has a tensor hook (register_hook or "
                    "register_post_accumulate_grad_hook). The loss trains stacked copies of the "
                    "Q parameters, one per Q-function, so that hook would never fire. Register it "
                    "on the stacked copy instead, after building the loss (it then sees the "
                    "[num_qvalue_nets, ...] gradient, also in the acceleration probe's backward "
                    f"passes): loss.qvalue_network_params[{tuple(name.split('.'))!r}]."
                )


class SACLossBase(LossModule):
    """Shared machinery of ``SACv1Loss`` and ``SACv2Loss`` (not a loss by itself).

    Subclasses call ``_register_actor`` and ``_register_qvalue`` in their constructor, list the
    keys they read in ``_set_in_keys`` and implement ``forward``.
    """

    @dataclass
    class _AcceptedKeys:
        """TensorDict keys the loss reads and writes; change them with ``loss.set_keys``.

        Attributes:
            action: the replayed action (and where the fresh action is written for Q).
            value: output key of the value network (SAC-v1).
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
    actor_network_params: TensorDictParams
    qvalue_network_params: TensorDictParams
    target_actor_network_params: TensorDictParams
    target_qvalue_network_params: TensorDictParams
    # Optional fast evaluators (see the module docstring); None: the network's own module runs.
    q_evaluator: QEnsembleEvaluator | None = None
    actor_sampler: ActionSampler | None = None

    def __init__(self, *, num_qvalue_nets: int, validate_inputs: bool) -> None:
        if not isinstance(num_qvalue_nets, int) or num_qvalue_nets < 1:
            raise ValueError(
                f"num_qvalue_nets must be a positive integer, got {num_qvalue_nets!r}."
            )
        self._in_keys = None
        super().__init__()
        self.num_qvalue_nets = num_qvalue_nets
        self.validate_inputs = validate_inputs
        self._action_dim: int | None = None

    # ------------------------------------------------------------------ construction helpers
    def _register_actor(self, actor_network: ProbabilisticTensorDictSequential) -> None:
        if not hasattr(actor_network, "get_dist"):
            raise TypeError(
                "actor_network must be a probabilistic actor with get_dist() "
                "(e.g. sac_tr.modules.make_actor), got " + type(actor_network).__name__
            )
        self.convert_to_functional(actor_network, "actor_network", create_target_params=False)
        # Read the action key from the actor, as TorchRL's SACLoss does; set_keys can override it.
        sample_keys = getattr(actor_network, "dist_sample_keys", None) or [self.tensor_keys.action]
        self.tensor_keys.action = sample_keys[0]  # in_keys are built lazily, nothing to refresh
        spec = getattr(actor_network, "spec", None)
        self._action_dim = int(spec[sample_keys[0]].shape[-1]) if spec is not None else None

    def _register_qvalue(
        self, qvalue_network: TensorDictModule | list[TensorDictModule], create_target: bool
    ) -> None:
        n = self.num_qvalue_nets
        if isinstance(qvalue_network, (list, tuple)):
            if len(qvalue_network) != n:
                raise ValueError(f"Got {len(qvalue_network)} Q modules but num_qvalue_nets={n}.")
            q_modules = list(qvalue_network)
            _refuse_other_architectures(q_modules)
        else:
            q_modules = _independent_copies(qvalue_network, n)
        _refuse_tensor_hooks(q_modules)
        self.convert_to_functional(
            q_modules, "qvalue_network", n, create_target_params=create_target
        )
        self._make_vmap()

    def _make_vmap(self) -> None:
        # One call evaluates every Q-function: parameters stacked on dim 0, input shared.
        self._vmap_qvalue = _vmap_func(
            self.qvalue_network, (None, 0), randomness=self.vmap_randomness
        )
        # The Q evaluator stands in for this vmap only (sac_tr.accel): one assigned later is not.
        self._stock_vmap_qvalue = self._vmap_qvalue

    @property
    def _device(self) -> torch.device:
        return next(iter(self.actor_network_params.values(True, True))).device

    # ------------------------------------------------------------------ TorchRL plumbing
    def make_value_estimator(self, value_type: ValueEstimators | None = None, **hyperparams):
        """Set the discount: ``loss.make_value_estimator(gamma=0.99)`` (TorchRL's call for it).

        Only TD(0) is the paper's target, and the loss computes it itself (``_q_target``), so no
        estimator object is built: the discount is kept as the buffer ``discount`` (not saved
        in checkpoints: it comes from the config).
        """
        if value_type is not None and value_type is not ValueEstimators.TD0:
            raise NotImplementedError(
                f"{type(self).__name__} computes the paper's TD0 target itself; "
                f"make_value_estimator takes gamma= only, got value_type={value_type!r}."
            )
        _, hp = self._prepare_value_estimator_kwargs(ValueEstimators.TD0, **hyperparams)
        self.register_buffer(
            "_discount", torch.tensor(float(hp["gamma"]), device=self._device), persistent=False
        )
        return self

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # Checkpoints written before the discount stopped being an estimator's buffer.
        state_dict.pop(prefix + "_value_estimator.gamma", None)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _base_in_keys(self) -> list[NestedKey]:
        return [
            self.tensor_keys.action,
            ("next", self.tensor_keys.reward),
            ("next", self.tensor_keys.terminated),
            *self.actor_network.in_keys,
            *self.qvalue_network.in_keys,
        ]

    def _set_in_keys(self) -> None:
        raise NotImplementedError

    @property
    def in_keys(self) -> list[NestedKey]:
        if self._in_keys is None:
            self._set_in_keys()
        return self._in_keys

    @in_keys.setter
    def in_keys(self, values: list[NestedKey]) -> None:
        self._in_keys = values

    @property
    @_cache_values
    def _detached_qvalue_params(self) -> TensorDictBase:
        # Shares storage with the live parameters, so it stays current after optimizer steps.
        return self.qvalue_network_params.detach()

    @property
    def discount(self) -> torch.Tensor:
        """The discount gamma (``make_value_estimator(gamma=...)``; TorchRL's default 0.99)."""
        if "_discount" not in self._buffers:
            self.make_value_estimator()
        return self._discount

    # ------------------------------------------------------------------ shared computations
    def _check_inputs(self, td: TensorDictBase) -> None:
        name = type(self).__name__
        batch = tuple(td.batch_size)
        for key in self.in_keys:
            if key not in td.keys(include_nested=True):
                raise KeyError(
                    f"{name}: the input TensorDict has no key {key!r}. It needs "
                    f"{self.in_keys}; rename yours with loss.set_keys(...) or the module keys."
                )
        for field in ("reward", "terminated"):
            key = ("next", getattr(self.tensor_keys, field))
            shape = tuple(td.get(key).shape)
            if shape != (*batch, 1):
                raise ValueError(
                    f"{name}: {key!r} has shape {shape}, expected {(*batch, 1)} "
                    "(batch dims followed by a trailing 1, as TorchRL environments write it)."
                )
        action = td.get(self.tensor_keys.action)
        if tuple(action.shape[:-1]) != batch or (
            self._action_dim is not None and action.shape[-1] != self._action_dim
        ):
            raise ValueError(
                f"{name}: {self.tensor_keys.action!r} has shape {tuple(action.shape)}, "
                f"expected {(*batch, self._action_dim)}."
            )
        obs_dim = self._observation_dim()
        for key in self.in_keys:
            value = td.get(key)
            if tuple(value.shape[: len(batch)]) != batch:
                raise ValueError(
                    f"{name}: {key!r} has shape {tuple(value.shape)}; its leading dims must be "
                    f"the batch size {batch}."
                )
            observation = key in self.actor_network.in_keys or (
                isinstance(key, tuple)
                and key[0] == "next"
                and key[1:]
                in [(k,) if isinstance(k, str) else k for k in self.actor_network.in_keys]
            )
            if observation and obs_dim is not None and value.shape[-1] != obs_dim:
                raise ValueError(
                    f"{name}: {key!r} has {value.shape[-1]} features but the networks take "
                    f"{obs_dim} (shape {tuple(value.shape)})."
                )
        floats = {key: td.get(key) for key in self.in_keys}
        floats = {key: value for key, value in floats.items() if value.is_floating_point()}
        if all_finite(list(floats.values())):
            return
        for key, value in floats.items():
            if not torch.isfinite(value).all():
                raise ValueError(
                    f"{name}: {key!r} holds NaN or inf ({int((~torch.isfinite(value)).sum())} "
                    "entries); check the environment's observations and rewards."
                )

    def _observation_dim(self) -> int | None:
        """Input features of the actor's first linear layer (``None`` if it has none or is lazy)."""
        if not hasattr(self, "_obs_dim_cache"):
            first = next(
                (m for m in self.actor_network.modules() if isinstance(m, torch.nn.Linear)), None
            )
            lazy = first is None or isinstance(first, torch.nn.modules.lazy.LazyModuleMixin)
            single_input = len(self.actor_network.in_keys) == 1
            self._obs_dim_cache = first.in_features if not lazy and single_input else None
        return self._obs_dim_cache

    def _sample_action(self, td: TensorDictBase) -> tuple[torch.Tensor, torch.Tensor]:
        """a~ = f_phi(eps; s), reparameterised (eq. 11), and log pi(a~|s) from the pre-tanh sample
        (eq. 21): finite even when tanh saturates.  Shapes ``[*B, dA]`` and ``[*B]``."""
        if self.actor_sampler is not None:
            return self.actor_sampler.sample(td, self.actor_network_params)
        actor_in = td.select(*self.actor_network.in_keys)
        with self.actor_network_params.to_module(self.actor_network, preserve_module_state=False):
            dist = self.actor_network.get_dist(actor_in)
        return dist.rsample_and_log_prob()

    def _sample_current_and_next(
        self, td: TensorDictBase
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``a~ ~ pi(.|s)`` with ``log pi(a~|s)`` (differentiable), and ``a' ~ pi(.|s')`` with
        ``log pi(a'|s')`` (detached), in this order."""
        next_td = td.get("next")
        if self.actor_sampler is not None:
            return self.actor_sampler.sample_pair(td, next_td, self.actor_network_params)
        action, log_prob = self._sample_action(td)
        with torch.no_grad():
            next_action, next_log_prob = self._sample_action(next_td)
        return action, log_prob, next_action, next_log_prob

    def _q_values(
        self, td: TensorDictBase, action: torch.Tensor | None, params: TensorDictBase
    ) -> torch.Tensor:
        """Q_i(s, a) for every member i of the ensemble in one ``vmap`` call.  ``[N, *B]``.

        ``action=None`` reads the replayed action from ``td``.
        """
        if self.q_evaluator is not None:
            return self.q_evaluator.values(td, action, params)
        q_in = td.select(*self.qvalue_network.in_keys, strict=False)
        if action is not None:
            q_in.set(self.tensor_keys.action, action)
        return self._vmap_qvalue(q_in, params).get(self.tensor_keys.state_action_value).squeeze(-1)

    def _q_replayed_and_fresh(
        self, td: TensorDictBase, fresh_action: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``Q_i(s, a)`` on the replayed actions and ``Q_i(s, a~)`` on fresh ones, ``[N, *B]`` each.

        The first is trained by the Q loss (eq. 7): gradients reach the Q parameters. The second
        serves the actor and value terms (eqs. 5, 12): its gradient reaches ``a~`` only, the Q
        parameters acting as constants.
        """
        if self.q_evaluator is not None:
            return self.q_evaluator.replayed_and_fresh(td, fresh_action, self.qvalue_network_params)
        return (
            self._q_values(td, None, self.qvalue_network_params),
            self._q_values(td, fresh_action, self._detached_qvalue_params),
        )

    def _q_target(self, td: TensorDictBase, next_value: torch.Tensor) -> torch.Tensor:
        """Qhat = c r + gamma (1 - terminated) V(s'), ``c`` the reward scale (v1 eq. 8); a
        time-limit truncation still bootstraps. ``next_value`` and the result are ``[*B]``."""
        return td0_return_estimate(
            gamma=self.discount,
            next_state_value=next_value.unsqueeze(-1),
            reward=self.reward_scale * td.get(("next", self.tensor_keys.reward)),
            terminated=td.get(("next", self.tensor_keys.terminated)),
        ).squeeze(-1)

    def _q_regression(
        self, td: TensorDictBase, q_pred: torch.Tensor, q_target: torch.Tensor
    ) -> torch.Tensor:
        """``sum_i mean(1/2 (Q_i(s, a) - Qhat)^2)`` (v1 eq. 7, one term per Q-function) for the
        predictions ``q_pred`` ``[N, *B]``; writes ``max_i |Q_i - Qhat|`` to the priority key."""
        td_error = q_pred - q_target
        td.set(self.tensor_keys.priority, td_error.detach().abs().max(0).values)
        return 0.5 * td_error.pow(2).flatten(1).mean(1).sum(0)
