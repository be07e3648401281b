"""The acceleration layer: a user's network is computed by its own module unless a fast evaluator is
proven equal to it, and the run says which path each network took.

The reference for every loss here is the loss's equations written out with each network called
through its own module (autograd through the user's module), independent of both paths.
"""

import pytest
import torch
from helpers import ACT_DIM, HIDDEN, HIGH, LOW, OBS_DIM, action_spec, make_batch
from tensordict import TensorDict
from tensordict.nn import NormalParamExtractor
from torch import nn
from torch.overrides import TorchFunctionMode
from torchrl.modules import MLP, ValueOperator

from sac_tr import SACv1Loss, make_actor, make_qvalue, make_value
from sac_tr.accel import AccelerationError, accelerate, accelerate_policy
from sac_tr.accel.critics import MLPQEnsemble, MLPValue
from sac_tr.accel.squashed_gaussian import SquashedGaussianPlan, SquashedGaussianSampler
from sac_tr.losses import DeterministicSACLoss, SACv2Loss
from sac_tr.modules import ClampedLogStdNormalParams, make_deterministic_actor, tanh_normal_actor

ALL_FAST = {"Q": "accelerated", "V": "accelerated", "actor": "accelerated"}


# ---------------------------------------------------------------------------- a user's networks
class ResidualQ(MLP):
    """A Q-network that subclasses TorchRL's MLP and overrides forward: a skip term and a rescale."""

    def forward(self, *inputs):
        return 0.5 * super().forward(*inputs) + torch.cat(inputs, -1).sum(-1, keepdim=True)


class ScaledMLP(MLP):
    """An actor trunk that subclasses MLP and overrides forward (its output halved)."""

    def forward(self, *inputs):
        return 0.5 * super().forward(*inputs)


def make_residual_q(observation_dim, action_dim, *, hidden_sizes, activation):
    """A critic builder for ``critic.target=test_accel.make_residual_q``."""
    net = ResidualQ(
        in_features=observation_dim + action_dim,
        out_features=1,
        num_cells=list(hidden_sizes),
        activation_class=activation,
    )
    return ValueOperator(net, in_keys=["observation", "action"])


def droq_q():
    """DroQ-style critic: dropout and LayerNorm after every hidden layer."""
    net = MLP(
        in_features=OBS_DIM + ACT_DIM,
        out_features=1,
        num_cells=list(HIDDEN),
        dropout=0.2,
        norm_class=nn.LayerNorm,
        norm_kwargs={"normalized_shape": HIDDEN[0]},
    )
    return ValueOperator(net, in_keys=["observation", "action"])


def layernorm_value():
    net = MLP(
        in_features=OBS_DIM,
        out_features=1,
        num_cells=list(HIDDEN),
        norm_class=nn.LayerNorm,
        norm_kwargs={"normalized_shape": HIDDEN[0]},
    )
    return ValueOperator(net, in_keys=["observation"])


def hooked_value():
    """make_value's network with a forward hook that rescales its output."""
    value = make_value(OBS_DIM, hidden_sizes=HIDDEN)
    value.module.register_forward_hook(lambda module, args, out: 3.0 * out - 1.0)
    return value


def hand_built_actor(trunk=MLP, head=None):
    """An MLP and a normal-parameter head in TorchRL's standard squashed-Gaussian assembly."""
    net = nn.Sequential(
        trunk(in_features=OBS_DIM, out_features=2 * ACT_DIM, num_cells=list(HIDDEN)),
        head or NormalParamExtractor(),
    )
    return tanh_normal_actor(net, action_spec())


def hand_built_q():
    net = MLP(in_features=OBS_DIM + ACT_DIM, out_features=1, num_cells=list(HIDDEN))
    return ValueOperator(net, in_keys=["observation", "action"])


def hand_built_value():
    return ValueOperator(MLP(in_features=OBS_DIM, out_features=1, num_cells=list(HIDDEN)))


def build(version, actor=None, q=None, value=None, seed=0):
    torch.manual_seed(seed)
    actor = actor or make_actor(action_spec(), OBS_DIM, hidden_sizes=HIDDEN)
    q = q or make_qvalue(OBS_DIM, ACT_DIM, hidden_sizes=HIDDEN)
    if version == "deterministic":
        actor = make_deterministic_actor(action_spec(), OBS_DIM, hidden_sizes=HIDDEN)
        loss = DeterministicSACLoss(actor, q, value or make_value(OBS_DIM, hidden_sizes=HIDDEN))
    elif version == "v1":
        loss = SACv1Loss(actor, q, value or make_value(OBS_DIM, hidden_sizes=HIDDEN), alpha=0.7)
    else:
        loss = SACv2Loss(actor, q, alpha_init=0.7, reward_scale=2.0)
    loss.make_value_estimator(gamma=0.9)
    return loss


# ---------------------------------------------------------------------------- the reference
def _own(module, params, td):
    """The module's own forward with ``params``, on a copy of ``td``."""
    with params.to_module(module):
        return module(td.copy())


