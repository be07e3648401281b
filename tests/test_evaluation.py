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
