"""The SAC-v1 loss: value network, twin soft Q-functions and a stochastic actor.

Haarnoja, Zhou, Abbeel, Levine (2018), "Soft Actor-Critic: Off-Policy Maximum Entropy Deep
Reinforcement Learning with a Stochastic Actor", arXiv:1801.01290. Equation numbers below are
the paper's: eq. 5 (the value loss J_V), eqs. 7-8 (the Q loss J_Q and its target Qhat),
eq. 12 (the policy loss J_pi, through the reparameterised action of eq. 11) and, in appendix C,
eq. 21 (the log-likelihood of the tanh-squashed Gaussian).
"""

from __future__ import annotations

import torch
from tensordict import TensorDict, TensorDictBase, TensorDictParams
from tensordict.nn import ProbabilisticTensorDictSequential, TensorDictModule

from sac_tr.losses.common import SACLossBase, StateValueEvaluator, check_positive

__all__ = ["SACv1Loss"]


class SACv1Loss(SACLossBase):
    """The paper's SAC loss with a state-value network V_psi and a target value network V_psibar.

    For a batch ``(s, a, r, s', terminated)`` and a fresh reparameterised action
    ``a~ = f_phi(eps; s)`` drawn once and shared by the value and actor terms:

    * ``loss_value  = mean(1/2 (V_psi(s) - [min_i Q_i(s, a~) - alpha log pi(a~|s)])^2)``  (eq. 5)
    * ``loss_qvalue = sum_i mean(1/2 (Q_i(s, a) - [c r + gamma (1 - terminated) V_psibar(s')])^2)``
      (eqs. 7-8, ``c`` the reward scale)
    * ``loss_actor  = mean(alpha log pi(a~|s) - min_i Q_i(s, a~))``  (eq. 12)

    Each loss reaches only its own network: the value target and the Q parameters inside the
    actor loss are detached, and the target ``V_psibar`` never receives a gradient. Bootstrapping
    stops only at ``("next", "terminated")``; a time-limit truncation still bootstraps.

    The target value parameters live in ``target_value_network_params`` and are moved by
    ``torchrl.objectives.SoftUpdate`` (tau) or ``HardUpdate`` (every N steps), never by the loss.
    V_psibar runs through the same module as V_psi, so in the mode it is in: train mode during
    updates (a Dropout V draws masks for its target too; a BatchNorm V normalises V_psibar(s')
    with the batch's statistics and updates the target copy's running statistics).

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

    value_network: TensorDictModule
    value_network_params: TensorDictParams
    target_value_network_params: TensorDictParams
    value_evaluator: StateValueEvaluator | None = None  # None: the value network's own forward

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
        check_positive("alpha (the temperature)", alpha)
        check_positive("reward_scale", reward_scale)
        super().__init__(num_qvalue_nets=num_qvalue_nets, validate_inputs=validate_inputs)
        self._register_actor(actor_network)
        self.convert_to_functional(value_network, "value_network", create_target_params=True)
        self._register_qvalue(qvalue_network, create_target=False)
        self.register_buffer("alpha", torch.tensor(float(alpha), device=self._device))
        self.register_buffer("reward_scale", torch.tensor(float(reward_scale), device=self._device))

    def _set_in_keys(self) -> None:
        keys = [
            *self._base_in_keys(),
            *self.value_network.in_keys,
            *[("next", key) for key in self.value_network.in_keys],
        ]
        self._in_keys = list(dict.fromkeys(keys))

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

    def _state_values(self, td: TensorDictBase, params: TensorDictBase) -> torch.Tensor:
        """V(s) with ``params`` (V_psi or V_psibar).  ``[*B]``."""
        if self.value_evaluator is not None:
            return self.value_evaluator.values(td, params)
        value_in = td.select(*self.value_network.in_keys)
        with params.to_module(self.value_network, preserve_module_state=False):
            return self.value_network(value_in).get(self.tensor_keys.value).squeeze(-1)

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
        fresh_action, log_prob = self._sample_action(tensordict)  # a~ ~ pi_phi(.|s), log pi(a~|s)

        # Q_i(s, a) for eq. 7; min_i Q_i(s, a~) with the Q parameters held constant: the actor's
        # gradient flows through a~ only.
        q_pred, q_fresh = self._q_replayed_and_fresh(tensordict, fresh_action)
        min_q_fresh = q_fresh.min(0).values
        loss_actor = (self.alpha * log_prob - min_q_fresh).mean()  # eq. 12

        # eq. 5: the soft value target uses the same a~, with no gradient into Q or pi.
        value_target = (min_q_fresh - self.alpha * log_prob).detach()
        state_value = self._state_values(tensordict, self.value_network_params)
        loss_value = 0.5 * (state_value - value_target).pow(2).mean()

        # eqs. 7-8: Qhat = c r + gamma (1 - terminated) V_psibar(s'); truncation still bootstraps.
        with torch.no_grad():
            next_value = self._state_values(
                tensordict.get("next"), self.target_value_network_params
            )
            q_target = self._q_target(tensordict, next_value)
        loss_qvalue = self._q_regression(tensordict, q_pred, q_target)

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