def q_members(loss, params, td, action=None):
    """``[N, B]``: each Q-function through the user's module with its own parameters."""
    module = loss.qvalue_network
    q_in = td.select(*module.in_keys, strict=False).copy()
    if action is not None:
        q_in.set("action", action)
    return torch.stack(
        [
            _own(module, params[i], q_in)["state_action_value"].squeeze(-1)
            for i in range(loss.num_qvalue_nets)
        ]
    )


def reference_losses(loss, td):
    """The loss's equations (v1 eqs. 5, 7, 8, 12; v2 as its docstring) with every network called
    through its own module."""
    actor, actor_params = loss.actor_network, loss.actor_network_params

    def sample(batch):
        if not hasattr(actor, "get_dist"):  # the deterministic variant: mu(s), no entropy
            action = _own(actor, actor_params, batch.select(*actor.in_keys))["action"]
            return action, action.new_zeros(action.shape[:-1])
        with actor_params.to_module(actor):
            return actor.get_dist(batch.select(*actor.in_keys).copy()).rsample_and_log_prob()

    v1 = isinstance(loss, SACv1Loss)
    action, log_prob = sample(td)
    if not v1:
        with torch.no_grad():
            next_action, next_log_prob = sample(td["next"])
    alpha = loss.alpha.detach()
    q_pred = q_members(loss, loss.qvalue_network_params, td)
    min_q_fresh = q_members(loss, loss.qvalue_network_params.detach(), td, action).min(0).values
    out = {"loss_actor": (alpha * log_prob - min_q_fresh).mean()}
    reward, terminated = td["next", "reward"].squeeze(-1), td["next", "terminated"].squeeze(-1)
    bootstrap = loss.discount * (~terminated).float()
    if v1:
        v_net = loss.value_network
        v = _own(v_net, loss.value_network_params, td)["state_value"].squeeze(-1)
        target = (min_q_fresh - alpha * log_prob).detach()
        out["loss_value"] = 0.5 * (v - target).pow(2).mean()
        with torch.no_grad():
            next_v = _own(v_net, loss.target_value_network_params, td["next"])["state_value"]
            q_hat = loss.reward_scale * reward + bootstrap * next_v.squeeze(-1)
    else:
        with torch.no_grad():
            params = loss.target_qvalue_network_params
            next_q = q_members(loss, params, td["next"], next_action).min(0).values
            q_hat = loss.reward_scale * reward + bootstrap * (next_q - alpha * next_log_prob)
        out["loss_alpha"] = (-loss.log_alpha * (log_prob.detach() + loss.target_entropy)).mean()
    out["loss_qvalue"] = 0.5 * (q_pred - q_hat).pow(2).mean(1).sum()
    return out


def assert_matches_the_modules(loss, seed=3):
    """The loss's values and parameter gradients equal the reference's, on the same noise."""
    td = make_batch(batch=7)
    torch.manual_seed(seed)
    got = loss(td.clone())
    torch.manual_seed(seed)
    want = reference_losses(loss, td.clone())
    params = [p for p in loss.parameters() if p.requires_grad]
    grads = [
        torch.autograd.grad(sum(out[k] for k in want), params, allow_unused=True)
        for out in (got, want)
    ]
    for key, value in want.items():
        torch.testing.assert_close(got[key], value, rtol=1e-5, atol=1e-5, msg=key)
    for g, w in zip(*grads, strict=True):
        g = torch.zeros_like(w) if g is None else g
        w = torch.zeros_like(g) if w is None else w
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------- the scenarios
@pytest.mark.parametrize("version", ["v1", "v2", "deterministic"])
@pytest.mark.parametrize("mode", ["auto", "off"])
def test_default_networks_match_their_modules_on_both_paths(version, mode):
    loss = build(version)
    paths = accelerate(loss, mode)
    expected = {k: v for k, v in ALL_FAST.items() if version != "v2" or k != "V"}
    if version == "deterministic":
        expected["actor"] = (
            "reference path (TensorDictSequential has no action distribution (get_dist))"
        )
    if mode == "off":
        expected = dict.fromkeys(expected, "reference path (accelerate=off)")
    assert paths == expected
    assert_matches_the_modules(loss)


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_a_q_that_subclasses_mlp_and_overrides_forward_runs_its_own_forward(version):
    loss = build(
        version, q=make_residual_q(OBS_DIM, ACT_DIM, hidden_sizes=HIDDEN, activation=nn.ReLU)
    )
    paths = accelerate(loss)
    assert paths["Q"] == "reference path (ResidualQ overrides forward)"
    assert paths["actor"] == "accelerated" and loss.q_evaluator is None
    assert_matches_the_modules(loss)
    with pytest.raises(
        AccelerationError, match=r"Q \(ValueOperator\).*ResidualQ overrides forward"
    ):
        accelerate(loss, "on")


