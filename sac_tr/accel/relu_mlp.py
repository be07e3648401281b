"""A ReLU MLP (or a stack of them) as one autograd node, with a hand-written backward.

Evaluating ``Linear -> ReLU -> ... -> Linear`` op by op records one autograd node per matmul,
bias and activation, and autograd's backward of a batched matmul against a transposed weight
copies the transposed gradient. ``relu_mlp`` computes the same function with the same matmuls
and writes the backward out (the chain rule below), so the whole network is a single node.

Activations are kept feature-major (``[out, B]``, or ``[N, out, B]`` for an ensemble of ``N``
networks with parameters stacked on dim 0), so every weight gradient comes out of its matmul in
the parameter's own layout and nothing is transposed and copied.

``weight_rows=k`` lets one call serve two uses of the same network: only rows ``[0, k)`` of the
input contribute to the parameter gradients, while the gradient with respect to the input is
returned for every row. SAC evaluates Q on the replayed actions (trained through the Q loss) and
on fresh actions (differentiated only with respect to the action, eq. 12) in one call this way.
``grad_rows=m`` marks rows ``[m, B)`` as taking no gradient at all (the caller detaches them),
so the backward skips them: SAC-v2 samples ``a~ ~ pi(.|s)`` and ``a' ~ pi(.|s')`` in one call.

Chain rule, layer ``l`` with ``z_l = W_l h_{l-1} + b_l`` and ``h_l = relu(z_l)``:
``dW_l = dz_l h_{l-1}^T``, ``db_l = sum_B dz_l``, ``dh_{l-1} = W_l^T dz_l``,
``dz_{l-1} = dh_{l-1} * [h_{l-1} > 0]``.
"""

from __future__ import annotations

import torch

__all__ = ["relu_mlp"]


def _layer(weight: torch.Tensor, bias: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """``W h + b`` for feature-major ``h``: ``[in, B]`` (shared input) or ``[N, in, B]``."""
    if weight.dim() == 2:
        return torch.addmm(bias.unsqueeze(-1), weight, h)
    if h.dim() == 2:  # first layer of an ensemble: one matmul for all members
        n, out, inp = weight.shape
        return torch.addmm(bias.reshape(n * out, 1), weight.reshape(n * out, inp), h).view(
            n, out, -1
        )
    return torch.baddbmm(bias.unsqueeze(-1), weight, h)


def _weight_grad(dz: torch.Tensor, h: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``dW = dz h^T`` in the layout of ``weight``."""
    if weight.dim() == 2:
        return torch.mm(dz, h.t())
    if h.dim() == 2:
        n, out, inp = weight.shape
        return torch.mm(dz.reshape(n * out, -1), h.t()).view(n, out, inp)
    return torch.bmm(dz, h.transpose(1, 2))


def _input_grad(dz: torch.Tensor, weight: torch.Tensor, shared_input: bool) -> torch.Tensor:
    """``dh = W^T dz`` (summed over the members when they share their input)."""
    if weight.dim() == 2:
        return torch.mm(weight.t(), dz)
    if shared_input:
        n, out, inp = weight.shape
        return torch.mm(weight.reshape(n * out, inp).t(), dz.reshape(n * out, -1))
    return torch.bmm(weight.transpose(1, 2), dz)


class _ReluMLP(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx, x: torch.Tensor, weight_rows: int | None, grad_rows: int | None, *params: torch.Tensor
    ):
        h = x.t()
        hidden = []
        n_layers = len(params) // 2
        for layer in range(n_layers):
            h = _layer(params[2 * layer], params[2 * layer + 1], h)
            if layer < n_layers - 1:
                h = h.relu_()
                hidden.append(h)
        ctx.save_for_backward(x, *hidden, *params)
        ctx.weight_rows = weight_rows
        ctx.grad_rows = grad_rows
        ctx.n_layers = n_layers
        return h.transpose(-1, -2)  # [B, out] or [N, B, out]

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        saved = ctx.saved_tensors
        n_layers = ctx.n_layers
        x, hidden, params = saved[0], saved[1:n_layers], saved[n_layers:]
        inputs = [x.t(), *hidden]  # the input of each layer, feature-major
        rows, live = ctx.weight_rows, ctx.grad_rows
        dz = grad_out.transpose(-1, -2)
        if live is not None:  # rows [live, B) take no gradient: leave them out from here on
            dz, inputs = dz[..., :live], [h[..., :live] for h in inputs]
        grads: list[torch.Tensor | None] = [None] * len(params)
        dx = None
        for layer in reversed(range(n_layers)):
            weight = params[2 * layer]
            h_in = inputs[layer]
            if ctx.needs_input_grad[3 + 2 * layer] or ctx.needs_input_grad[4 + 2 * layer]:
                dz_w = dz if rows is None else dz[..., :rows]
                h_w = h_in if rows is None else h_in[..., :rows]
                grads[2 * layer] = _weight_grad(dz_w, h_w, weight)
                grads[2 * layer + 1] = dz_w.sum(-1)
            if layer > 0:
                dh = _input_grad(dz, weight, shared_input=False)
                dz = torch.ops.aten.threshold_backward(dh, h_in, 0.0)
            elif ctx.needs_input_grad[0]:
                dx = _input_grad(dz, weight, shared_input=weight.dim() == 3).t()
                if live is not None:
                    dx = torch.cat([dx, dx.new_zeros(x.shape[0] - live, x.shape[1])])
        return (dx, None, None, *grads)


def relu_mlp(
    x: torch.Tensor,
    params: list[torch.Tensor],
    weight_rows: int | None = None,
    grad_rows: int | None = None,
) -> torch.Tensor:
    """``Linear -> ReLU -> ... -> Linear`` of ``x`` (``[B, in]``) as one autograd node.

    Args:
        x: the input, ``[B, in]``, shared by every member of an ensemble.
        params: ``[W_1, b_1, ..., W_L, b_L]`` in ``nn.Linear``'s layout (``[out, in]``, ``[out]``),
            or stacked on a leading ensemble dim (``[N, out, in]``, ``[N, out]``).
        weight_rows: only rows ``[0, weight_rows)`` of ``x`` contribute to the parameter
            gradients (``None``: all rows). The input gradient covers every row.
        grad_rows: rows ``[grad_rows, B)`` take no gradient at all (their outputs must not be
            differentiated; ``None``: every row may be). ``weight_rows <= grad_rows``.

    Returns:
        ``[B, out]``, or ``[N, B, out]`` for stacked parameters.
    """
    if weight_rows is not None and grad_rows is not None and weight_rows > grad_rows:
        raise ValueError(f"weight_rows ({weight_rows}) must not exceed grad_rows ({grad_rows}).")
    return _ReluMLP.apply(x, weight_rows, grad_rows, *params)
