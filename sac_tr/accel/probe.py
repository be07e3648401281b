"""The construction-time proof that a fast evaluator computes what the module computes.

On a random batch (drawn from a private generator: the run's random numbers are untouched) the
network's own module, the loss's own reference code for it (``_q_values``, ``_state_values``,
``_sample_action``, ...: what the evaluator replaces) and the fast evaluator are run under the same
seed, in train mode and in eval mode; their outputs, and the gradients of a random linear
functional of the outputs with respect to the parameters (and the fresh action, for Q), must agree
within float tolerance. Any disagreement raises ``UnsupportedNetworkError`` naming what differed
and in which mode, and the network stays on the reference path.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torchrl.envs.utils import ExplorationType, set_exploration_type

from sac_tr.accel.checks import UnsupportedNetworkError

__all__ = ["probe_batch", "probe_policy", "probe_q", "probe_sampler", "probe_value"]

ROWS = 16  # rows of the probe batch
RTOL = 2e-5  # |fast - reference| <= RTOL * (1 + max |reference|), per tensor
_SEED = 12_345

Outputs = Sequence[torch.Tensor]


@contextlib.contextmanager
def _seeded(device: torch.device) -> Iterator[None]:
    """Run the body on a fixed seed and restore the global random state afterwards. Only the
    generators the probe draws from are seeded and restored: the CPU's and, on CUDA, its own
    device's (``torch.manual_seed`` would reseed every visible GPU, and forking them all is slow)."""
    if device.type == "cuda":
        devices = [torch.cuda.current_device() if device.index is None else device.index]
    else:
        devices = []
    with torch.random.fork_rng(devices=devices):
        torch.random.default_generator.manual_seed(_SEED)
        for index in devices:
            torch.cuda.default_generators[index].manual_seed(_SEED)
        yield


@contextlib.contextmanager
def _modes(module: torch.nn.Module) -> Iterator[Iterator[str]]:
    """Yield an iterator that puts ``module`` in train mode, then in eval mode (``"train"``,
    ``"eval"``); every submodule's own mode is restored afterwards."""
    before = [(m, m.training) for m in module.modules()]

    def each() -> Iterator[str]:
        for training in (True, False):
            module.train(training)
            yield "train" if training else "eval"

    try:
        yield each()
    finally:
        for m, training in before:
            m.training = training


def probe_batch(widths: dict, like: torch.Tensor) -> TensorDict:
    """Random inputs ``[ROWS, width]`` for each key, from a private generator; a ``"next"``
    entry holds a second batch of the same keys."""
    gen = torch.Generator().manual_seed(_SEED)

    def draw() -> TensorDict:
        return TensorDict(
            {k: torch.randn(ROWS, w, generator=gen).to(like) for k, w in widths.items()},
            batch_size=[ROWS],
        )

    td = draw()
    td["next"] = draw()
    return td


def _compare(
    what: str,
    reference: Sequence[torch.Tensor | None],
    fast: Sequence,
    against: str = "the module's own",
) -> None:
    for i, (ref, got) in enumerate(zip(reference, fast, strict=True)):
        if ref is None and got is None:
            continue
        ref = torch.zeros_like(got) if ref is None else ref
        got = torch.zeros_like(ref) if got is None else got
        if ref.shape != got.shape:
            raise UnsupportedNetworkError(
                f"probe: {what} [{i}] has shape {tuple(got.shape)}, not {tuple(ref.shape)}"
            )
        error = float((ref.detach() - got.detach()).abs().max()) if ref.numel() else 0.0
        scale = float(ref.detach().abs().max()) if ref.numel() else 0.0
        if not error <= RTOL * (1.0 + scale):
            raise UnsupportedNetworkError(
                f"probe: {what} [{i}] differs from {against} by {error:.3g}"
            )


def _agree(
    what: str,
    reference: Callable[[], Outputs],
    fast: Callable[[], Outputs],
    inputs: Sequence[torch.Tensor],
    device: torch.device,
    against: str = "the module's own",
) -> None:
    """Same seed, same outputs, same gradients with respect to ``inputs``; a difference is
    named as one from ``against`` (what ``reference`` computes)."""
    results = []
    for fn in (reference, fast):
        with _seeded(device):
            results.append(list(fn()))
    gen = torch.Generator().manual_seed(_SEED + 1)
    cotangents = [torch.randn(out.shape, generator=gen).to(out) for out in results[0]]
    _compare(what, results[0], results[1], against)
    grads = []
    for outs in results:
        terms = [(o * c).sum() for o, c in zip(outs, cotangents, strict=True) if o.requires_grad]
        grads.append(
            torch.autograd.grad(sum(terms), inputs, allow_unused=True)
            if terms and inputs
            else [None] * len(inputs)
        )
    _compare(f"{what}: gradient", grads[0], grads[1], against)


def _leaves(params: TensorDictBase) -> list[torch.Tensor]:
    return [p for p in params.values(True, True) if p.requires_grad]