def test_a_layernorm_dropout_q_takes_vmap_with_its_own_dropout_masks_per_member():
    loss = build("v2", q=droq_q())
    assert accelerate(loss)["Q"] == "reference path (Dropout not supported)"
    q = loss.qvalue_network  # loss.eval() does not reach it: LossModule hides its networks
    q.eval()  # dropout off: the loss must equal the module's own forward exactly
    assert_matches_the_modules(loss)
    q.train()
    with torch.no_grad():  # both members identical: only their dropout masks can differ
        for leaf in loss.qvalue_network_params.values(True, True):
            leaf[1].copy_(leaf[0])
    td = make_batch(batch=64)
    params = loss.qvalue_network_params
    q_train = loss._q_values(td, None, params)
    assert not torch.equal(q_train[0], q_train[1])  # each member draws its own masks
    q.eval()
    q_eval = loss._q_values(td, None, params)
    torch.testing.assert_close(q_eval[0], q_eval[1])
    assert not torch.allclose(q_train[0], q_eval[0])  # dropout acted in train mode


@pytest.mark.parametrize(
    ("make", "reason"),
    [(hooked_value, "MLP has a forward hook"), (layernorm_value, "LayerNorm not supported")],
)
def test_a_custom_value_network_runs_its_own_forward(make, reason):
    loss = build("v1", value=make())
    paths = accelerate(loss)
    assert paths == {**ALL_FAST, "V": f"reference path ({reason})"}
    assert loss.value_evaluator is None
    assert_matches_the_modules(loss)


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_a_custom_actor_is_sampled_through_its_own_distribution(version):
    actor = hand_built_actor(trunk=ScaledMLP, head=ClampedLogStdNormalParams())  # make_actor's head
    loss = build(version, actor=actor)
    assert accelerate(loss)["actor"] == "reference path (ScaledMLP overrides forward)"
    assert loss.actor_sampler is None
    assert_matches_the_modules(loss)
    policy, path = accelerate_policy(actor)
    assert policy is actor and path == "reference path (ScaledMLP overrides forward)"


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_hand_built_torchrl_blocks_are_accelerated_and_equal(version):
    actor = hand_built_actor()
    loss = build(version, actor=actor, q=hand_built_q(), value=hand_built_value())
    expected = {k: v for k, v in ALL_FAST.items() if version == "v1" or k != "V"}
    assert accelerate(loss) == expected
    assert_matches_the_modules(loss)
    policy, path = accelerate_policy(actor)
    assert path == "accelerated" and policy is not actor
    td = TensorDict(observation=torch.randn(5, OBS_DIM), batch_size=[5])
    from torchrl.envs.utils import ExplorationType, set_exploration_type

    for kind in (ExplorationType.RANDOM, ExplorationType.DETERMINISTIC):
        actions = []
        for module in (actor, policy):
            torch.manual_seed(4)
            with torch.no_grad(), set_exploration_type(kind):
                actions.append(module(td.clone())["action"])
        torch.testing.assert_close(actions[1], actions[0])


def _hook(module, args, out):
    return out


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        (lambda q: q.module.register_forward_hook(_hook), "MLP has a forward hook"),
        (lambda q: q.register_forward_hook(_hook), "ValueOperator has a forward hook"),
        (
            lambda q: q.module[0].register_forward_pre_hook(lambda m, a: a),
            "Linear has a forward pre-hook",
        ),
        (
            lambda q: nn.utils.parametrizations.weight_norm(q.module[0]),
            "ParametrizedLinear has a parametrization",
        ),
    ],
)
def test_hooks_and_parametrizations_keep_the_reference_path(tamper, reason):
    q = make_qvalue(OBS_DIM, ACT_DIM, hidden_sizes=HIDDEN)
    tamper(q)
    loss = build("v1", q=q)
    assert accelerate(loss)["Q"] == f"reference path ({reason})"
    assert_matches_the_modules(loss)
    with pytest.raises(AccelerationError, match=reason):
        accelerate(loss, "on")


def _wrong(method, scale=1.01):
    def wrong(self, *args):
        out = method(self, *args)
        return tuple(scale * o for o in out) if isinstance(out, tuple) else scale * out

    return wrong


# 1 + 1e-4: a relative error as small as a wrong epsilon or a dropped small term would give.
@pytest.mark.parametrize("scale", [1.01, 1 + 1e-4])
@pytest.mark.parametrize(
    ("cls", "method", "network"),
    [
        (MLPQEnsemble, "values", "Q"),
        (MLPQEnsemble, "replayed_and_fresh", "Q"),
        (MLPValue, "values", "V"),
        (SquashedGaussianSampler, "sample", "actor"),
        (SquashedGaussianSampler, "sample_pair", "actor"),
    ],
)
def test_a_fast_evaluator_that_disagrees_with_the_module_is_not_installed(
    monkeypatch, cls, method, network, scale
):
    monkeypatch.setattr(cls, method, _wrong(getattr(cls, method), scale))
    loss = build("v1")
    paths = accelerate(loss)
    assert paths[network].startswith("reference path (probe: ")
    assert {k: v for k, v in paths.items() if k != network} == {
        k: v for k, v in ALL_FAST.items() if k != network
    }
    attr = {"Q": "q_evaluator", "V": "value_evaluator", "actor": "actor_sampler"}[network]
    assert getattr(loss, attr) is None
    assert_matches_the_modules(loss)


