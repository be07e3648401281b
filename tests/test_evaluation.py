"""Evaluation of the deterministic policy is reproducible: the same seed, the same initial states."""

import torch
from tensordict import TensorDict
from torchrl.envs.utils import ExplorationType, set_exploration_type

from sac_tr import make_actor
from sac_tr.envs import make_env
from sac_tr.evaluation import evaluate


def test_reseeded_evaluations_start_from_the_same_states():
    env = make_env("Pendulum-v1")
    torch.manual_seed(0)
    actor = make_actor(env.action_spec, 3, hidden_sizes=(16,))
    first = evaluate(env, actor, episodes=3, max_steps=30, seed=5)
    again = evaluate(env, actor, episodes=3, max_steps=30, seed=5)
    unseeded = evaluate(env, actor, episodes=3, max_steps=30)
    other = evaluate(env, actor, episodes=3, max_steps=30, seed=6)
    assert torch.equal(first, again)
    assert not torch.equal(first, unseeded) and not torch.equal(first, other)


def test_evaluation_sums_the_deterministic_policys_rewards():
    env = make_env("Pendulum-v1")
    torch.manual_seed(1)
    actor = make_actor(env.action_spec, 3, hidden_sizes=(16,))
    returns = evaluate(env, actor, episodes=1, max_steps=20, seed=9)
    # Replay the same episode step by step with the squashed mean action, computed by hand.
    env.set_seed(9)
    td = env.reset()
    total = 0.0
    for _ in range(20):
        loc, _ = actor.module[0].module[0](td["observation"]).chunk(2, -1)
        td = env.step(td.set("action", 2.0 * torch.tanh(loc.detach())))  # Pendulum bounds: [-2, 2]
        total += float(td["next", "reward"])
        td = td["next"].exclude("reward", "done", "terminated", "truncated")
    torch.testing.assert_close(returns, torch.tensor([total]), rtol=1e-5, atol=1e-4)
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        assert actor(TensorDict(observation=torch.zeros(3))).get("action").abs().max() <= 2.0


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