def probe_q(loss, evaluator, widths: dict) -> None:
    """The Q ensemble: every member through ``loss.qvalue_network`` with its own parameters, and
    the loss's own ``_q_values`` and ``_q_replayed_and_fresh``, in train and in eval mode."""
    module, params = loss.qvalue_network, loss.qvalue_network_params
    out_key, action_key = loss.tensor_keys.state_action_value, loss.tensor_keys.action
    first = next(iter(params.values(True, True)))
    td = probe_batch(widths, first)
    gen = torch.Generator().manual_seed(_SEED + 2)
    fresh = torch.randn(td.get(action_key).shape, generator=gen).to(first).requires_grad_()

    def members(action: torch.Tensor | None, p: TensorDictBase) -> torch.Tensor:
        q_in = td.select(*module.in_keys).copy()
        if action is not None:
            q_in.set(action_key, action)
        out = []
        for i in range(first.shape[0]):
            with p[i].to_module(module):
                out.append(module(q_in.copy()).get(out_key).squeeze(-1))
        return torch.stack(out)

    inputs = [*_leaves(params), fresh]

    def values() -> Outputs:
        return [evaluator.values(td, None, params)]

    def pair() -> Outputs:
        return evaluator.replayed_and_fresh(td, fresh, params)

    checks = [
        ("Q values", lambda: [members(None, params)], values),
        ("Q values through the loss", lambda: [loss._q_values(td, None, params)], values),
        (
            "Q on replayed and fresh actions",
            lambda: [members(None, params), members(fresh, params.detach())],
            pair,
        ),
        (
            "Q on replayed and fresh actions through the loss",
            lambda: list(loss._q_replayed_and_fresh(td, fresh)),
            pair,
        ),
    ]
    _agree_in_modes(loss, "q_evaluator", module, checks, inputs, first.device)


def _agree_in_modes(
    loss, attr: str, network: torch.nn.Module, checks: list, inputs: Sequence, device
) -> None:
    """``_agree`` on each ``(what, reference, fast)`` of ``checks``, with ``network`` in train
    mode, then in eval mode, and ``loss``'s evaluator ``attr`` unset; a ``what`` ending in
    "through the loss" compares with the loss's own reference code."""
    with _reference_path(loss, attr), _modes(network) as modes:
        for mode in modes:
            for what, reference, fast in checks:
                loss_own = what.endswith("through the loss")
                against = "the loss's own" if loss_own else "the module's own"
                _agree(f"{what} ({mode} mode)", reference, fast, inputs, device, against)


@contextlib.contextmanager
def _reference_path(loss, attr: str) -> Iterator[None]:
    """``loss`` with its evaluator ``attr`` unset: its own methods run the reference path."""
    saved = getattr(loss, attr)
    setattr(loss, attr, None)
    try:
        yield
    finally:
        setattr(loss, attr, saved)


def probe_value(loss, evaluator, widths: dict) -> None:
    """The value network through its own forward and through the loss's own ``_state_values``,
    in train and in eval mode."""
    module, params = loss.value_network, loss.value_network_params
    first = next(iter(params.values(True, True)))
    td = probe_batch(widths, first)

    def reference() -> Outputs:
        with params.to_module(module):
            return [
                module(td.select(*module.in_keys).copy()).get(loss.tensor_keys.value).squeeze(-1)
            ]

    def values() -> Outputs:
        return [evaluator.values(td, params)]

    checks = [
        ("V values", reference, values),
        ("V values through the loss", lambda: [loss._state_values(td, params)], values),
    ]
    _agree_in_modes(loss, "value_evaluator", module, checks, _leaves(params), first.device)


