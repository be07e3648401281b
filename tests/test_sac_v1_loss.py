"""SACv1Loss in isolation: each term against the paper's equations written out by hand."""

import pytest
import torch
from helpers import (
    ACT_DIM,
    HIDDEN,
    OBS_DIM,
    action_spec,
    actor_mlp_params,
    make_batch,
    make_loss,
    mlp,
    squashed_gaussian_by_hand,
    value_mlp_params,
)
from tensordict import TensorDict
from torchrl.objectives import ValueEstimators

from sac_tr import SACv1Loss, make_actor, make_qvalue, make_value

ALPHA, SCALE, GAMMA = 0.3, 5.0, 0.9


def _perturb_target(loss):
    """Make V_psibar differ from V_psi, so a test can tell which one a term used."""
    with torch.no_grad():
        for p in loss.target_value_network_params.values(True, True):
            p.add_(0.1 * torch.randn_like(p))


def _losses_by_hand(loss, td, eps):
    """Eqs. 5, 7-8 and 12 evaluated in float64 from the loss's parameters."""
    s, a = td["observation"].double(), td["action"].double()
    s_next = td["next", "observation"].double()
    r = td["next", "reward"].double().squeeze(-1)
    not_term = 1.0 - td["next", "terminated"].double().squeeze(-1)
    loc, log_std = mlp(actor_mlp_params(loss), s).chunk(2, -1)
    a_fresh, log_pi = squashed_gaussian_by_hand(loc, log_std, eps.double())
    q_params = loss.qvalue_network_params["module"]
    q_fresh = torch.stack(
        [mlp(q_params[i], torch.cat([s, a_fresh], -1)).squeeze(-1) for i in range(2)]
    )
    q_replay = torch.stack([mlp(q_params[i], torch.cat([s, a], -1)).squeeze(-1) for i in range(2)])
    v = mlp(value_mlp_params(loss.value_network_params), s).squeeze(-1)
    v_bar_next = mlp(value_mlp_params(loss.target_value_network_params), s_next).squeeze(-1)
    min_q = q_fresh.min(0).values
    loss_value = (0.5 * (v - (min_q - ALPHA * log_pi)) ** 2).mean()
    q_hat = SCALE * r + GAMMA * not_term * v_bar_next
    loss_q = sum((0.5 * (q_replay[i] - q_hat) ** 2).mean() for i in range(2))
    loss_actor = (ALPHA * log_pi - min_q).mean()
    return {
        "loss_value": loss_value,
        "loss_qvalue": loss_q,
        "loss_actor": loss_actor,
        "q_hat": q_hat,
        "log_pi": log_pi,
    }


