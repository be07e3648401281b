"""The actor, Q and value builders: keys, shapes, bounds and the squashed-Gaussian density."""

import math

import pytest
import torch
from helpers import ACT_DIM, HIDDEN, HIGH, LOW, OBS_DIM, action_spec, squashed_gaussian_by_hand
from tensordict import TensorDict
from torchrl.data import Unbounded
from torchrl.envs.utils import ExplorationType, set_exploration_type

from sac_tr import make_actor, make_qvalue, make_value


def _actor_and_obs(batch=5, seed=0):
    torch.manual_seed(seed)
    actor = make_actor(action_spec(), OBS_DIM, hidden_sizes=HIDDEN)
    obs = torch.randn(batch, OBS_DIM)
    return actor, obs


def _raw_head(actor, obs):
    """loc and log_std straight from the MLP (before clamping), read from the actor's layers."""
    mlp = actor.module[0].module[0]
    loc, log_std = mlp(obs).chunk(2, -1)
    return loc, log_std


def test_actor_writes_action_and_log_prob_within_bounds():
    actor, obs = _actor_and_obs(batch=64)
    out = actor(TensorDict(observation=obs, batch_size=[64]))
    assert out["action"].shape == (64, ACT_DIM)
    assert out["action_log_prob"].shape == (64,)
    assert (out["action"] >= LOW).all() and (out["action"] <= HIGH).all()


def test_deterministic_mode_is_the_squashed_mean():
    actor, obs = _actor_and_obs()
    loc, _ = _raw_head(actor, obs)
    expected = LOW + (HIGH - LOW) / 2 * (torch.tanh(loc) + 1)
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        a1 = actor(TensorDict(observation=obs, batch_size=[5]))["action"]
        a2 = actor(TensorDict(observation=obs, batch_size=[5]))["action"]
    torch.testing.assert_close(a1, expected)
    torch.testing.assert_close(a1, a2)