def probe_sampler(loss, sampler, widths: dict) -> None:
    """The actor's own distribution: ``rsample_and_log_prob`` on the same noise, the pair on
    ``(s, s')`` in that order, both also through the loss's own ``_sample_action`` and
    ``_sample_current_and_next``, and ``log_prob`` of the sampled action (unsaturated rows), in
    train and in eval mode."""
    actor, params = loss.actor_network, loss.actor_network_params
    first = next(iter(params.values(True, True)))
    td = probe_batch(widths, first)

    def dist(batch: TensorDictBase):
        return actor.get_dist(batch.select(*actor.in_keys).copy())

    def reference_sample(batch: TensorDictBase) -> Outputs:
        with params.to_module(actor):
            return dist(batch).rsample_and_log_prob()

    def reference_pair() -> Outputs:
        action, log_prob = reference_sample(td)
        with torch.no_grad():
            return [action, log_prob, *reference_sample(td.get("next"))]

    leaves, device = _leaves(params), first.device

    def sample() -> Outputs:
        return sampler.sample(td, params)

    def pair() -> Outputs:
        return sampler.sample_pair(td, td.get("next"), params)

    checks = [
        ("actor sample", lambda: reference_sample(td), sample),
        ("actor sample through the loss", lambda: loss._sample_action(td), sample),
        ("actor sample on (s, s')", reference_pair, pair),
        (
            "actor sample on (s, s') through the loss",
            lambda: loss._sample_current_and_next(td),
            pair,
        ),
    ]
    _refuse_small_sigma(actor, params, td)
    _agree_in_modes(loss, "actor_sampler", actor, checks, leaves, device)
    with _modes(actor) as modes:
        for mode in modes:
            with _seeded(device):
                action, log_prob = sampler.sample(td, params)
            with params.to_module(actor):
                given = dist(td).log_prob(action.detach())
                scale = _scale(actor, td)
            # Scored only where inverting the action is exact enough: TanhNormal.log_prob
            # recovers u = atanh(a) (the sampler scores its own pre-tanh u), off by about
            # 6e-8 / (1 - tanh(u)^2) <= 3e-6 while |tanh(u)| < 0.99, and that error moves the
            # log-density by about |eps| / sigma times it: <= 1e-4 for sigma >= 0.1 (within
            # RTOL of a log-density of a few units), unbounded as sigma -> 0.
            low, high = sampler.plan.bounds(action)
            interior = ((2 * action - high - low) / (high - low)).abs().amax(-1) < 0.99
            if not interior.any():
                raise UnsupportedNetworkError(
                    "probe: every sampled action saturates; cannot score the log-density"
                )
            scorable = interior & (scale.amin(-1) >= _SCORABLE_SIGMA)
            if not scorable.any():
                raise UnsupportedNetworkError(
                    f"probe: every unsaturated sampled action has a sigma below {_SCORABLE_SIGMA:g} "
                    "in some dimension; cannot score the log-density"
                )
            _compare(
                f"log-density of a given action ({mode} mode)",
                [given[scorable]],
                [log_prob[scorable]],
            )


_SCORABLE_SIGMA = 0.1  # see probe_sampler: where a given action's log-density is well conditioned
_SMALL_SIGMA = 1e-3  # below it, TorchRL's log-density loses digits the fast sampler keeps


def _scale(actor, td: TensorDictBase) -> torch.Tensor:
    """The actor's sigma on ``td`` (its parameters in place), as its network gives it: the
    second key the distribution reads (``squashed_gaussian_plan`` checked them: loc, scale)."""
    net = actor.module[0]
    return net(td.select(*net.in_keys).copy()).get(net.out_keys[1]).detach()


def _refuse_small_sigma(actor, params: TensorDictBase, td: TensorDictBase) -> None:
    """Refuse an actor whose sigma on the probe batch, in train or in eval mode, is below
    ``_SMALL_SIGMA``: there TorchRL's ``TanhNormal`` recomputes ``(u - mu) / sigma`` from a rounded
    ``u = mu + sigma eps``, losing about 6e-8 |u| / sigma of ``eps`` (with |u| near 1, about 1e-4
    of a dimension's log-density at sigma = 1e-3, growing as 1 / sigma), digits that the fast
    sampler's exact log-density (eq. 21, from ``eps`` itself) keeps: the same formula, numbers
    that can differ by more than ``RTOL``. A scale mapping with a floor (NormalParamExtractor's
    relu, clamped at ``scale_lb`` = 1e-4) lives there. States and next states are looked at."""
    batches = (td, td.get("next"))  # sample_pair acts on both
    with torch.no_grad(), params.to_module(actor), _modes(actor) as modes:
        smallest = min(float(_scale(actor, batch).min()) for _ in modes for batch in batches)
    if smallest < _SMALL_SIGMA:
        raise UnsupportedNetworkError(
            f"probe: the actor's sigma is as small as {smallest:.2g} on the probe batch, below "
            f"{_SMALL_SIGMA:g} (a scale mapping such as NormalParamExtractor's relu stops at its "
            "floor scale_lb), where TorchRL's TanhNormal scores (u - mu) / sigma from a rounded "
            "u and the fast sampler's exact log-density can differ from it by more than the "
            "probe's tolerance; the reference path computes exactly what your module computes"
        )


def probe_policy(actor: TensorDictModuleBase, policy: TensorDictModuleBase, widths: dict) -> None:
    """The acting policy against the actor's own forward: the deterministic action and, on the
    same seed, the sampled one, in train and in eval mode."""
    first = next(actor.parameters())
    td = probe_batch(widths, first)
    key = policy.out_keys[0]
    with _modes(actor) as modes:  # the collector acts in eval mode (or train, if asked)
        for mode in modes:
            for kind in (ExplorationType.DETERMINISTIC, ExplorationType.RANDOM):
                outs = []
                for module in (actor, policy):
                    with torch.no_grad(), set_exploration_type(kind), _seeded(first.device):
                        outs.append(module(td.select(*actor.in_keys).copy()).get(key))
                _compare(f"policy action ({kind.name.lower()}, {mode} mode)", [outs[0]], [outs[1]])
