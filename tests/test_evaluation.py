"""Evaluation of the deterministic policy is reproducible: the same seed, the same initial states.
The environment stays on the CPU whatever device the actor is on."""

import pytest
import torch
from helpers import DEVICES
from tensordict import TensorDict
from torchrl.envs.utils import ExplorationType, set_exploration_type

from sac_tr import make_actor
from sac_tr.envs import make_env
from sac_tr.evaluation import evaluate


@pytest.mark.parametrize("device", DEVICES)
def test_reseeded_evaluations_start_from_the_same_states(device):
    env = make_env("Pendulum-v1")
    torch.manual_seed(0)
    actor = make_actor(env.action_spec, 3, hidden_sizes=(16,)).to(device)
    first = evaluate(env, actor, episodes=3, max_steps=30, seed=5)
    again = evaluate(env, actor, episodes=3, max_steps=30, seed=5)
    unseeded = evaluate(env, actor, episodes=3, max_steps=30)
    other = evaluate(env, actor, episodes=3, max_steps=30, seed=6)
    assert torch.equal(first, again)
    assert not torch.equal(first, unseeded) and not torch.equal(first, other)


@pytest.mark.parametrize("device", DEVICES)
def test_evaluation_sums_the_deterministic_policys_rewards(device):
    # The actor on `device`, the environment on the CPU (evaluation must move data between them).
    env = make_env("Pendulum-v1")
    torch.manual_seed(1)
    actor = make_actor(env.action_spec, 3, hidden_sizes=(16,)).to(device)
    returns = evaluate(env, actor, episodes=1, max_steps=20, seed=9)
    # Replay the same episode step by step with the squashed mean action, computed by hand.
    env.set_seed(9)
    td = env.reset()
    total = 0.0
    for _ in range(20):
        loc, _ = actor.module[0].module[0](td["observation"].to(device)).chunk(2, -1)
        action = 2.0 * torch.tanh(loc.detach().cpu())  # Pendulum bounds: [-2, 2]
        td = env.step(td.set("action", action))
        total += float(td["next", "reward"])
        td = td["next"].exclude("reward", "done", "terminated", "truncated")
    torch.testing.assert_close(returns, torch.tensor([total]), rtol=1e-5, atol=1e-4)
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        observation = torch.zeros(3, device=device)
        assert actor(TensorDict(observation=observation)).get("action").abs().max() <= 2.0


@pytest.mark.parametrize("device", DEVICES)
def test_stochastic_evaluation_leaves_the_training_random_streams_where_they_were(device):
    # Sampled actions draw from the actor's device's generator (and the CPU's): evaluating must
    # leave both where they were, or an exact resume would diverge after every evaluation.
    env = make_env("Pendulum-v1")
    torch.manual_seed(2)
    actor = make_actor(env.action_spec, 3, hidden_sizes=(16,)).to(device)
    cpu_before = torch.get_rng_state()
    gpu_before = torch.cuda.get_rng_state() if device == "cuda" else None
    returns = evaluate(env, actor, episodes=2, max_steps=20, seed=3, stochastic=True)
    assert torch.equal(torch.get_rng_state(), cpu_before)
    if device == "cuda":
        assert torch.equal(torch.cuda.get_rng_state(), gpu_before)
    # ... and the same seed gives the same sampled actions.
    assert torch.equal(returns, evaluate(env, actor, 2, 20, seed=3, stochastic=True))


def test_a_cpu_actor_evaluates_without_touching_any_gpu(monkeypatch):
    # torch.random.fork_rng() without `devices` saves and restores the generator of every GPU the
    # machine reports (initialising each). A CPU actor draws from none: evaluation must fork
    # only the CPU's. The machine is made to report two GPUs whose generators record any use.
    touched = []
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(
        torch.cuda,
        "get_rng_state",
        lambda device="cuda": touched.append(device) or torch.zeros(16, dtype=torch.uint8),
    )
    monkeypatch.setattr(
        torch.cuda, "set_rng_state", lambda state, device="cuda": touched.append(device)
    )
    env = make_env("Pendulum-v1")
    actor = make_actor(env.action_spec, 3, hidden_sizes=(16,))
    evaluate(env, actor, episodes=1, max_steps=5, seed=0, stochastic=True)
    assert touched == []


def test_cheap_video_frames_keep_the_physics_and_take_the_asked_size():
    # MuJoCo's InvertedPendulum: 64 x 64 frames without shadows and reflections; the same
    # actions from the same seed give the same observations as an environment that renders nothing.
    from sac_tr.envs import make_env

    plain = make_env("InvertedPendulum-v5", seed=3)
    video = make_env(
        "InvertedPendulum-v5", seed=3, from_pixels=True, render_size=64, render_effects=False
    )
    model = video.base_env._env.unwrapped.model
    assert not model.light_castshadow.any() and not model.mat_reflectance.any()
    a, b = plain.reset(), video.reset()
    assert b["pixels"].shape == (64, 64, 3)
    for step in range(10):
        action = torch.full((1,), 0.3 * (-1) ** step)
        a = plain.step(a.set("action", action))["next"]
        b = video.step(b.set("action", action))["next"]
        assert torch.equal(a["observation"], b["observation"])
        a, b = (
            a.exclude("reward", "done", "terminated", "truncated"),
            b.exclude("reward", "done", "terminated", "truncated"),
        )
    assert b["pixels"].shape == (64, 64, 3) and b["pixels"].float().std() > 0