def test_an_actor_whose_every_probe_action_saturates_is_not_certified():
    """Where tanh saturates the given action cannot be scored (inverting it is inexact), so the
    probe compares the log-density on the other rows; with none left it must refuse, not pass."""
    actor = make_actor(action_spec(), OBS_DIM, hidden_sizes=HIDDEN)
    last = [m for m in actor.modules() if isinstance(m, nn.Linear)][-1]
    with torch.no_grad():  # mu(s) = 4 and log sigma(s) = -4 for every state: |tanh(u)| > 0.99
        last.weight.zero_()
        last.bias.copy_(torch.tensor([4.0] * ACT_DIM + [-4.0] * ACT_DIM))
    loss = build("v2", actor=actor)
    assert accelerate(loss)["actor"] == (
        "reference path (probe: every sampled action saturates; cannot score the log-density)"
    )
    assert loss.actor_sampler is None


def _constant_head(actor, loc: float, scale_out: float) -> None:
    """Set the actor's last Linear so that its output is ``loc`` then ``scale_out`` on every
    state: the head maps ``scale_out`` to sigma."""
    last = [m for m in actor.modules() if isinstance(m, nn.Linear)][-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.tensor([loc] * ACT_DIM + [scale_out] * ACT_DIM))


def test_an_actor_whose_sigma_sits_at_a_relu_floor_is_refused_with_the_reason():
    """relu(-1) = 0, clamped to NormalParamExtractor's scale_lb: sigma = 1e-4 on every state,
    where TorchRL's log-density and the fast sampler's exact one differ by more than rounding."""
    actor = hand_built_actor(head=NormalParamExtractor(scale_mapping="relu"))
    _constant_head(actor, loc=0.5, scale_out=-1.0)
    loss = build("v2", actor=actor)
    path = accelerate(loss)["actor"]
    assert path.startswith(
        "reference path (probe: the actor's sigma is as small as 0.0001 on the probe batch, "
        "below 0.001 (a scale mapping such as NormalParamExtractor's relu"
    ), path
    assert loss.actor_sampler is None
    with pytest.raises(AccelerationError, match=r"sigma is as small as 0\.0001"):
        accelerate(build("v2", actor=actor), "on")


def test_a_given_action_is_scored_only_where_sigma_keeps_it_well_conditioned():
    """sigma = exp(-3) = 0.05 on every state: accepted by the small-sigma check (>= 1e-3), but no
    sampled action is one whose log-density TanhNormal.log_prob can recover to the probe's
    tolerance, so the probe refuses rather than passing on no rows."""
    actor = make_actor(action_spec(), OBS_DIM, hidden_sizes=HIDDEN)
    _constant_head(actor, loc=0.0, scale_out=-3.0)  # ClampedLogStdNormalParams: log sigma
    loss = build("v2", actor=actor)
    assert accelerate(loss)["actor"] == (
        "reference path (probe: every unsaturated sampled action has a sigma below 0.1 in some "
        "dimension; cannot score the log-density)"
    )


def test_the_probe_seeds_and_restores_only_its_own_gpu(monkeypatch):
    """On ``cuda:2`` of four GPUs the probe forks and seeds the generators of the CPU and of
    ``cuda:2`` only (CPU stand-ins for the four CUDA generators, so this runs anywhere)."""
    from sac_tr.accel import probe

    gpus = [torch.Generator().manual_seed(i) for i in range(4)]
    forked = []
    fork_rng = torch.random.fork_rng

    def recording_fork_rng(devices=None, **kwargs):
        forked.append(devices)
        return fork_rng(devices=[])  # the CPU generator, forked for real

    monkeypatch.setattr(torch.cuda, "device_count", lambda: len(gpus))
    monkeypatch.setattr(torch.cuda, "default_generators", tuple(gpus))
    monkeypatch.setattr(torch.random, "fork_rng", recording_fork_rng)
    before = torch.get_rng_state()
    with probe._seeded(torch.device("cuda", 2)):
        assert torch.random.initial_seed() == probe._SEED
    assert forked == [[2]]
    assert [g.initial_seed() for g in gpus] == [0, 1, probe._SEED, 3]
    assert torch.equal(torch.get_rng_state(), before)


def test_a_fast_policy_that_disagrees_with_the_actor_is_not_installed(monkeypatch):
    actor = make_actor(action_spec(), OBS_DIM, hidden_sizes=HIDDEN)
    monkeypatch.setattr(SquashedGaussianPlan, "loc_scale", _wrong(SquashedGaussianPlan.loc_scale))
    policy, path = accelerate_policy(actor)
    assert policy is actor and path.startswith("reference path (probe: policy action")


