"""SACv2Loss in isolation: each term against the v2 paper's equations written out by hand."""

import math

import pytest
import torch
from helpers import (
    ACT_DIM,
    actor_mlp_params,
    make_batch,
    make_loss_v2,
    mlp,
    squashed_gaussian_by_hand,
)

from sac_tr.targets import make_target_updater

ALPHA, SCALE, GAMMA = 0.4, 2.0, 0.9


def _perturb_target_q(loss):
    with torch.no_grad():
        for p in loss.target_qvalue_network_params.values(True, True):
            p.add_(0.1 * torch.randn_like(p))


def _by_hand(loss, td, eps, eps_next):
    s, a = td["observation"].double(), td["action"].double()
    s2 = td["next", "observation"].double()
    r = td["next", "reward"].double().squeeze(-1)
    not_term = 1.0 - td["next", "terminated"].double().squeeze(-1)
    actor = actor_mlp_params(loss)
    a_fresh, log_pi = squashed_gaussian_by_hand(*mlp(actor, s).chunk(2, -1), eps.double())
    a_next, log_pi_next = squashed_gaussian_by_hand(*mlp(actor, s2).chunk(2, -1), eps_next.double())
    q = loss.qvalue_network_params["module"]
    q_bar = loss.target_qvalue_network_params["module"]

    def ensemble(params, obs, act):
        return torch.stack(
            [mlp(params[i], torch.cat([obs, act], -1)).squeeze(-1) for i in range(2)]
        )

    q_hat = SCALE * r + GAMMA * not_term * (
        ensemble(q_bar, s2, a_next).min(0).values - ALPHA * log_pi_next
    )
    q_replay = ensemble(q, s, a)
    return {
        "loss_qvalue": sum((0.5 * (q_replay[i] - q_hat) ** 2).mean() for i in range(2)),
        "loss_actor": (ALPHA * log_pi - ensemble(q, s, a_fresh).min(0).values).mean(),
        "loss_alpha": (-math.log(ALPHA) * (log_pi + (-ACT_DIM))).mean(),
        "target_value": q_hat.mean(),
    }


@pytest.mark.parametrize("terminated_rows", [[], [1, 4]])
def test_each_v2_loss_equals_the_equation(terminated_rows):
    loss = make_loss_v2(alpha_init=ALPHA, reward_scale=SCALE, gamma=GAMMA)
    _perturb_target_q(loss)
    term = torch.zeros(6, 1, dtype=torch.bool)
    term[terminated_rows] = True
    td = make_batch(terminated=term)
    torch.manual_seed(3)
    out = loss(td)
    torch.manual_seed(3)
    eps, eps_next = torch.randn(6, ACT_DIM), torch.randn(6, ACT_DIM)  # a~ is drawn first, then a'
    expected = _by_hand(loss, td, eps, eps_next)
    for key, value in expected.items():
        torch.testing.assert_close(out[key].double(), value, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "loss_key, reaches",
    [("loss_qvalue", "qvalue"), ("loss_actor", "actor"), ("loss_alpha", "alpha")],
)
def test_each_v2_loss_reaches_only_its_own_parameters(loss_key, reaches):
    loss = make_loss_v2()
    loss(make_batch())[loss_key].backward()
    groups = {
        "actor": list(loss.actor_network_params.values(True, True)),
        "qvalue": list(loss.qvalue_network_params.values(True, True)),
        "alpha": [loss.log_alpha],
    }
    for name, params in groups.items():
        touched = [p.grad is not None and bool(p.grad.any()) for p in params]
        assert all(touched) if name == reaches else not any(touched), (loss_key, name)
    assert not any(p.requires_grad for p in loss.target_qvalue_network_params.values(True, True))


def test_target_entropy_auto_is_minus_action_dim_and_alpha_moves_toward_it():
    loss = make_loss_v2(alpha_init=1.0)
    assert float(loss.target_entropy) == -ACT_DIM
    out = loss(make_batch())
    out["loss_alpha"].backward()
    # d loss_alpha / d log_alpha = -(E[log pi] + Hbar) = entropy - Hbar (with Hbar = -dim A).
    torch.testing.assert_close(loss.log_alpha.grad, out["entropy"] + ACT_DIM, rtol=1e-5, atol=1e-6)


def test_fixed_alpha_has_no_parameter_to_learn():
    loss = make_loss_v2(alpha_init=0.2, fixed_alpha=True)
    assert "log_alpha" not in dict(loss.named_parameters())
    torch.testing.assert_close(loss(make_batch())["alpha"], torch.tensor(0.2))


def test_v2_terminated_stops_bootstrap_and_soft_update_moves_target_q():
    loss = make_loss_v2(reward_scale=SCALE, gamma=GAMMA)
    td = make_batch(terminated=torch.ones(6, 1, dtype=torch.bool))
    torch.testing.assert_close(loss(td)["target_value"], SCALE * td["next", "reward"].mean())
    updater = make_target_updater(loss, tau=0.25)
    with torch.no_grad():
        for p in loss.qvalue_network_params.values(True, True):
            p.add_(1.0)
    before = [p.clone() for p in loss.target_qvalue_network_params.values(True, True)]
    updater.step()
    for b, t, s in zip(
        before,
        loss.target_qvalue_network_params.values(True, True),
        loss.qvalue_network_params.values(True, True),
        strict=True,
    ):
        torch.testing.assert_close(t, 0.75 * b + 0.25 * s)


def test_bad_v2_arguments_are_explained():
    with pytest.raises(ValueError, match="target_entropy"):
        make_loss_v2(target_entropy="high")
    with pytest.raises(ValueError, match="alpha_init"):
        make_loss_v2(alpha_init=-1.0)
    loss = make_loss_v2()
    with pytest.raises(KeyError, match="observation"):
        loss(make_batch().exclude(("next", "observation")))
