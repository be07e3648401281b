"""A user's parts through the recipe (issue 12): every example in custom_parts.py trains end to
end; a user's class receives the config's keys and a value network, through ``*args, **kwargs``
too; arguments it does not take, or needs and does not get, stop the run before anything is
built; the optimizer trains every parameter of the loss except the target copies."""

import custom_parts
import pytest
import torch
from test_variants import VARIANTS, make_cfg

from sac_tr.agent import make_agent
from sac_tr.checkpoint import load_checkpoint
from sac_tr.config import ConfigError
from sac_tr.envs import make_env
from sac_tr.train import train

# Each example of custom_parts.py, the overrides that plug it in, and the config group it fills.
EXAMPLES = {
    "make_narrow_actor": ("actor", "actor.target=custom_parts.make_narrow_actor"),
    "DoubledActorLoss": ("loss", "loss.target=custom_parts.DoubledActorLoss"),
    "ForwardingLoss": ("loss", "loss.target=custom_parts.ForwardingLoss"),
    "QMeanLoss": ("loss", "loss.target=custom_parts.QMeanLoss"),
    "make_droq_qvalue": ("critic", "critic.target=custom_parts.make_droq_qvalue", "loss=sac_v2"),
    "make_batchnorm_actor": ("actor", "actor.target=custom_parts.make_batchnorm_actor"),
    "make_residual_value": ("value", "value.target=custom_parts.make_residual_value"),
}
USED_BY = {
    "BatchNorm": "make_batchnorm_actor",
    "DroQNet": "make_droq_qvalue",
    "ResidualValue": "make_residual_value",
}
NETWORKS = ("actor_network_params", "qvalue_network_params", "value_network_params")


def test_every_example_in_custom_parts_is_run_below():
    defined = {
        name
        for name, obj in vars(custom_parts).items()
        if not name.startswith("_") and getattr(obj, "__module__", None) == "custom_parts"
    }
    assert defined == set(EXAMPLES) | set(USED_BY)


@pytest.mark.parametrize("name", EXAMPLES)
def test_each_example_trains_through_the_recipe(tmp_path, capsys, name):
    group, *overrides = EXAMPLES[name]
    # 99 random frames, no update yet (they start at frame 100): the initial networks.
    start = load_checkpoint(train(make_cfg(*overrides, "total_frames=99"), tmp_path).checkpoint)
    printed = capsys.readouterr().out
    assert f"{group}: custom_parts.{name}(" in printed  # the start lines name the user's part
    summary = train(make_cfg(*overrides, "total_frames=200", f"resume={tmp_path}"), "/unused")
    assert (summary.frames, summary.updates) == (200, 101)
    state, start = load_checkpoint(summary.checkpoint)["loss"], start["loss"]
    moved = {
        prefix: any(not torch.equal(state[k], start[k]) for k in start if k.startswith(prefix))
        for prefix in (*NETWORKS, "q_mean")
        if any(k.startswith(prefix) for k in start)
    }
    assert moved and all(moved.values()), moved
    if name == "QMeanLoss":
        assert "q_mean" in moved  # its own parameter trained with the networks
    if name == "make_batchnorm_actor":  # running statistics: state that is not a parameter
        stats = [k for k in start if k.endswith("running_mean")]
        assert stats and all(not torch.equal(state[k], start[k]) for k in stats)
    if name == "make_residual_value":  # the user's V, with its skip term, trained
        skip = [k for k in start if k.startswith(NETWORKS[2]) and ".skip." in k]
        assert skip and all(not torch.equal(state[k], start[k]) for k in skip)
    if name == "make_droq_qvalue":
        layer_norm = [k for k in start if k.startswith(NETWORKS[1]) and k.endswith("2.weight")]
        assert layer_norm and all(not torch.equal(state[k], start[k]) for k in layer_norm)


def test_a_forwarding_loss_receives_the_config_and_a_value_network():
    cfg = make_cfg(
        "loss.target=custom_parts.ForwardingLoss",
        "env.reward_scale=7",
        "loss.alpha=0.5",
        "loss.num_qvalue_nets=3",
        "value.hidden_sizes=[16]",
    )
    loss = make_agent(make_env("Pendulum-v1", seed=0), cfg, "cpu").loss
    assert type(loss) is custom_parts.ForwardingLoss
    assert float(loss.reward_scale) == 7.0 and float(loss.alpha) == 0.5
    assert loss.qvalue_network_params["module", "0", "weight"].shape == (3, 32, 4)  # 3 Q-nets
    assert loss.value_network_params["module", "0", "weight"].shape == (16, 3)  # value group
    assert loss.discount == torch.tensor(cfg.loss.gamma)  # float32, as the loss stores it