def test_the_clamped_head_and_the_loss_overrides_are_read_exactly():
    class MyLoss(SACv1Loss):
        def _state_values(self, td, params):
            return 2 * super()._state_values(td, params)

    torch.manual_seed(0)
    actor = hand_built_actor(head=ClampedLogStdNormalParams((-5.0, 1.0)))
    loss = MyLoss(actor, make_qvalue(OBS_DIM, ACT_DIM, hidden_sizes=HIDDEN), make_value(OBS_DIM))
    assert accelerate(loss) == {**ALL_FAST, "V": "reference path (MyLoss overrides _state_values)"}


def test_the_recipe_reports_and_enforces_the_path(capsys, tmp_path):
    from test_agent import _cfg
    from test_recipe import make_cfg

    from sac_tr.agent import make_agent
    from sac_tr.config import ConfigError, validate_config
    from sac_tr.envs import make_env
    from sac_tr.train import train

    residual = "critic.target=test_accel.make_residual_q"
    agent = make_agent(make_env("Pendulum-v1"), _cfg(residual), torch.device("cpu"))
    assert agent.paths == {
        "Q": "reference path (ResidualQ overrides forward)",
        "V": "accelerated",
        "actor": "accelerated",
        "policy": "accelerated",
    }
    with pytest.raises(AccelerationError, match="ResidualQ overrides forward"):
        make_agent(make_env("Pendulum-v1"), _cfg(residual, "accelerate=on"), torch.device("cpu"))
    with pytest.raises(ConfigError, match="accelerate='fast'"):
        validate_config(_cfg("accelerate=fast"))
    capsys.readouterr()
    train(make_cfg("total_frames=100", "logger=none", "accelerate=off"), tmp_path)
    lines = capsys.readouterr().out.splitlines()
    for network in ("Q", "V", "actor", "policy"):
        assert f"{network}: reference path (accelerate=off)" in lines


class _Recorder(TorchFunctionMode):
    """Every torch function called inside the block, with its tensor arguments."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
        self.calls.append((func, tensors))
        return func(*args, **kwargs)


@pytest.mark.parametrize("fast", ["policy", "sampler"])
def test_the_action_bounds_are_placed_once_not_copied_on_every_call(fast):
    """The actor's bounds come from the CPU spec; the fast policy and sampler use the same
    placed tensors on every call and copy nothing per call (on a GPU a ``.to`` per call would be
    a blocking host-to-device copy)."""
    loss = build("v2")
    accelerate(loss)
    policy, _ = accelerate_policy(loss.actor_network)
    td = make_batch(batch=5)
    if fast == "policy":
        plan, call = policy.plan, lambda: policy(td.select("observation").copy())
    else:
        sampler = loss.actor_sampler
        plan, call = sampler.plan, lambda: sampler.sample(td, loss.actor_network_params)
    assert plan.low is loss.actor_network.module[-1].distribution_kwargs["low"]  # the spec's
    used = []
    for _ in range(3):
        with _Recorder() as recorder:
            call()
        assert [f for f, _ in recorder.calls if f in (torch.Tensor.to, torch.Tensor.copy_)] == []
        used.append({id(t) for _, tensors in recorder.calls for t in tensors})
    low, high = plan.bounds(torch.zeros(1, ACT_DIM))
    assert all(id(low) in ids and id(high) in ids for ids in used)
    torch.testing.assert_close(low, torch.full((ACT_DIM,), LOW))
    torch.testing.assert_close(high, torch.full((ACT_DIM,), HIGH))


# ------------------------------------------------- changes the exact-type checks alone cannot see
def _capped(self, x):  # a ReLU capped at 0.05: equal to ReLU on small inputs only
    return torch.relu(x).clamp(max=0.05)


def _patch_q_forward(q):
    """The Q's MLP replaced on the instance by a clamped one (a patch that acts only on large
    values, which a probe at initialisation scale would not see)."""
    forward = q.module.forward
    q.module.forward = lambda *x: forward(*x).clamp(-0.05, 0.05)


def _patch_q_relu(q):
    q.module[1].forward = lambda x: _capped(None, x)


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        (_patch_q_forward, "MLP.forward is replaced on the instance"),
        (_patch_q_relu, "ReLU.forward is replaced on the instance"),
    ],
)
def test_a_method_replaced_on_the_instance_keeps_the_reference_path(tamper, reason):
    q = make_qvalue(OBS_DIM, ACT_DIM, hidden_sizes=HIDDEN)
    tamper(q)
    loss = build("v1", q=q)
    assert accelerate(loss) == {**ALL_FAST, "Q": f"reference path ({reason})"}
    assert_matches_the_modules(loss)  # the reference calls the patched module itself


def test_a_library_class_patched_in_place_keeps_every_network_on_the_reference_path(monkeypatch):
    monkeypatch.setattr(nn.ReLU, "forward", _capped)
    loss = build("v1")
    reason = "reference path (ReLU.forward is replaced (by test_accel._capped))"
    assert accelerate(loss) == {"Q": reason, "V": reason, "actor": reason}
    assert accelerate_policy(loss.actor_network)[1] == reason
    assert_matches_the_modules(loss)


def test_a_replaced_torch_function_keeps_the_reference_path(monkeypatch):
    relu = torch.nn.functional.relu
    monkeypatch.setattr(torch.nn.functional, "relu", lambda x, inplace=False: relu(x) + 1e-3)
    loss = build("v1")
    (path,) = set(accelerate(loss).values())
    assert path.startswith("reference path (torch.nn.functional.relu is replaced (by test_accel.")
    assert_matches_the_modules(loss)


class HalfQLoss(SACv1Loss):
    """Every Q evaluation halved, through the loss's own vmap."""

    def _make_vmap(self):
        super()._make_vmap()
        vmap = self._vmap_qvalue

        def halved(td, params):
            out = vmap(td, params)
            return out.set("state_action_value", 0.5 * out.get("state_action_value"))

        self._vmap_qvalue = halved


