"""Soft policy iteration on finite MDPs: Lemma 1, Lemma 2, the KL projection and Theorem 1."""

import itertools
import math

import gymnasium as gym
import pytest
import torch

from sac_tr.tabular import (
    TabularMDP,
    expected_return,
    greedy_policy,
    mdp_from_gym,
    policy_evaluation,
    rollout_returns,
    soft_bellman_backup,
    soft_policy_evaluation,
    soft_policy_evaluation_exact,
    soft_policy_improvement,
    soft_policy_iteration,
    soft_value_iteration,
    value_iteration,
)

GAMMA = 0.9


def random_mdp(S=7, A=3, seed=0) -> TabularMDP:
    g = torch.Generator().manual_seed(seed)
    P = torch.distributions.Dirichlet(torch.ones(S)).sample((S, A)).double()
    P = P / P.sum(-1, keepdim=True)
    R = torch.randn(S, A, generator=g, dtype=torch.float64)
    done = (torch.rand(S, A, S, generator=g) < 0.1).double()
    return TabularMDP(P, R, done, torch.full((S,), 1.0 / S, dtype=torch.float64))


def random_policy(S=7, A=3, seed=1) -> torch.Tensor:
    torch.manual_seed(seed)
    return torch.distributions.Dirichlet(torch.ones(A)).sample((S,)).double()


@pytest.fixture(scope="module")
def taxi():
    env = gym.make("Taxi-v4")
    return env, mdp_from_gym(env)


@pytest.fixture(scope="module")
def frozen_lake():
    env = gym.make("FrozenLake-v1")
    return env, mdp_from_gym(env)


def test_mdp_from_gym_reads_the_transition_table(taxi, frozen_lake):
    _, m = taxi
    assert m.P.shape == (500, 6, 500) and m.R.shape == (500, 6)
    torch.testing.assert_close(m.P.sum(-1), torch.ones(500, 6, dtype=torch.float64))
    # Taxi: every step costs -1, illegal pickup/dropoff -10, a correct dropoff +20 and ends.
    assert set(m.R.unique().tolist()) == {-10.0, -1.0, 20.0}
    assert torch.equal(m.done.sum((1, 2)) > 0, (m.R == 20).any(-1))
    _, fl = frozen_lake
    # FrozenLake 4x4 is slippery: from state 0, action 0 (left) stays with prob 2/3, goes down 1/3.
    torch.testing.assert_close(
        fl.P[0, 0, [0, 4]], torch.tensor([2 / 3, 1 / 3], dtype=torch.float64)
    )
    assert fl.initial[0] == 1.0


def test_lemma1_iteration_matches_linear_solve_and_contracts_by_gamma():
    m, pi, alpha = random_mdp(), random_policy(), 0.7
    exact = soft_policy_evaluation_exact(m, pi, GAMMA, alpha)
    iterative, sweeps = soft_policy_evaluation(m, pi, GAMMA, alpha, tol=1e-12)
    torch.testing.assert_close(iterative, exact, rtol=0, atol=1e-10)
    assert sweeps > 10
    # The exact Q is a fixed point, and each sweep shrinks the sup-norm error by at least gamma.
    torch.testing.assert_close(soft_bellman_backup(m, pi, exact, GAMMA, alpha), exact)
    Q = 10 * torch.randn(7, 3, dtype=torch.float64)
    for _ in range(30):
        err = (Q - exact).abs().max()
        Q = soft_bellman_backup(m, pi, Q, GAMMA, alpha)
        assert (Q - exact).abs().max() <= GAMMA * err + 1e-12


