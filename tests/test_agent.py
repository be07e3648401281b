"""The agent builder: optimizer groups, the update step, and the compiled loss."""

import pytest
import torch
from helpers import DEVICES, needs_cuda
from hydra import compose, initialize_config_dir
from test_recipe import FAST, ROOT

from sac_tr.agent import CUDAGRAPH_WARMUP, make_agent, update
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


def _learning_state(agent):
    """The loss's parameters and targets and Adam's moments and step counts, copied."""
    state = {f"loss.{k}": v.clone() for k, v in agent.loss.state_dict().items()}
    for i, group in enumerate(agent.optimizer.param_groups):
        for j, p in enumerate(group["params"]):
            state.update(
                {f"adam.{i}.{j}.{k}": v.clone() for k, v in agent.optimizer.state[p].items()}
            )
    return state


def _assert_moved_alike(start, got, want):
    """Every tensor moved from ``start`` as in ``want`` (movements compared, so that the
    targets' small steps count; Adam's state starts at zero: its values are its movements)."""
    assert got.keys() == want.keys()
    assert any("target" in k for k in want) and any(k.endswith("exp_avg") for k in want)
    for key in want:
        moved = [state[key] - start[key] if key in start else state[key] for state in (got, want)]
        torch.testing.assert_close(*moved, rtol=1e-3, atol=1e-7, msg=key)


@pytest.mark.parametrize(
    "loss, keys",
    [
        ("sac_v1", ("loss_actor", "loss_qvalue", "loss_value")),
        # TorchRL's TD3Loss: a delayed step, then a full one, then a delayed one (the compiled
        # backward gives the actor zero gradients on delayed steps; they must not be Adam steps)
        ("td3", ("loss_actor", "loss_qvalue")),
    ],
)
def test_compiled_update_moves_everything_as_eager_and_still_checks_input(loss, keys):
    """compile=true compiles the whole update (loss, backward, Adam, target update): over a few
    updates every parameter, target and Adam moment moves as in eager (the movements compared,
    so that the targets' small steps count), and the input check still runs."""
    env = make_env("Pendulum-v1")
    tiny = ("network.hidden_sizes=[8]", f"loss={loss}")
    eager = make_agent(env, _cfg(*tiny), torch.device("cpu"))
    compiled = make_agent(env, _cfg(*tiny, "compile=true"), torch.device("cpu"))
    assert compiled.compile_update and compiled.defer_fault_checks  # the whole update, no host read
    compiled.loss.load_state_dict(eager.loss.state_dict())
    start = _learning_state(eager)
    for step in range(3):
        batch = _batch(env, 16 + step)
        outs = []
        for agent in (eager, compiled):
            torch.manual_seed(step)
            outs.append(update(agent, batch.clone(), step=step))
        for key in keys:
            torch.testing.assert_close(outs[1][key], outs[0][key], rtol=1e-4, atol=1e-6)
    _assert_moved_alike(start, _learning_state(compiled), _learning_state(eager))
    assert compiled.read_faults() == (0, {})
    if loss == "sac_v1":  # (TorchRL's TD3Loss checks no input)
        bad = _batch(env)
        bad["next", "reward"][0] = float("nan")
        with pytest.raises(ValueError, match="NaN or inf"):
            update(compiled, bad, step=3)


@needs_cuda
@pytest.mark.parametrize("compile", [False, True])
def test_cuda_graphs_move_everything_as_eager(compile):
    """cudagraphs=true: after the warm-up and the capture, replays move every parameter, target
    and Adam moment as the eager update does."""
    env, cuda = make_env("Pendulum-v1"), torch.device("cuda")
    tiny = ("network.hidden_sizes=[8]", "loss=sac_v1")
    eager = make_agent(env, _cfg(*tiny), cuda)
    graphed = make_agent(
        env, _cfg(*tiny, "cudagraphs=true", f"compile={str(compile).lower()}"), cuda
    )
    graphed.loss.load_state_dict(eager.loss.state_dict())
    start = _learning_state(eager)
    batch = _batch(env, 16).to(cuda)  # one shape: the captured graph reads fixed buffers
    for step in range(CUDAGRAPH_WARMUP + 3):  # eager warm-up, the capture, then replays
        for agent in (eager, graphed):
            torch.manual_seed(step)
            update(agent, batch.clone(), step=step)
    _assert_moved_alike(start, _learning_state(graphed), _learning_state(eager))


def make_double_q(observation_dim, action_dim, *, hidden_sizes, activation):
    """A critic builder (``critic.target=test_agent.make_double_q``): make_qvalue's, in float64."""
    from sac_tr import make_qvalue

    q = make_qvalue(observation_dim, action_dim, hidden_sizes=hidden_sizes, activation=activation)
    return q.double()


def test_a_network_in_another_dtype_than_the_observations_is_refused_before_training():
    env = make_env("Pendulum-v1")
    with pytest.raises(
        ValueError, match=r"'qvalue_network_params.*' is torch.float64, but .*float32"
    ):
        make_agent(env, _cfg("critic.target=test_agent.make_double_q"), torch.device("cpu"))
