"""The agent builder: optimizer groups, the update step, and the compiled loss."""

import pytest
import torch
from helpers import DEVICES
from hydra import compose, initialize_config_dir
from test_recipe import FAST, ROOT

from sac_tr.agent import make_agent, update
from sac_tr.envs import make_env


def _cfg(*overrides):
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        return compose(config_name="sac_mujoco", overrides=[*FAST, *overrides])


def _batch(env, n=32):
    torch.manual_seed(0)
    return env.rollout(n, break_when_any_done=False)


@pytest.mark.parametrize("loss", ["sac_v1", "sac_v2"])
def test_optimizer_has_one_group_per_network_with_its_learning_rate(loss):
    cfg = _cfg(
        f"loss={loss}",
        "optim.lr_actor=1e-3",
        "optim.lr_qvalue=2e-3",
        "optim.lr_value=3e-3",
        "optim.lr_alpha=4e-3",
    )
    agent = make_agent(make_env("Pendulum-v1"), cfg, torch.device("cpu"))
    lrs = [g["lr"] for g in agent.optimizer.param_groups]
    assert lrs == ([1e-3, 2e-3, 3e-3] if loss == "sac_v1" else [1e-3, 2e-3, 4e-3])
    in_optimizer = {id(p) for g in agent.optimizer.param_groups for p in g["params"]}
    assert in_optimizer == {id(p) for p in agent.loss.parameters()}  # every trainable, no target


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("loss", ["sac_v1", "td3"])
def test_update_moves_every_network_and_the_target(device, loss):
    cfg = _cfg(f"loss={loss}")
    env = make_env("Pendulum-v1")
    agent = make_agent(env, cfg, torch.device(device))
    before = {k: v.clone() for k, v in agent.loss.state_dict().items()}
    update(agent, _batch(env).to(device), step=agent.policy_delay - 1)  # TD3: an actor step
    after = agent.loss.state_dict()
    prefixes = {
        "sac_v1": ("actor", "qvalue", "value", "target_value"),
        "td3": ("actor", "qvalue", "target_actor", "target_qvalue"),
    }[loss]
    for prefix in (f"{name}_network_params" for name in prefixes):
        keys = [k for k in before if k.startswith(prefix) and "action_" not in k]  # not bounds
        assert keys and all(not torch.equal(before[k], after[k]) for k in keys), prefix


@pytest.mark.parametrize(
    "loss, keys",
    [
        ("sac_v1", ("loss_actor", "loss_qvalue", "loss_value")),
        ("td3", ("loss_actor", "loss_qvalue")),  # TorchRL's TD3Loss: no _check_inputs to call
    ],
)
def test_compiled_loss_gives_the_eager_numbers_and_still_checks_input(loss, keys):
    env = make_env("Pendulum-v1")
    eager = make_agent(env, _cfg(f"loss={loss}"), torch.device("cpu"))
    compiled = make_agent(env, _cfg(f"loss={loss}", "compile=true"), torch.device("cpu"))
    compiled.loss.load_state_dict(eager.loss.state_dict())
    batch = _batch(env)
    torch.manual_seed(1)
    expected = eager.losses(batch.clone())
    torch.manual_seed(1)
    got = compiled.losses(batch.clone())
    for key in keys:
        torch.testing.assert_close(got[key], expected[key], rtol=1e-4, atol=1e-5)
    if loss == "sac_v1":
        bad = batch.clone()
        bad["next", "reward"][0] = float("nan")
        with pytest.raises(ValueError, match="NaN or inf"):
            compiled.losses(bad)
