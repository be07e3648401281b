"""The stacked-weight MLP evaluation: the same function as the module, inputs left untouched."""

import pytest
import torch
from tensordict import TensorDict
from torch import nn

from sac_tr.accel import UnsupportedNetworkError
from sac_tr.accel.mlp import mlp_forward, sequential_plan


def test_mlp_forward_equals_the_module_and_never_modifies_its_input():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.ReLU(), nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2), nn.ELU(), nn.Linear(2, 1)
    )
    plan = sequential_plan(net)
    assert [name for name, act in plan if act is None] == ["1", "3", "5"]
    x = torch.randn(5, 3)
    before = x.clone()
    params = TensorDict.from_module(net)
    out = mlp_forward(plan, params, x, prefix=())
    torch.testing.assert_close(out, net(before))
    assert torch.equal(x, before)  # the leading ReLU must not act on the caller's tensor in place


def test_plans_refuse_what_they_cannot_evaluate():
    for net, reason in [
        (
            nn.Sequential(nn.Linear(3, 4), nn.LeakyReLU(), nn.Linear(4, 1)),
            "LeakyReLU not supported",
        ),
        (nn.Sequential(nn.Linear(3, 4), nn.ReLU()), "does not end with a Linear"),
        (nn.Sequential(nn.Linear(3, 4, bias=False)), "Linear without bias"),
        (nn.Linear(3, 4), "Linear not supported"),
    ]:
        with pytest.raises(UnsupportedNetworkError, match=reason):
            sequential_plan(net)


def test_fast_acting_policy_is_the_actor_by_hand_and_follows_its_updates():
    from helpers import HIGH, LOW, action_spec, squashed_gaussian_by_hand
    from torchrl.envs.utils import ExplorationType, set_exploration_type

    from sac_tr.accel import accelerate_policy
    from sac_tr.accel.squashed_gaussian import SquashedGaussianPolicy
    from sac_tr.modules import make_actor

    torch.manual_seed(0)
    actor = make_actor(action_spec(), 3, hidden_sizes=(8,))
    policy, path = accelerate_policy(actor)
    assert path == "accelerated"
    assert isinstance(policy, SquashedGaussianPolicy)
    obs = TensorDict(observation=torch.randn(5, 3), batch_size=[5])
    for step in range(2):
        loc, scale = actor.module[0](obs.clone()).select("loc", "scale").values()
        with set_exploration_type(ExplorationType.DETERMINISTIC):
            mean_action = LOW + (HIGH - LOW) / 2 * (torch.tanh(loc) + 1)
            torch.testing.assert_close(policy(obs.clone())["action"], mean_action.detach())
        torch.manual_seed(10 + step)
        eps = torch.randn(5, 2)
        by_hand, _ = squashed_gaussian_by_hand(loc, scale.log(), eps)
        torch.manual_seed(10 + step)
        with set_exploration_type(ExplorationType.RANDOM):
            torch.testing.assert_close(policy(obs.clone())["action"], by_hand.detach())
        with torch.no_grad():
            for p in actor.parameters():
                p.add_(0.5)  # an optimizer step, in place: the policy must act with it at once
    policy, path = accelerate_policy(actor.module[0])  # not a squashed-Gaussian actor
    assert (
        policy is actor.module[0]
        and path == "reference path (TensorDictModule has no action distribution (get_dist))"
    )


def test_two_activations_in_a_row_take_the_reference_path():
    # The fast MLP applies one activation after each Linear; a chain it cannot express must be
    # refused by the plan, not crash the probe (auto never stops a run over acceleration).
    with pytest.raises(UnsupportedNetworkError, match="Tanh follows another activation"):
        sequential_plan(nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Tanh(), nn.Linear(4, 1)))


def test_a_failing_probe_leaves_the_network_on_the_reference_path(monkeypatch):
    from sac_tr.accel import install

    def broken():
        raise RuntimeError("boom")

    assert install._path("Q", object(), "auto", broken) == (
        None,
        "reference path (probe failed: RuntimeError: boom)",
    )
    with pytest.raises(install.AccelerationError, match="probe failed: RuntimeError: boom"):
        install._path("Q", object(), "on", broken)