@pytest.mark.parametrize("loss_name, has_value", [("sac_v1", True), ("sac_v2", False)])
def test_an_optional_value_network_follows_the_configs_loss(loss_name, has_value):
    # TorchRL's SACLoss takes value_network=None: SAC-v1 (with V) when the config's loss has one.
    cfg = make_cfg(f"loss={loss_name}", "loss.target=torchrl.objectives.SACLoss")
    loss = make_agent(make_env("Pendulum-v1", seed=0), cfg, "cpu").loss
    assert (getattr(loss, "value_network_params", None) is not None) == has_value
    assert "loss_value" in loss.out_keys if has_value else "loss_value" not in loss.out_keys


def needs_depth(observation_dim, action_dim, *, hidden_sizes, activation, depth):
    """A critic builder with a required argument the config does not supply."""
    raise AssertionError("never built: the config check stops the run first")


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ("loss.target=custom_parts.ForwardingLoss", "+loss.kwargs.temperature=2"),
            r"loss.kwargs.temperature: custom_parts.ForwardingLoss takes no argument "
            r"'temperature' \(it takes \[.*'alpha'.*\]\); remove it or add it",
        ),
        (
            ("loss=sac_v2", "+loss.kwargs.alpha=2"),  # SAC-v2's temperature is alpha_init
            r"loss.kwargs.alpha: sac_tr.losses.sac_v2.SACv2Loss takes no argument 'alpha'",
        ),
        (
            ("actor.target=custom_parts.make_narrow_actor", "+actor.kwargs.depth=2"),
            r"actor.kwargs.depth: custom_parts.make_narrow_actor takes no argument 'depth'",
        ),
        (
            ("critic.target=test_custom_parts.needs_depth",),
            r"test_custom_parts.needs_depth requires 'depth', which neither the config "
            r"\(critic.\*\) nor critic.kwargs supplies: add \+critic.kwargs.depth=",
        ),
    ],
)
def test_arguments_a_part_does_not_take_or_lacks_stop_the_run_first(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        train(make_cfg(*overrides, "total_frames=200"), tmp_path)
    assert not any(tmp_path.iterdir())  # nothing written, nothing built


def target_copies(loss) -> set[int]:
    """The tensors of TorchRL's target copies: each network's ``target_<network>_params``,
    which ``LossModule.convert_to_functional`` registers as a submodule of the loss."""
    return {
        id(t)
        for name, params in loss.named_children()
        if name.startswith("target_") and name.endswith("_params")
        for t in params.values(True, True)
    }


@pytest.mark.parametrize("loss", [*VARIANTS, "custom_parts.QMeanLoss"])
def test_the_optimizer_trains_exactly_the_trainable_non_target_parameters(loss, capsys):
    lrs = ("optim.lr_actor=1e-3", "optim.lr_qvalue=2e-3", "optim.lr_value=3e-3")
    pick = f"loss.target={loss}" if "." in loss else f"loss={loss}"
    cfg = make_cfg(pick, *lrs, "optim.lr_alpha=4e-3", "optim.lr_default=5e-3")
    agent = make_agent(make_env("Pendulum-v1", seed=0), cfg, "cpu")
    groups = agent.optimizer.param_groups
    in_optimizer = [id(p) for g in groups for p in g["params"]]
    assert len(in_optimizer) == len(set(in_optimizer))  # each once
    targets = target_copies(agent.loss)
    assert targets and not targets & set(in_optimizer)
    trainable = {id(p) for p in agent.loss.parameters() if p.requires_grad}
    assert set(in_optimizer) == trainable - targets
    by_lr = {g["lr"]: {id(p) for p in g["params"]} for g in groups}
    actor = agent.loss.actor_network_params.values(True, True)
    assert by_lr[1e-3] == {id(p) for p in actor if p.requires_grad}  # its own rate
    if loss == "custom_parts.QMeanLoss":
        assert by_lr[5e-3] == {id(agent.loss.q_mean)}  # its own parameter: the default group
        notes = [n for n in agent.notes if n.startswith("optimizer:")]
        assert notes == [
            "optimizer: parameters outside the named networks (optim.lr_default): q_mean []"
        ]
    else:
        assert 5e-3 not in by_lr