def test_linear_solve_against_a_hand_computed_two_state_chain():
    # One action; s0 -> s1 (reward 1), s1 -> s1 (reward 0, ends). With one action, log pi = 0:
    # Q(s1) = 0, Q(s0) = 1 + gamma * V(s1) = 1.
    P = torch.tensor([[[0.0, 1.0]], [[0.0, 1.0]]], dtype=torch.float64)
    R = torch.tensor([[1.0], [0.0]], dtype=torch.float64)
    done = torch.tensor([[[0.0, 0.0]], [[0.0, 1.0]]], dtype=torch.float64)
    m = TabularMDP(P, R, done, torch.tensor([1.0, 0.0], dtype=torch.float64))
    Q = soft_policy_evaluation_exact(m, torch.ones(2, 1, dtype=torch.float64), GAMMA, alpha=2.0)
    torch.testing.assert_close(Q, torch.tensor([[1.0], [0.0]], dtype=torch.float64))
    # Two actions with equal reward under the uniform policy: entropy bonus alpha*log 2 per step.
    P2, R2, D2 = (
        P.expand(2, 2, 2).clone(),
        torch.tensor([[1.0, 1.0], [0.0, 0.0]]).double(),
        done.expand(2, 2, 2),
    )
    m2 = TabularMDP(P2, R2, D2.clone(), m.initial)
    Q2 = soft_policy_evaluation_exact(m2, torch.full((2, 2), 0.5, dtype=torch.float64), GAMMA, 2.0)
    # V(s1) = 0 - alpha * E[log pi] = 2 log 2, and s1's transition ends the episode.
    expected = torch.tensor([[1 + GAMMA * 2 * math.log(2)] * 2, [0.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(Q2, expected)


def test_lemma2_improvement_never_decreases_soft_q():
    m, alpha = random_mdp(seed=3), 0.5
    pi = random_policy(seed=4)
    for _ in range(5):
        Q_old = soft_policy_evaluation_exact(m, pi, GAMMA, alpha)
        pi = soft_policy_improvement(Q_old, alpha)
        Q_new = soft_policy_evaluation_exact(m, pi, GAMMA, alpha)
        assert (Q_new >= Q_old - 1e-10).all()
    assert (Q_new - Q_old).abs().max() < 1e-2  # and it is converging


def test_boltzmann_policy_minimises_the_kl_objective():
    alpha = 0.8
    Q = torch.randn(7, 3, dtype=torch.float64)
    log_target = torch.log_softmax(Q / alpha, -1)  # exp(Q/alpha) / Z

    def kl(pi):
        return (pi * (pi.log() - log_target)).sum(-1)

    boltzmann = soft_policy_improvement(Q, alpha)
    torch.testing.assert_close(
        kl(boltzmann), torch.zeros(7, dtype=torch.float64), atol=1e-12, rtol=0
    )
    torch.manual_seed(0)
    for _ in range(50):
        noise = torch.distributions.Dirichlet(torch.ones(3)).sample((7,)).double()
        perturbed = 0.9 * boltzmann + 0.1 * noise
        assert (kl(perturbed) > kl(boltzmann)).all()


@pytest.mark.parametrize("exact", [True, False])
def test_theorem1_policy_iteration_and_value_iteration_agree(exact):
    m, alpha = random_mdp(seed=5), 0.4
    pi, Q_spi, history = soft_policy_iteration(m, GAMMA, alpha, exact=exact)
    Q_svi = soft_value_iteration(m, GAMMA, alpha)
    torch.testing.assert_close(Q_spi, Q_svi, rtol=0, atol=1e-8)
    torch.testing.assert_close(pi, torch.softmax(Q_svi / alpha, -1), rtol=0, atol=1e-8)
    values = [h["soft_value"] for h in history]
    assert all(b >= a - 1e-10 for a, b in itertools.pairwise(values))
    assert history[-1]["policy_change"] < 1e-10


def test_soft_optimal_q_tends_to_optimal_q_as_alpha_shrinks():
    m = random_mdp(seed=6)
    Q_star = value_iteration(m, GAMMA)
    gaps = []
    for alpha in (1.0, 0.1, 0.01, 0.001):
        gap = soft_value_iteration(m, GAMMA, alpha) - Q_star
        # 0 <= Q_soft - Q* <= gamma alpha log|A| / (1 - gamma): the entropy bonus is at most log|A|.
        assert gap.min() >= -1e-9
        assert gap.max() <= GAMMA * alpha * math.log(3) / (1 - GAMMA) + 1e-9
        gaps.append(float(gap.max()))
    assert gaps == sorted(gaps, reverse=True) and gaps[-1] < 0.03


@pytest.mark.parametrize("which, alpha", [("taxi", 0.05), ("frozen_lake", 0.001)])
def test_greedy_soft_policy_is_near_optimal_and_rollouts_agree(which, alpha, request):
    env, m = request.getfixturevalue(which)
    gamma = 0.99
    _, Q, _ = soft_policy_iteration(m, gamma, alpha)
    greedy = greedy_policy(Q)
    optimal = greedy_policy(value_iteration(m, gamma))
    v_greedy = float(m.initial @ policy_evaluation(m, greedy, gamma))
    v_optimal = float(m.initial @ policy_evaluation(m, optimal, gamma))
    assert v_greedy >= v_optimal - 0.01
    # Over the environment's own time limit, the exact expectation and 1,000 real episodes agree.
    horizon = env.spec.max_episode_steps
    exact = expected_return(m, greedy, horizon)
    returns = rollout_returns(env, greedy, episodes=1000, seed=0)
    standard_error = float(returns.std()) / math.sqrt(len(returns))
    assert abs(float(returns.mean()) - exact) < 3 * standard_error
    assert exact > (7.0 if which == "taxi" else 0.7)  # the policy actually solves the task


def test_bad_input_is_explained():
    m = random_mdp()
    bad_P = m.P.clone()
    bad_P[2, 1, 0] += 0.5
    with pytest.raises(ValueError, match=r"P\[2, 1, :\] sums to 1.5"):
        TabularMDP(bad_P, m.R, m.done, m.initial)
    pi = random_policy()
    with pytest.raises(ValueError, match="alpha"):
        soft_policy_evaluation(m, pi, GAMMA, alpha=0.0)
    with pytest.raises(ValueError, match="alpha"):
        soft_policy_improvement(m.R, alpha=-1.0)
    for gamma in (1.0, -0.1):
        with pytest.raises(ValueError, match=r"gamma must be in \[0, 1\)"):
            soft_policy_iteration(m, gamma, 0.5)
    with pytest.raises(TypeError, match="toy-text"):
        mdp_from_gym(gym.make("Pendulum-v1"))


def test_recipe_prints_convergence_and_writes_plot(tmp_path):
    import re
    import subprocess
    import sys
    from pathlib import Path

    recipe = Path(__file__).resolve().parents[1] / "recipes" / "soft_policy_iteration.py"
    done = subprocess.run(
        [
            sys.executable,
            str(recipe),
            "env=frozen_lake",
            "alpha=0.001",
            "episodes=200",
            "logger.backend=none",
            f"hydra.run.dir={tmp_path}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    gap = float(re.search(r"max \|Q_SPI - Q_soft-value-iteration\| = (\S+)", done.stdout).group(1))
    assert gap < 1e-8
    assert (tmp_path / "convergence.png").stat().st_size > 10_000
    rows = (tmp_path / "history.csv").read_text().splitlines()
    assert rows[0] == "iteration,soft_value,policy_change" and len(rows) >= 3
    bad = subprocess.run(
        [sys.executable, str(recipe), "alpha=-1", f"hydra.run.dir={tmp_path}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and "alpha (the temperature) must be > 0" in bad.stderr
