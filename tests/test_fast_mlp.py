"""The stacked-weight MLP evaluation: the same function as the module, inputs left untouched."""

import torch
from tensordict import TensorDict
from torch import nn

from sac_tr.losses.fast_mlp import mlp_forward, sequential_plan


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
    assert sequential_plan(nn.Sequential(nn.Linear(3, 4), nn.LeakyReLU(), nn.Linear(4, 1))) is None
    assert sequential_plan(nn.Sequential(nn.Linear(3, 4), nn.ReLU())) is None  # must end linear
    assert sequential_plan(nn.Sequential(nn.Linear(3, 4, bias=False))) is None
    assert sequential_plan(nn.Linear(3, 4)) is None
