"""The deterministic variant of SAC-v1 (the paper's Figure 2 ablation).

Haarnoja et al. (2018), section 5.2: "a deterministic variant of SAC that does not maximize the
entropy and that closely resembles DDPG, with the exception of having two Q-functions, using
hard target updates, not having a separate target actor, and using fixed rather than learned
exploration noise". The value and Q learning are SAC-v1's with the entropy term removed
(alpha = 0) and the fresh action a~ replaced by the deterministic action mu_phi(s).
"""

from __future__ import annotations

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModule, TensorDictModuleBase

from sac_tr.losses.sac_v1 import SACv1Loss

__all__ = ["DeterministicSACLoss"]


class DeterministicSACLoss(SACv1Loss):
    """SAC-v1 without the entropy: for a batch ``(s, a, r, s', terminated)``,

    * ``loss_value  = mean(1/2 (V_psi(s) - min_i Q_i(s, mu_phi(s)))^2)``  (eq. 5, alpha = 0)
    * ``loss_qvalue = sum_i mean(1/2 (Q_i(s, a) - [c r + gamma (1 - terminated) V_psibar(s')])^2)``
      (eqs. 7-8, unchanged)
    * ``loss_actor  = -mean(min_i Q_i(s, mu_phi(s)))``  (eq. 12, alpha = 0: the deterministic
      policy gradient through the action, as in DDPG)

    Args:
        actor_network: a deterministic actor writing the action (see ``make_deterministic_actor``);
            a stochastic actor is refused, since this loss has no entropy term to use it.
        qvalue_network, value_network: as for ``SACv1Loss``.

    Keyword Args:
        num_qvalue_nets, reward_scale, validate_inputs: as for ``SACv1Loss``.

    The paper pairs it with hard target updates (``make_target_updater(loss, "hard", ...)``) and
    fixed Gaussian exploration noise (``make_gaussian_exploration``); neither lives in the loss.
    """

    def __init__(
        self,
        actor_network: TensorDictModuleBase,
        qvalue_network: TensorDictModule | list[TensorDictModule],
        value_network: TensorDictModule,
        *,
        num_qvalue_nets: int = 2,
        reward_scale: float = 1.0,
        validate_inputs: bool = True,
    ) -> None:
        super().__init__(
            actor_network,
            qvalue_network,
            value_network,
            num_qvalue_nets=num_qvalue_nets,
            alpha=1.0,
            reward_scale=reward_scale,
            validate_inputs=validate_inputs,
        )
        self.alpha.zero_()  # no entropy term anywhere: log pi is also returned as 0 below

    def _register_actor(self, actor_network: TensorDictModuleBase) -> None:
        if hasattr(actor_network, "get_dist"):
            raise TypeError(
                "DeterministicSACLoss needs a deterministic actor (actor=deterministic, "
                "sac_tr.modules.make_deterministic_actor), got a stochastic "
                f"{type(actor_network).__name__}; use SACv1Loss for a stochastic policy."
            )
        self.convert_to_functional(actor_network, "actor_network", create_target_params=False)
        self.tensor_keys.action = actor_network.out_keys[-1]
        self._action_dim = None  # read from the batch; the actor's output is checked by Q

    def _sample_action(self, td: TensorDictBase) -> tuple[torch.Tensor, torch.Tensor]:
        """a = mu_phi(s) and a zero log-probability (so alpha log pi vanishes exactly)."""
        actor_in = td.select(*self.actor_network.in_keys)
        with self.actor_network_params.to_module(self.actor_network, preserve_module_state=False):
            action = self.actor_network(actor_in).get(self.tensor_keys.action)
        return action, action.new_zeros(action.shape[:-1])
