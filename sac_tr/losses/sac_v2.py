"""The SAC-v2 loss: twin soft Q-functions with Polyak-averaged targets, no value network, and a
learned temperature (Haarnoja et al., "Soft Actor-Critic Algorithms and Applications",
arXiv:1812.05905): the Q loss J_Q with the soft value of the target Q-networks (its section 4),
the policy loss J_pi (section 4) and the temperature loss J(alpha) (section 5, eq. 18)."""

from __future__ import annotations

import math

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import ProbabilisticTensorDictSequential, TensorDictModule
from torch import nn

from sac_tr.losses.common import SACLossBase, check_positive

__all__ = ["SACv2Loss"]


class SACv2Loss(SACLossBase):
    """SAC without a value network, with target Q-networks and automatic temperature tuning.

    For a batch ``(s, a, r, s', terminated)``, a fresh reparameterised ``a~ ~ pi(.|s)`` and a
    next action ``a' ~ pi(.|s')`` (no gradient):

    * ``loss_qvalue = sum_i mean(1/2 (Q_i(s, a) - Qhat)^2)`` with
      ``Qhat = c r + gamma (1 - terminated) (min_i Qbar_i(s', a') - alpha log pi(a'|s'))``
    * ``loss_actor = mean(alpha log pi(a~|s) - min_i Q_i(s, a~))`` (Q parameters detached)
    * ``loss_alpha = mean(-log_alpha (log pi(a~|s) + Hbar))`` (``log pi`` detached), the
      authors' implementation of J(alpha) = E[-alpha (log pi + Hbar)] optimised over log alpha.

    ``Hbar`` is the target entropy, ``-dim(A)`` by default ("auto"). The target Q parameters
    (``target_qvalue_network_params``) are moved by ``SoftUpdate``/``HardUpdate``. They run
    through the same module as the online Q-functions, so in its mode: train mode during updates
    (a Dropout Q draws masks for its targets too, as DroQ does).

    Args:
        actor_network: a ``ProbabilisticActor`` with a ``TanhNormal`` head (see ``make_actor``).
        qvalue_network: one Q module (copied and re-initialised) or a list of them.

    Keyword Args:
        num_qvalue_nets: size of the Q ensemble (2).
        alpha_init: initial temperature.
        fixed_alpha: keep alpha at ``alpha_init`` (then ``loss_alpha`` is still reported but
            has no parameter to move).
        target_entropy: ``"auto"`` for ``-dim(A)``, or a number.
        reward_scale: multiplies the reward in the Q target (1 in the v2 paper).
        validate_inputs: check keys, shapes and reward finiteness on every call.
    """

    def __init__(
        self,
        actor_network: ProbabilisticTensorDictSequential,
        qvalue_network: TensorDictModule | list[TensorDictModule],
        *,
        num_qvalue_nets: int = 2,
        alpha_init: float = 1.0,
        fixed_alpha: bool = False,
        target_entropy: float | str = "auto",
        reward_scale: float = 1.0,
        validate_inputs: bool = True,
    ) -> None:
        check_positive("alpha_init", alpha_init)
        check_positive("reward_scale", reward_scale)
        super().__init__(num_qvalue_nets=num_qvalue_nets, validate_inputs=validate_inputs)
        self._register_actor(actor_network)
        self._register_qvalue(qvalue_network, create_target=True)
        if target_entropy == "auto":
            if self._action_dim is None:
                raise ValueError(
                    "target_entropy='auto' needs an actor with an action spec; give a number."
                )
            target_entropy = -float(self._action_dim)  # -dim(A), not -1 (pytorch/rl #3291)
        elif not isinstance(target_entropy, (int, float)) or not math.isfinite(target_entropy):
            raise ValueError(
                f"target_entropy must be 'auto' or a finite number, got {target_entropy!r}."
            )
        device = self._device
        self.register_buffer("target_entropy", torch.tensor(float(target_entropy), device=device))
        self.register_buffer("reward_scale", torch.tensor(float(reward_scale), device=device))
        log_alpha = torch.tensor(math.log(alpha_init), device=device)
        if fixed_alpha:
            self.register_buffer("log_alpha", log_alpha)
        else:
            self.log_alpha = nn.Parameter(log_alpha)

    def _set_in_keys(self) -> None:
        keys = [*self._base_in_keys(), *[("next", key) for key in self.actor_network.in_keys]]
        self._in_keys = list(dict.fromkeys(keys))

    @property
    def out_keys(self) -> list[str]:
        return [
            "loss_actor",
            "loss_qvalue",
            "loss_alpha",
            "alpha",
            "entropy",
            "q_value",
            "target_value",
        ]

    @property
    def alpha(self) -> torch.Tensor:
        """The current temperature exp(log_alpha), detached."""
        return self.log_alpha.detach().exp()

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        """Compute ``loss_actor``, ``loss_qvalue``, ``loss_alpha`` and detached diagnostics."""
        if self.validate_inputs:
            self._check_inputs(tensordict)
        alpha = self.alpha
        # a~ ~ pi(.|s) (differentiable) and a' ~ pi(.|s') (detached, for the target below)
        fresh_action, log_prob, next_action, next_log_prob = self._sample_current_and_next(
            tensordict
        )

        # Q_i(s, a) for the Q loss; min_i Q_i(s, a~) with the Q parameters held constant.
        q_pred, q_fresh = self._q_replayed_and_fresh(tensordict, fresh_action)
        min_q_fresh = q_fresh.min(0).values
        loss_actor = (alpha * log_prob - min_q_fresh).mean()

        # Qhat = c r + gamma (1 - terminated) [min_i Qbar_i(s', a') - alpha log pi(a'|s')], a' ~ pi(.|s')
        with torch.no_grad():
            next_q = (
                self._q_values(
                    tensordict.get("next"), next_action, self.target_qvalue_network_params
                )
                .min(0)
                .values
            )
            q_target = self._q_target(tensordict, next_q - alpha * next_log_prob)
        loss_qvalue = self._q_regression(tensordict, q_pred, q_target)

        loss_alpha = (-self.log_alpha * (log_prob.detach() + self.target_entropy)).mean()

        return TensorDict(
            {
                "loss_actor": loss_actor,
                "loss_qvalue": loss_qvalue,
                "loss_alpha": loss_alpha,
                "alpha": alpha,
                "entropy": -log_prob.detach().mean(),
                "q_value": q_pred.detach().mean(),
                "target_value": q_target.mean(),
            },
            batch_size=[],
        )

    def extra_repr(self) -> str:
        return (
            f"num_qvalue_nets={self.num_qvalue_nets}, alpha={float(self.alpha):.4g}, "
            f"target_entropy={float(self.target_entropy)}, learn_alpha={isinstance(self.log_alpha, nn.Parameter)}"
        )
