"""relu_mlp: one autograd node with a hand-written backward, checked against finite differences
and against autograd through plain nn.Linear / nn.ReLU modules."""

import pytest
import torch
from tensordict import TensorDict
from torch import nn

from sac_tr.accel.mlp import mlp_apply, sequential_plan
from sac_tr.accel.relu_mlp import relu_mlp

SIZES = (5, 7, 6, 2)


def _nets(n: int) -> list[nn.Sequential]:
    """``n`` independent ReLU MLPs 5 -> 7 -> 6 -> 2 in float64."""
    torch.manual_seed(0)
    return [
        nn.Sequential(
            nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 6), nn.ReLU(), nn.Linear(6, 2)
        ).double()
        for _ in range(n)
    ]


def _linear_params(nets: list[nn.Sequential], ensemble: bool) -> list[torch.Tensor]:
    """[W1, b1, W2, b2, W3, b3] as fresh leaves, stacked over the nets for an ensemble."""
    out = []
    for index in (0, 2, 4):
        for kind in ("weight", "bias"):
            tensors = [getattr(net[index], kind).detach() for net in nets]
            out.append((torch.stack(tensors) if ensemble else tensors[0]).requires_grad_())
    return out


def _module_grads(nets: list[nn.Sequential], ensemble: bool) -> list[torch.Tensor]:
    out = []
    for index in (0, 2, 4):
        for kind in ("weight", "bias"):
            grads = [getattr(net[index], kind).grad for net in nets]
            out.append(torch.stack(grads) if ensemble else grads[0])
    return out


@pytest.mark.parametrize("ensemble", [False, True])
def test_relu_mlp_matches_finite_differences(ensemble):
    params = _linear_params(_nets(2 if ensemble else 1), ensemble)
    x = torch.randn(8, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, *p: relu_mlp(x, list(p)), (x, *params))


@pytest.mark.parametrize("ensemble", [False, True])
def test_weight_rows_train_the_parameters_on_the_first_rows_only(ensemble):
    """Rows [0, k) give the parameter gradients; every row gets its input gradient. Reference:
    autograd through the nn modules, the parameter gradients from rows [0, k) alone."""
    nets = _nets(2 if ensemble else 1)
    params = _linear_params(nets, ensemble)
    torch.manual_seed(1)
    x = torch.randn(9, 5, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(len(nets), 9, 2, dtype=torch.float64)
    k = 4

    out = relu_mlp(x, params, weight_rows=k)
    got = torch.autograd.grad(out, [x, *params], upstream if ensemble else upstream[0])

    expected_out = torch.stack([net(x) for net in nets])
    torch.testing.assert_close(out, expected_out if ensemble else expected_out[0])
    x_ref = x.detach().requires_grad_()
    (x_grad,) = torch.autograd.grad(
        sum((net(x_ref) * g).sum() for net, g in zip(nets, upstream, strict=True)), [x_ref]
    )
    torch.testing.assert_close(got[0], x_grad)
    sum(
        (net(x.detach()[:k]) * g[:k]).sum() for net, g in zip(nets, upstream, strict=True)
    ).backward()
    for g, want in zip(got[1:], _module_grads(nets, ensemble), strict=True):
        torch.testing.assert_close(g, want)


def test_mlp_apply_runs_other_activations_layer_by_layer_with_the_same_contract():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1)).double()
    plan = sequential_plan(net)
    params = TensorDict.from_module(net)
    x = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)

    out = mlp_apply(plan, params, x, prefix=(), weight_rows=2)
    torch.testing.assert_close(out, net(x.detach()))
    weights = [net[0].weight, net[0].bias, net[2].weight, net[2].bias]
    got = torch.autograd.grad(out.sum(), [x, *weights])

    x_ref = x.detach().requires_grad_()
    torch.testing.assert_close(got[0], torch.autograd.grad(net(x_ref).sum(), [x_ref])[0])
    for g, want in zip(
        got[1:], torch.autograd.grad(net(x.detach()[:2]).sum(), weights), strict=True
    ):
        torch.testing.assert_close(g, want)
    # the last bias gets one unit of gradient per training row: 2, not 6
    torch.testing.assert_close(got[4], torch.tensor([2.0], dtype=torch.float64))


def test_only_linear_relu_chains_are_fused():
    from sac_tr.accel import UnsupportedNetworkError
    from sac_tr.accel.mlp import _is_relu_chain

    def plan_of(*layers):
        return sequential_plan(nn.Sequential(*layers))

    assert _is_relu_chain(plan_of(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1)))
    assert _is_relu_chain(plan_of(nn.Linear(3, 1)))
    assert not _is_relu_chain(plan_of(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1)))
    assert not _is_relu_chain(plan_of(nn.ReLU(), nn.Linear(3, 1)))
    assert not _is_relu_chain(plan_of(nn.Linear(3, 4), nn.Linear(4, 1)))
    with pytest.raises(UnsupportedNetworkError):  # two activations in a row: no plan at all
        plan_of(nn.Linear(3, 4), nn.ReLU(), nn.ReLU(), nn.Linear(4, 1))


def test_squashed_sample_gradient_matches_finite_differences():
    """The hand-written backward of the squashed-Gaussian sample (a~ and log pi(a~|s) from mu,
    log sigma and fixed noise), against finite differences, on bounds other than [-1, 1]."""
    from sac_tr.accel.squashed_gaussian import _SquashedSample

    torch.manual_seed(0)
    loc = torch.randn(5, 2, dtype=torch.float64, requires_grad=True)
    log_std = (0.5 * torch.randn(5, 2, dtype=torch.float64)).requires_grad_()
    eps = torch.randn(5, 2, dtype=torch.float64)
    low = torch.tensor([-2.0, 0.0], dtype=torch.float64)
    high = torch.tensor([1.0, 3.0], dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda m, s: _SquashedSample.apply(m, s, eps, low, high), (loc, log_std)
    )


@pytest.mark.parametrize("activation", [nn.ReLU, nn.Tanh])  # the fused path and the fallback
def test_grad_rows_leave_the_last_rows_without_any_gradient(activation):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), activation(), nn.Linear(4, 2)).double()
    params = TensorDict.from_module(net)
    x = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    out = mlp_apply(sequential_plan(net), params, x, prefix=(), weight_rows=2, grad_rows=4)
    torch.testing.assert_close(out, net(x.detach()))
    weights = [net[0].weight, net[0].bias, net[2].weight, net[2].bias]
    got = torch.autograd.grad(out.sum(), [x, *weights])

    x_ref = x.detach().requires_grad_()
    (x_grad,) = torch.autograd.grad(net(x_ref)[:4].sum(), [x_ref])  # rows 4-5 contribute nothing
    torch.testing.assert_close(got[0], x_grad)
    assert torch.equal(got[0][4:], torch.zeros(2, 3, dtype=torch.float64))
    expected = torch.autograd.grad(net(x.detach()[:2]).sum(), weights)
    for g, want in zip(got[1:], expected, strict=True):
        torch.testing.assert_close(g, want)
