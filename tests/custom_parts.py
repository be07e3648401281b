"""A user's own parts, plugged in by import path (``actor.target=custom_parts.make_narrow_actor``):
tests/test_custom_parts.py runs every one of them through the recipe."""

from __future__ import annotations

import torch
from tensordict.nn import TensorDictModule
from torch import nn
from torchrl.envs.utils import ExplorationType
from torchrl.modules import ProbabilisticActor, TanhNormal, ValueOperator

from sac_tr.losses import SACv1Loss
from sac_tr.modules import ClampedLogStdNormalParams, make_actor


def make_narrow_actor(action_spec, observation_dim, *, hidden_sizes, activation, width=16):
    """A user's actor: the library's squashed Gaussian with one hidden layer of ``width``."""
    return make_actor(action_spec, observation_dim, hidden_sizes=(width,), activation=activation)


class DoubledActorLoss(SACv1Loss):
    """A user's loss: SAC-v1 with the actor loss counted twice (to see that it is this one)."""

    def forward(self, tensordict):
        out = super().forward(tensordict)
        out.set("loss_actor", 2 * out.get("loss_actor"))
        return out


class ForwardingLoss(SACv1Loss):
    """A user's loss whose constructor only forwards ``*args, **kwargs``: SAC-v1 that also
    reports the batch's mean reward. It receives what SACv1Loss takes (its value network too)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)

    def forward(self, tensordict):
        out = super().forward(tensordict)
        out.set("reward_mean", tensordict.get(("next", "reward")).mean().detach())
        return out


class QMeanLoss(SACv1Loss):
    """A user's loss with a learnable parameter of its own: ``q_mean`` tracks the batch's mean
    Q-value by regression (``loss_q_mean``), trained with the networks by the recipe's optimizer."""

    def __init__(self, actor_network, qvalue_network, value_network, **kwargs):
        super().__init__(actor_network, qvalue_network, value_network, **kwargs)
        self.q_mean = nn.Parameter(torch.zeros(()))

    def forward(self, tensordict):
        out = super().forward(tensordict)
        out.set("loss_q_mean", 0.5 * (self.q_mean - out.get("q_value").detach()) ** 2)
        return out


class DroQNet(nn.Module):
    """Q(s, a) of DroQ (Hiraoka et al. 2022): each hidden layer is Linear, Dropout, LayerNorm,
    activation. Dropout is active in train mode (updates) only."""

    def __init__(self, in_features, hidden_sizes, activation, dropout):
        super().__init__()
        layers, width = [], in_features
        for size in hidden_sizes:
            layers += [
                nn.Linear(width, size),
                nn.Dropout(dropout),
                nn.LayerNorm(size),
                activation(),
            ]
            width = size
        self.layers = nn.Sequential(*layers, nn.Linear(width, 1))

    def forward(self, observation, action):
        return self.layers(torch.cat([observation, action], -1))


def make_droq_qvalue(observation_dim, action_dim, *, hidden_sizes, activation, dropout=0.01):
    """A user's critic builder (``critic.target=custom_parts.make_droq_qvalue``): a DroQ Q."""
    net = DroQNet(observation_dim + action_dim, hidden_sizes, activation, dropout)
    return ValueOperator(net, in_keys=["observation", "action"], out_keys=["state_action_value"])


class BatchNorm(nn.BatchNorm1d):
    """``BatchNorm1d`` over the last dimension of any batch shape (one observation included)."""

    def forward(self, x):
        return super().forward(x.reshape(-1, x.shape[-1])).reshape(x.shape)


def make_batchnorm_actor(
    action_spec, observation_dim, *, hidden_sizes, activation, log_std_bounds=(-20.0, 2.0)
):
    """The squashed-Gaussian actor with batch normalisation after each hidden layer: running
    statistics that are state but not parameters (checkpointed with the loss's state)."""
    layers, width = [], observation_dim
    for size in hidden_sizes:
        layers += [nn.Linear(width, size), BatchNorm(size), activation()]
        width = size
    net = nn.Sequential(
        *layers,
        nn.Linear(width, 2 * action_spec.shape[-1]),
        ClampedLogStdNormalParams(log_std_bounds),
    )
    module = TensorDictModule(net, in_keys=["observation"], out_keys=["loc", "scale"])
    return ProbabilisticActor(
        module,
        in_keys=["loc", "scale"],
        spec=action_spec,
        distribution_class=TanhNormal,
        distribution_kwargs={
            "low": action_spec.space.low,
            "high": action_spec.space.high,
            "tanh_loc": False,
        },
        return_log_prob=True,
        default_interaction_type=ExplorationType.RANDOM,
    )


class ResidualValue(nn.Module):
    """V(s) = w . h(s) + a linear skip term: a value network the MLP builders do not make."""

    def __init__(self, observation_dim, hidden_sizes, activation):
        super().__init__()
        layers, width = [], observation_dim
        for size in hidden_sizes:
            layers += [nn.Linear(width, size), activation()]
            width = size
        self.body = nn.Sequential(*layers, nn.Linear(width, 1))
        self.skip = nn.Linear(observation_dim, 1, bias=False)

    def forward(self, observation):
        return self.body(observation) + self.skip(observation)


def make_residual_value(observation_dim, *, hidden_sizes, activation):
    """A user's value-network builder (``value.target=custom_parts.make_residual_value``)."""
    module = ResidualValue(observation_dim, hidden_sizes, activation)
    return ValueOperator(module, in_keys=["observation"], out_keys=["state_value"])