class TargetQActorLoss(SACv2Loss):
    """The actor (and value terms) against the target Q-networks."""

    @property
    def _detached_qvalue_params(self):
        return self.target_qvalue_network_params.detach()


def _loss_of(cls):
    torch.manual_seed(0)
    actor = make_actor(action_spec(), OBS_DIM, hidden_sizes=HIDDEN)
    q = make_qvalue(OBS_DIM, ACT_DIM, hidden_sizes=HIDDEN)
    if issubclass(cls, SACv1Loss):
        return cls(actor, q, make_value(OBS_DIM, hidden_sizes=HIDDEN))
    return cls(actor, q)


def test_a_loss_that_changes_the_q_vmap_keeps_the_reference_path():
    loss = _loss_of(HalfQLoss)
    assert accelerate(loss)["Q"] == "reference path (HalfQLoss overrides _make_vmap)"
    td = make_batch(batch=5)
    params = loss.qvalue_network_params
    torch.testing.assert_close(loss._q_values(td, None, params), 0.5 * q_members(loss, params, td))


def test_a_loss_that_reads_other_q_parameters_for_the_actor_keeps_the_reference_path():
    loss = _loss_of(TargetQActorLoss)
    with torch.no_grad():  # the targets now differ from the online Q parameters
        loss.target_qvalue_network_params.apply_(lambda p: p.mul_(1.5))
    assert accelerate(loss)["Q"] == (
        "reference path (TargetQActorLoss overrides _detached_qvalue_params)"
    )
    td, fresh = make_batch(batch=5), torch.rand(5, ACT_DIM)
    _, q_fresh = loss._q_replayed_and_fresh(td, fresh)
    target = loss.target_qvalue_network_params
    torch.testing.assert_close(q_fresh, q_members(loss, target, td, fresh))


@pytest.mark.parametrize(
    ("replace", "reason"),
    [
        (
            lambda loss: setattr(
                loss, "_vmap_qvalue", lambda td, p: loss._stock_vmap_qvalue(td, p)
            ),
            "SACv1Loss._vmap_qvalue is not the one _make_vmap built (it was assigned afterwards)",
        ),
        (
            lambda loss: setattr(loss, "_q_values", lambda *a: SACv1Loss._q_values(loss, *a)),
            "SACv1Loss._q_values is replaced on the instance",
        ),
    ],
)
def test_a_loss_method_replaced_on_the_instance_keeps_the_reference_path(replace, reason):
    loss = build("v1")
    replace(loss)
    assert accelerate(loss)["Q"] == f"reference path ({reason})"


def _sequential_value(*layers):
    return ValueOperator(nn.Sequential(*layers), in_keys=["observation"])


def test_a_module_placed_twice_is_read_as_the_forward_runs_it():
    torch.manual_seed(0)
    relu, tied = nn.ReLU(), nn.Linear(HIDDEN[0], HIDDEN[0])
    shared = _sequential_value(
        nn.Linear(OBS_DIM, HIDDEN[0]),
        relu,
        nn.Linear(HIDDEN[0], HIDDEN[0]),
        relu,
        nn.Linear(HIDDEN[0], 1),
    )  # one ReLU at two places: stateless, the same function as two
    loss = build("v1", value=shared)
    assert accelerate(loss)["V"] == "accelerated"
    assert_matches_the_modules(loss)
    weights_tied = _sequential_value(
        nn.Linear(OBS_DIM, HIDDEN[0]),
        nn.ReLU(),
        tied,
        nn.ReLU(),
        tied,
        nn.ReLU(),
        nn.Linear(HIDDEN[0], 1),
    )
    loss = build("v1", value=weights_tied)
    assert accelerate(loss)["V"] == (
        "reference path (the same Linear is at positions 2 and 4 of the Sequential (tied weights))"
    )
    assert_matches_the_modules(loss)


def test_the_fast_policy_is_compared_in_the_mode_the_collector_acts_in(monkeypatch):
    from sac_tr.accel.squashed_gaussian import SquashedGaussianPolicy

    forward = SquashedGaussianPolicy.forward

    def differs_in_eval_mode(self, td):
        out = forward(self, td)
        if not self.actor.training:
            out.set("action", out.get("action") * 0.5)
        return out

    monkeypatch.setattr(SquashedGaussianPolicy, "forward", differs_in_eval_mode)
    actor = make_actor(action_spec(), OBS_DIM, hidden_sizes=HIDDEN)
    actor.train()
    policy, path = accelerate_policy(actor)
    assert policy is actor
    assert path.startswith("reference path (probe: policy action (deterministic, eval mode)")
    assert actor.training  # the probe put the actor back in its own mode