def test_log_prob_matches_change_of_variables():
    actor, obs = _actor_and_obs()
    loc, log_std = _raw_head(actor, obs)
    dist = actor.get_dist(TensorDict(observation=obs, batch_size=[5]))
    torch.manual_seed(11)
    action, log_prob = dist.rsample_and_log_prob()
    torch.manual_seed(11)
    eps = torch.randn(5, ACT_DIM)
    exp_action, exp_log_prob = squashed_gaussian_by_hand(
        loc.double(), log_std.double(), eps.double()
    )
    torch.testing.assert_close(action.double(), exp_action, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(log_prob.double(), exp_log_prob, rtol=1e-5, atol=1e-4)


def test_log_prob_is_finite_and_exact_for_saturated_actions():
    actor, obs = _actor_and_obs(batch=4)
    mlp = actor.module[0].module[0]
    with torch.no_grad():  # push the mean far into tanh's flat region: |a| rounds to the bound
        mlp[-1].bias[:ACT_DIM] = torch.tensor([40.0, -40.0])
        mlp[-1].weight.zero_()
        mlp[-1].bias[ACT_DIM:] = -3.0  # log_std
    dist = actor.get_dist(TensorDict(observation=obs, batch_size=[4]))
    torch.manual_seed(5)
    action, log_prob = dist.rsample_and_log_prob()
    torch.manual_seed(5)
    eps = torch.randn(4, ACT_DIM).double()
    # Saturated: within float32 rounding of the bound, where inverting tanh would lose u entirely.
    assert ((HIGH - action[:, 0]).abs() < 1e-5).all() and ((action[:, 1] - LOW).abs() < 1e-5).all()
    assert torch.isfinite(log_prob).all()
    # Hand calculation with the identity log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)).
    u = torch.tensor([40.0, -40.0], dtype=torch.float64) + math.exp(-3.0) * eps
    log_normal = (-0.5 * eps**2 + 3.0 - 0.5 * math.log(2 * math.pi)).sum(-1)
    log_det = (2 * (math.log(2) - u - torch.nn.functional.softplus(-2 * u))).sum(-1)
    expected = log_normal - log_det - ACT_DIM * math.log((HIGH - LOW) / 2)
    torch.testing.assert_close(log_prob.double(), expected, rtol=1e-5, atol=1e-3)
    assert expected.min() > 100  # a saturated action is very likely: the check is not trivial


def test_log_std_is_clamped_to_paper_bounds():
    actor, obs = _actor_and_obs()
    mlp = actor.module[0].module[0]
    with torch.no_grad():
        mlp[-1].bias[ACT_DIM:] = 50.0
        mlp[-1].weight.zero_()
    out = actor.module[0](TensorDict(observation=obs, batch_size=[5]))
    torch.testing.assert_close(out["scale"], torch.full((5, ACT_DIM), math.exp(2.0)))


def test_qvalue_and_value_shapes_and_keys():
    q = make_qvalue(OBS_DIM, ACT_DIM, hidden_sizes=HIDDEN, observation_key="obs", action_key="act")
    v = make_value(OBS_DIM, hidden_sizes=HIDDEN, observation_key="obs", out_key="v")
    td = TensorDict(
        obs=torch.randn(4, 7, OBS_DIM), act=torch.randn(4, 7, ACT_DIM), batch_size=[4, 7]
    )
    assert q(td.clone())["state_action_value"].shape == (4, 7, 1)
    assert v(td.clone())["v"].shape == (4, 7, 1)
    # Q reads the concatenation [obs, act]: evaluate its layers by hand on it.
    linears = [m for m in q.module if isinstance(m, torch.nn.Linear)]
    h = torch.cat([td["obs"], td["act"]], -1)
    for layer in linears[:-1]:
        h = torch.relu(layer(h))
    torch.testing.assert_close(linears[-1](h), q(td.clone())["state_action_value"])


def test_hidden_sizes_are_configurable():
    v = make_value(OBS_DIM, hidden_sizes=(16, 32, 4))
    widths = [m.out_features for m in v.module if isinstance(m, torch.nn.Linear)]
    assert widths == [16, 32, 4, 1]


def test_bad_builder_input_is_explained():
    with pytest.raises(ValueError, match="bounded action spec"):
        make_actor(Unbounded(shape=(2,)), OBS_DIM)
    with pytest.raises(ValueError, match="hidden_sizes"):
        make_qvalue(OBS_DIM, ACT_DIM, hidden_sizes=(256, -1))
    with pytest.raises(ValueError, match="observation_dim"):
        make_value(0)
    with pytest.raises(ValueError, match="log_std_bounds"):
        make_actor(action_spec(), OBS_DIM, log_std_bounds=(2.0, -20.0))


@pytest.mark.parametrize("saturate", [False, True])
def test_fast_actor_sample_matches_the_tanh_normal_distribution(saturate):
    """The loss samples make_actor's policy without building a TanhNormal; it must give the
    distribution's own action, log-probability and gradients (also when tanh saturates)."""
    from sac_tr import SACv1Loss, make_qvalue, make_value
    from sac_tr.modules import ClampedLogStdNormalParams, tanh_normal_actor

    class Opaque(torch.nn.Module):  # hides the MLP from the fast path
        def __init__(self, mlp):
            super().__init__()
            self.mlp = mlp

        def forward(self, x):
            return self.mlp(x)

    actor, obs = _actor_and_obs(batch=6)
    mlp = actor.module[0].module[0]
    generic_actor = tanh_normal_actor(
        torch.nn.Sequential(Opaque(mlp), ClampedLogStdNormalParams()), action_spec()
    )
    losses = [
        SACv1Loss(a, make_qvalue(OBS_DIM, ACT_DIM), make_value(OBS_DIM))
        for a in (actor, generic_actor)
    ]
    from sac_tr.accel import accelerate

    assert accelerate(losses[0])["actor"] == "accelerated"
    assert accelerate(losses[1])["actor"] == "reference path (Opaque not supported)"
    if saturate:  # after the probe (which cannot score a saturated log-density and would refuse):
        with torch.no_grad():  # the installed evaluator reads the live weights
            mlp[-1].bias[:ACT_DIM] = torch.tensor([30.0, -30.0])
    td = TensorDict(observation=obs, batch_size=[6])
    results = []
    for loss in losses:
        torch.manual_seed(2)
        action, log_prob = loss._sample_action(td)
        (action.sum() + log_prob.sum()).backward()
        results.append((action.detach(), log_prob.detach(), mlp[-1].weight.grad.clone()))
        mlp.zero_grad()
    (a_fast, lp_fast, g_fast), (a_ref, lp_ref, g_ref) = results
    torch.testing.assert_close(a_fast, a_ref)
    torch.testing.assert_close(lp_fast, lp_ref, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(g_fast, g_ref, rtol=1e-4, atol=1e-4)