@pytest.mark.parametrize("terminated_rows", [[], [0, 3]])
def test_each_loss_equals_the_paper_equation(terminated_rows):
    loss = make_loss(alpha=ALPHA, reward_scale=SCALE, gamma=GAMMA)
    _perturb_target(loss)
    term = torch.zeros(6, 1, dtype=torch.bool)
    term[terminated_rows] = True
    td = make_batch(terminated=term)
    torch.manual_seed(7)
    out = loss(td)
    torch.manual_seed(7)
    eps = torch.randn(6, ACT_DIM)
    expected = _losses_by_hand(loss, td, eps)
    for key in ("loss_value", "loss_qvalue", "loss_actor"):
        torch.testing.assert_close(out[key].double(), expected[key], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(
        out["entropy"].double(), -expected["log_pi"].mean(), rtol=1e-5, atol=1e-5
    )
    torch.testing.assert_close(
        out["target_value"].double(), expected["q_hat"].mean(), rtol=1e-5, atol=1e-5
    )


def _param_groups(loss):
    return {
        "actor": list(loss.actor_network_params.values(True, True)),
        "qvalue": list(loss.qvalue_network_params.values(True, True)),
        "value": list(loss.value_network_params.values(True, True)),
    }


@pytest.mark.parametrize(
    "loss_key, reaches",
    [("loss_value", "value"), ("loss_qvalue", "qvalue"), ("loss_actor", "actor")],
)
def test_each_loss_reaches_only_its_own_network(loss_key, reaches):
    loss = make_loss(alpha=ALPHA, reward_scale=SCALE)
    out = loss(make_batch())
    out[loss_key].backward()
    for name, params in _param_groups(loss).items():
        grads = [p.grad for p in params]
        if name == reaches:
            assert all(g is not None for g in grads), (
                f"{loss_key} must reach every {name} parameter"
            )
            assert sum(g.abs().sum() for g in grads) > 0
        else:
            assert all(g is None or not g.any() for g in grads), f"{loss_key} leaked into {name}"
    for p in loss.target_value_network_params.values(True, True):
        assert not p.requires_grad and p.grad is None


def test_actor_gradient_flows_through_the_action_into_the_policy_mean():
    # With Q detached, the actor still learns from Q through a~ = f_phi(eps; s): zero the entropy
    # term (tiny alpha) and the policy's output layer must still receive a gradient.
    loss = make_loss(alpha=1e-8)
    loss(make_batch())["loss_actor"].backward()
    last = actor_mlp_params(loss)[str(len(HIDDEN) * 2)]
    assert last["weight"].grad[:ACT_DIM].abs().sum() > 0


def test_terminated_stops_bootstrap_and_truncation_does_not():
    loss = make_loss(reward_scale=SCALE, gamma=GAMMA)
    all_true = torch.ones(6, 1, dtype=torch.bool)
    terminated = make_batch(terminated=all_true)
    truncated = make_batch(truncated=all_true)
    r = terminated["next", "reward"].squeeze(-1)
    torch.testing.assert_close(loss(terminated)["target_value"], (SCALE * r).mean())
    v_next = loss.value_network(truncated["next"].clone())["state_value"].squeeze(-1)
    torch.testing.assert_close(
        loss(truncated)["target_value"], (SCALE * r + GAMMA * v_next.detach()).mean()
    )
    # Changing s' changes the Q loss only when the episode did not terminate.
    for td, should_change in ((terminated, False), (truncated, True)):
        moved = td.clone()
        moved["next", "observation"] += 1.0
        changed = not torch.allclose(loss(td)["loss_qvalue"], loss(moved)["loss_qvalue"])
        assert changed == should_change


def test_reward_scale_and_alpha_enter_where_the_equations_put_them():
    td = make_batch(terminated=torch.ones(6, 1, dtype=torch.bool))
    base, scaled = make_loss(reward_scale=1.0), make_loss(reward_scale=3.0)
    torch.testing.assert_close(scaled(td)["target_value"], 3.0 * base(td)["target_value"])
    # alpha changes the actor and value terms by exactly -/+ delta_alpha * log pi, never the Q term.
    lo, hi = make_loss(alpha=0.5), make_loss(alpha=2.0)
    torch.manual_seed(3)
    out_lo = lo(make_batch())
    torch.manual_seed(3)
    out_hi = hi(make_batch())
    log_pi_mean = -out_lo["entropy"]
    torch.testing.assert_close(out_hi["loss_qvalue"], out_lo["loss_qvalue"])
    torch.testing.assert_close(out_hi["loss_actor"] - out_lo["loss_actor"], 1.5 * log_pi_mean)
    assert not torch.allclose(out_hi["loss_value"], out_lo["loss_value"])


def test_batch_shapes_b_and_bt_agree():
    loss = make_loss()
    td = make_batch(batch=6)
    torch.manual_seed(4)
    flat = loss(td)
    torch.manual_seed(4)
    nested = loss(td.reshape(2, 3))
    for key in ("loss_value", "loss_qvalue", "loss_actor"):
        torch.testing.assert_close(nested[key], flat[key])
    assert td.get("td_error").shape == (6,)


def test_q_ensemble_is_stacked_and_independently_initialised():
    loss = make_loss(num_qvalue_nets=3)
    params = loss.qvalue_network_params
    assert params.batch_size == (3,)
    w = params["module", "0", "weight"]
    assert w.shape == (3, HIDDEN[0], OBS_DIM + ACT_DIM)
    assert not torch.allclose(w[0], w[1]) and not torch.allclose(w[1], w[2])
    assert loss.target_value_network_params is not None
    assert loss.value_network_params["module", "0", "weight"].shape == (HIDDEN[0], OBS_DIM)


def test_set_keys_remaps_every_input():
    torch.manual_seed(0)
    actor = make_actor(
        action_spec(), OBS_DIM, hidden_sizes=HIDDEN, observation_key="obs", action_key="act"
    )
    q = make_qvalue(OBS_DIM, ACT_DIM, hidden_sizes=HIDDEN, observation_key="obs", action_key="act")
    v = make_value(OBS_DIM, hidden_sizes=HIDDEN, observation_key="obs", out_key="v")
    custom = SACv1Loss(actor, q, v)
    custom.set_keys(action="act", value="v", reward="rew", terminated="term", done="fin")
    default = make_loss()
    td = make_batch()
    renamed = TensorDict(
        obs=td["observation"],
        act=td["action"],
        next=TensorDict(
            obs=td["next", "observation"],
            rew=td["next", "reward"],
            term=td["next", "terminated"],
            fin=td["next", "done"],
            batch_size=[6],
        ),
        batch_size=[6],
    )
    assert set(custom.in_keys) == {"act", "obs", ("next", "rew"), ("next", "term"), ("next", "obs")}
    torch.manual_seed(2)
    out_custom = custom(renamed)
    torch.manual_seed(2)
    out_default = default(td)
    for key in ("loss_value", "loss_qvalue", "loss_actor"):
        torch.testing.assert_close(out_custom[key], out_default[key])


def test_bad_input_gets_a_clear_error():
    loss = make_loss()
    td = make_batch()
    with pytest.raises(KeyError, match="'reward'"):
        loss(td.exclude(("next", "reward")))
    bad = td.clone()
    bad["next"] = bad["next"].exclude("terminated")
    with pytest.raises(KeyError, match="terminated"):
        loss(bad)
    bad = td.clone()
    bad["next", "reward"] = bad["next", "reward"].squeeze(-1)
    with pytest.raises(ValueError, match=r"\('next', 'reward'\).*expected \(6, 1\)"):
        loss(bad)
    bad = td.clone()
    bad["next", "reward"][2] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf"):
        loss(bad)
    bad = td.clone()
    bad.set("action", torch.zeros(6, ACT_DIM + 1), inplace=False)
    with pytest.raises(ValueError, match="'action' has shape"):
        loss(bad)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"alpha": 0.0}, "alpha"),
        ({"alpha": float("nan")}, "alpha"),
        ({"reward_scale": -1.0}, "reward_scale"),
        ({"num_qvalue_nets": 0}, "num_qvalue_nets"),
    ],
)
def test_bad_constructor_arguments_are_explained(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_loss(**kwargs)


def test_discount_comes_from_make_value_estimator():
    loss = make_loss(gamma=0.5)
    assert float(loss.discount) == 0.5
    # No TD0 estimator object is built (the loss computes its target itself) and the discount,
    # which comes from the config, is not checkpointed; older checkpoints still load.
    assert loss._value_estimator is None
    state = loss.state_dict()
    assert not [k for k in state if "gamma" in k or "discount" in k]
    loss.load_state_dict({**state, "_value_estimator.gamma": torch.tensor(0.5)})
    with pytest.raises(NotImplementedError, match="TD0"):
        loss.make_value_estimator(ValueEstimators.TDLambda)


def test_a_few_steps_on_a_fixed_batch_reduce_q_and_value_losses():
    from sac_tr.targets import make_target_updater

    loss = make_loss(reward_scale=SCALE, hidden_sizes=(64, 64))
    updater = make_target_updater(loss, tau=0.005)
    optim = torch.optim.Adam(loss.parameters(), lr=1e-3)
    td = make_batch(batch=16)
    history = []
    torch.manual_seed(0)
    for _ in range(200):
        out = loss(td)
        optim.zero_grad()
        (out["loss_actor"] + out["loss_qvalue"] + out["loss_value"]).backward()
        optim.step()
        updater.step()
        history.append((out["loss_qvalue"].item(), out["loss_value"].item()))
    first = torch.tensor(history[:10]).mean(0)
    last = torch.tensor(history[-10:]).mean(0)
    assert (last < 0.3 * first).all(), (first, last)


class _Wrapped(torch.nn.Module):
    """A Q or V module that is not a plain MLP: the loss must use its generic path."""

    def __init__(self, mlp):
        super().__init__()
        self.mlp = mlp

    def forward(self, *inputs):
        return self.mlp(*inputs)


def test_generic_module_path_matches_the_stacked_mlp_path():
    from tensordict.nn import TensorDictModule

    def build(wrap):
        torch.manual_seed(0)
        actor = make_actor(action_spec(), OBS_DIM, hidden_sizes=HIDDEN)
        qs = [make_qvalue(OBS_DIM, ACT_DIM, hidden_sizes=HIDDEN) for _ in range(2)]
        v = make_value(OBS_DIM, hidden_sizes=HIDDEN)
        if wrap:
            qs = [
                TensorDictModule(_Wrapped(q.module), in_keys=q.in_keys, out_keys=q.out_keys)
                for q in qs
            ]
            v = TensorDictModule(_Wrapped(v.module), in_keys=v.in_keys, out_keys=v.out_keys)
        loss = SACv1Loss(actor, qs, v, alpha=ALPHA, reward_scale=SCALE)
        loss.make_value_estimator(gamma=GAMMA)
        return loss

    fast, generic = build(wrap=False), build(wrap=True)
    from sac_tr.accel import accelerate

    assert accelerate(fast) == {"Q": "accelerated", "V": "accelerated", "actor": "accelerated"}
    assert accelerate(generic)["Q"].startswith("reference path")
    assert accelerate(generic)["V"].startswith("reference path")
    td = make_batch()
    torch.manual_seed(5)
    out_fast = fast(td.clone())
    torch.manual_seed(5)
    out_generic = generic(td.clone())
    for key in ("loss_actor", "loss_qvalue", "loss_value", "q_value", "target_value"):
        torch.testing.assert_close(out_fast[key], out_generic[key])