def test_a_tensor_hook_on_a_q_parameter_is_refused_not_ignored():
    q = make_qvalue(OBS_DIM, ACT_DIM, hidden_sizes=HIDDEN)
    q.module[0].weight.register_hook(lambda grad: 2 * grad)
    with pytest.raises(ValueError, match=r"'module\.0\.weight' has a tensor hook.*never fire"):
        build("v1", q=q)


def _wrapped_clip(forward):
    import functools

    @functools.wraps(forward)  # copies __module__ and __qualname__: looks like torch's own
    def clipped(self, x):
        return forward(self, x).clamp(-0.05, 0.05)

    return clipped


@pytest.mark.parametrize(
    ("cls", "name", "replacement", "reason"),
    [
        (
            nn.ReLU,
            "forward",
            nn.ReLU6.forward,
            "ReLU.forward is replaced (by torch.nn.modules.activation.Hardtanh.forward)",
        ),
        (nn.Linear, "forward", _wrapped_clip(nn.Linear.forward), "Linear.forward is replaced"),
        (MLP, "forward", _wrapped_clip(MLP.forward), "MLP.forward is replaced"),
    ],
)
def test_a_class_patched_with_a_library_looking_function_is_seen(
    monkeypatch, cls, name, replacement, reason
):
    monkeypatch.setattr(cls, name, replacement)
    loss = build("v1")
    assert all(path.startswith(f"reference path ({reason}") for path in accelerate(loss).values())


def test_a_patched_distribution_keeps_the_actor_and_the_policy_on_the_reference_path(monkeypatch):
    from torchrl.modules import TanhNormal

    init = TanhNormal.__init__

    def clamped_loc(self, loc, scale, *args, **kwargs):
        init(self, loc.clamp(-0.01, 0.01), scale, *args, **kwargs)

    monkeypatch.setattr(TanhNormal, "__init__", clamped_loc)
    loss = build("v2")
    reason = "reference path (TanhNormal.__init__ is replaced (by test_accel."
    assert accelerate(loss)["actor"].startswith(reason)
    assert accelerate_policy(loss.actor_network)[1].startswith(reason)
    assert accelerate(loss)["Q"] == "accelerated"


def test_a_compiled_module_and_an_active_function_mode_keep_the_reference_path():
    q = make_qvalue(OBS_DIM, ACT_DIM, hidden_sizes=HIDDEN)
    q.module[1].compile(backend="eager")  # __call__ now runs the compiled call, not forward
    loss = build("v1", q=q)
    assert accelerate(loss)["Q"] == "reference path (ReLU is compiled (module.compile()))"
    with _Recorder():
        paths = accelerate(build("v1"))
    assert set(paths.values()) == {
        "reference path (a TorchFunctionMode (_Recorder) is active: it may change any call)"
    }
    with torch.device("cpu"):  # torch.set_default_device's mode only places tensors
        assert accelerate(build("v1")) == ALL_FAST


def test_a_compiled_module_put_in_a_class_is_not_taken_for_torch_own_wrapping(monkeypatch):
    capped = torch.compile(nn.Hardtanh(0.0, 0.05), backend="eager")  # a torch._dynamo object
    monkeypatch.setattr(nn.ReLU, "forward", capped)
    (path,) = set(accelerate(build("v1")).values())
    assert path.startswith("reference path (ReLU.forward is replaced")


def test_a_wrapper_that_copies_a_library_name_is_not_a_library_function():
    from sac_tr.accel.checks import _library

    assert _library(nn.ReLU.forward) and _library(torch.distributions.Distribution.sample_n)
    assert not _library(_wrapped_clip(nn.Linear.forward))  # functools.wraps: torch's __module__


@pytest.mark.parametrize("network", ["V", "actor"])
def test_a_method_replaced_on_the_instance_of_v_or_the_actor_is_seen(network):
    value, actor = make_value(OBS_DIM, hidden_sizes=HIDDEN), None
    if network == "V":
        forward = value.module.forward
        value.module.forward = lambda *x: forward(*x).clamp(-0.05, 0.05)
    else:
        actor = make_actor(action_spec(), OBS_DIM, hidden_sizes=HIDDEN)
        trunk = actor.module[0].module[0]
        forward = trunk.forward
        trunk.forward = lambda *x: forward(*x).clamp(-0.05, 0.05)
    loss = build("v1", actor=actor, value=value)
    assert accelerate(loss)[network] == "reference path (MLP.forward is replaced on the instance)"
    if actor is not None:
        assert accelerate_policy(actor)[1] == (
            "reference path (MLP.forward is replaced on the instance)"
        )
    assert_matches_the_modules(loss)


def test_a_loss_that_registers_its_actor_its_own_way_keeps_the_actor_on_the_reference_path():
    class MyActorLoss(SACv1Loss):
        def _register_actor(self, actor_network):
            super()._register_actor(actor_network)

    loss = _loss_of(MyActorLoss)
    assert accelerate(loss)["actor"] == "reference path (MyActorLoss overrides _register_actor)"


def test_the_probe_compares_with_the_loss_own_code_when_nothing_else_tells(monkeypatch):
    """Behind the structural checks, the probe alone: with the bypass list emptied, HalfQLoss's
    halved Q is still refused, by comparison with the loss's own _q_values."""
    from sac_tr.accel import install

    monkeypatch.setattr(install, "_BYPASSED", {"Q": (), "V": (), "actor": ()})
    loss = _loss_of(HalfQLoss)
    loss._stock_vmap_qvalue = loss._vmap_qvalue  # as if _make_vmap had built it
    assert accelerate(loss)["Q"].startswith(
        "reference path (probe: Q values through the loss (train mode) [0] differs from the "
        "loss's own by"
    )


def test_the_probe_puts_every_module_back_in_its_own_mode():
    actor = make_actor(action_spec(), OBS_DIM, hidden_sizes=HIDDEN)
    actor.train()
    actor.module[0].module[0][1].eval()  # one ReLU of the trunk in eval mode
    before = [m.training for m in actor.modules()]
    accelerate_policy(actor)
    loss = build("v2", actor=actor)
    accelerate(loss)
    assert [m.training for m in actor.modules()] == before


def test_a_q_list_of_other_architectures_is_refused():
    q0 = make_qvalue(OBS_DIM, ACT_DIM, hidden_sizes=HIDDEN)
    q1 = make_qvalue(OBS_DIM, ACT_DIM, hidden_sizes=HIDDEN, activation=nn.Tanh)
    actor = make_actor(action_spec(), OBS_DIM, hidden_sizes=HIDDEN)
    with pytest.raises(ValueError, match="Q module 1 of the list differs from Q module 0"):
        SACv2Loss(actor, [q0, q1])


def test_copies_of_a_weight_normed_q_start_independent():
    """reset_parameters on a parametrized Linear writes into its computed weight, not into the
    stored originals: the copies must be re-initialised through the parametrization."""
    torch.manual_seed(0)
    q = make_qvalue(OBS_DIM, ACT_DIM, hidden_sizes=HIDDEN)
    nn.utils.parametrizations.weight_norm(q.module[0])
    loss = build("v2", q=q)
    stacked = loss.qvalue_network_params["module", "0", "parametrizations", "weight"]
    for original in ("original0", "original1"):
        assert not torch.equal(stacked[original][0], stacked[original][1])
    # the copy's weight is a fresh nn.Linear draw: |w| <= 1/sqrt(fan_in) (kaiming_uniform, a=sqrt 5)
    weights = [q.module[0].weight]
    with loss.qvalue_network_params[1].to_module(loss.qvalue_network):
        weights.append(loss.qvalue_network.module[0].weight.detach().clone())
    assert not torch.equal(weights[0].detach(), weights[1])
    assert float(weights[1].abs().max()) <= (OBS_DIM + ACT_DIM) ** -0.5


def test_a_post_accumulate_grad_hook_on_a_q_parameter_is_refused():
    q = make_qvalue(OBS_DIM, ACT_DIM, hidden_sizes=HIDDEN)
    q.module[2].bias.register_post_accumulate_grad_hook(lambda p: None)
    with pytest.raises(ValueError, match=r"'module\.2\.bias' has a tensor hook"):
        build("v1", q=q)


def test_a_q_list_is_judged_by_what_its_forward_depends_on():
    actor = make_actor(action_spec(), OBS_DIM, hidden_sizes=HIDDEN)
    normed = [make_qvalue(OBS_DIM, ACT_DIM, hidden_sizes=HIDDEN) for _ in range(2)]
    for q in normed:  # each gets a ParametrizedLinear class of its own: still one architecture
        nn.utils.parametrizations.weight_norm(q.module[0])
    SACv2Loss(actor, normed)
    elu = [make_qvalue(OBS_DIM, ACT_DIM, hidden_sizes=HIDDEN, activation=nn.ELU) for _ in range(2)]
    elu[1].module[1].alpha = 0.5  # Q module 0's ELU(alpha=1) would run for both
    with pytest.raises(ValueError, match="Q module 1 of the list differs from Q module 0"):
        SACv2Loss(actor, elu)


def test_a_parametrization_without_right_inverse_cannot_be_copied_and_says_so():
    class Clamp(nn.Module):
        def forward(self, w):
            return w.clamp(-0.1, 0.1)

    q = make_qvalue(OBS_DIM, ACT_DIM, hidden_sizes=HIDDEN)
    nn.utils.parametrize.register_parametrization(q.module[0], "weight", Clamp())
    with pytest.raises(ValueError, match=r"copies would start equal\. Give the loss a list"):
        build("v1", q=q)
