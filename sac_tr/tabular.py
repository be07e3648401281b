"""Exact soft policy iteration on finite MDPs: the paper's Lemma 1, Lemma 2 and Theorem 1.

Everything is vectorised over states and actions (torch, float64); the only Python loops run
over iterations. Notation: ``P[s, a, s']`` transition probabilities, ``R[s, a]`` expected reward,
``C[s, a, s'] = P[s, a, s'] * (1 - done)`` the probability of continuing to ``s'`` (a transition
that ends the episode does not bootstrap), ``pi[s, a]`` a policy, ``alpha`` the temperature.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

__all__ = [
    "TabularMDP",
    "expected_return",
    "greedy_policy",
    "mdp_from_gym",
    "policy_evaluation",
    "rollout_returns",
    "soft_bellman_backup",
    "soft_policy_evaluation",
    "soft_policy_evaluation_exact",
    "soft_policy_improvement",
    "soft_policy_iteration",
    "soft_value",
    "soft_value_iteration",
    "value_iteration",
]

DTYPE = torch.float64


@dataclass
class TabularMDP:
    """A finite MDP as dense tensors.

    Attributes:
        P: ``[S, A, S]`` transition probabilities; every ``P[s, a]`` sums to 1.
        R: ``[S, A]`` expected immediate reward.
        done: ``[S, A, S]`` 1 where the transition ``(s, a, s')`` ends the episode.
        initial: ``[S]`` initial-state distribution.
    """

    P: torch.Tensor
    R: torch.Tensor
    done: torch.Tensor
    initial: torch.Tensor
    name: str = ""
    continuation: torch.Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        _check_transitions(self.P)
        if self.R.shape != self.P.shape[:2] or self.done.shape != self.P.shape:
            raise ValueError(
                f"R must be [S, A] = {tuple(self.P.shape[:2])} and done [S, A, S] = {tuple(self.P.shape)}, "
                f"got R {tuple(self.R.shape)} and done {tuple(self.done.shape)}."
            )
        if self.initial.shape != self.P.shape[:1] or abs(float(self.initial.sum()) - 1) > 1e-8:
            raise ValueError("initial must be a probability vector over the S states.")
        self.continuation = self.P * (1.0 - self.done)

    @property
    def num_states(self) -> int:
        return self.P.shape[0]

    @property
    def num_actions(self) -> int:
        return self.P.shape[1]


def _check_transitions(P: torch.Tensor) -> None:
    if P.ndim != 3 or P.shape[0] != P.shape[2]:
        raise ValueError(f"P must have shape [S, A, S], got {tuple(P.shape)}.")
    if (P < 0).any():
        raise ValueError("P has negative entries: transition probabilities must be >= 0.")
    sums = P.sum(-1)
    worst = (sums - 1).abs().max()
    if worst > 1e-6:
        s, a = divmod(int((sums - 1).abs().argmax()), P.shape[1])
        raise ValueError(
            f"P[s, a, :] must sum to 1 over s', but P[{s}, {a}, :] sums to {float(sums[s, a]):.6f} "
            f"(largest deviation {float(worst):.2e})."
        )


def _check_gamma_alpha(gamma: float, alpha: float | None = None) -> None:
    if not 0.0 <= gamma < 1.0:
        raise ValueError(
            f"gamma must be in [0, 1) for the soft Bellman backup to contract, got {gamma}."
        )
    if alpha is not None and not alpha > 0.0:
        raise ValueError(
            f"alpha (the temperature) must be > 0, got {alpha}; use value_iteration for alpha = 0."
        )


def mdp_from_gym(env) -> TabularMDP:
    """Read ``P[s, a, s']``, ``R[s, a]``, the done mask and the initial distribution of a toy-text env.

    Works for gymnasium's environments that expose ``unwrapped.P`` (Taxi-v4, FrozenLake-v1,
    CliffWalking-v1): ``P[s][a]`` is a list of ``(prob, next_state, reward, done)``.
    """
    u = env.unwrapped
    if not hasattr(u, "P"):
        raise TypeError(f"{u!r} has no transition table .P: use a gymnasium toy-text environment.")
    S, A = int(u.observation_space.n), int(u.action_space.n)
    rows = [(s, a, p, s2, r, d) for s in range(S) for a in range(A) for (p, s2, r, d) in u.P[s][a]]
    s_idx, a_idx, prob, s2_idx, reward, done = (
        torch.tensor(col) for col in zip(*rows, strict=True)
    )
    prob, reward, done = prob.to(DTYPE), reward.to(DTYPE), done.to(DTYPE)
    P = torch.zeros(S, A, S, dtype=DTYPE).index_put_((s_idx, a_idx, s2_idx), prob, accumulate=True)
    R = torch.zeros(S, A, dtype=DTYPE).index_put_((s_idx, a_idx), prob * reward, accumulate=True)
    D = torch.zeros(S, A, S, dtype=DTYPE).index_put_((s_idx, a_idx, s2_idx), done)
    initial = torch.as_tensor(u.initial_state_distrib, dtype=DTYPE)
    return TabularMDP(
        P, R, D.clamp(max=1.0), initial / initial.sum(), name=env.spec.id if env.spec else ""
    )


def soft_value(Q: torch.Tensor, pi: torch.Tensor, alpha: float) -> torch.Tensor:
    """V(s) = E_{a~pi}[Q(s, a) - alpha log pi(a|s)], with 0 log 0 = 0.  ``[S]``."""
    return (pi * Q).sum(-1) - alpha * torch.special.xlogy(pi, pi).sum(-1)


def soft_bellman_backup(
    mdp: TabularMDP, pi: torch.Tensor, Q: torch.Tensor, gamma: float, alpha: float
) -> torch.Tensor:
    """T^pi Q(s, a) = R(s, a) + gamma E_{s'}[V(s')] (Lemma 1)."""
    return mdp.R + gamma * torch.einsum("sat,t->sa", mdp.continuation, soft_value(Q, pi, alpha))


def soft_policy_evaluation(
    mdp: TabularMDP,
    pi: torch.Tensor,
    gamma: float,
    alpha: float,
    tol: float = 1e-10,
    max_iters: int = 100_000,
    Q0: torch.Tensor | None = None,
) -> tuple[torch.Tensor, int]:
    """Iterate the soft Bellman backup to its fixed point, the soft Q of ``pi`` (Lemma 1).

    Returns ``(Q, sweeps)``; stops when ``max |T Q - Q| < tol * (1 - gamma)``, which bounds the
    distance to the fixed point by ``tol``.
    """
    _check_gamma_alpha(gamma, alpha)
    Q = torch.zeros_like(mdp.R) if Q0 is None else Q0.clone()
    for sweep in range(1, max_iters + 1):
        Q_next = soft_bellman_backup(mdp, pi, Q, gamma, alpha)
        gap = (Q_next - Q).abs().max()
        Q = Q_next
        if gap < tol * (1 - gamma):
            return Q, sweep
    raise RuntimeError(f"soft policy evaluation did not reach tol={tol} in {max_iters} sweeps.")


def soft_policy_evaluation_exact(
    mdp: TabularMDP, pi: torch.Tensor, gamma: float, alpha: float
) -> torch.Tensor:
    """The fixed point of Lemma 1 by a linear solve: (I - gamma P_pi) V = r_pi, Q = R + gamma C V."""
    _check_gamma_alpha(gamma, alpha)
    P_pi = torch.einsum("sa,sat->st", pi, mdp.continuation)
    r_pi = (pi * mdp.R).sum(-1) - alpha * torch.special.xlogy(pi, pi).sum(-1)
    eye = torch.eye(mdp.num_states, dtype=DTYPE)
    V = torch.linalg.solve(eye - gamma * P_pi, r_pi)
    return mdp.R + gamma * torch.einsum("sat,t->sa", mdp.continuation, V)


def soft_policy_improvement(Q: torch.Tensor, alpha: float) -> torch.Tensor:
    """pi_new(.|s) = softmax(Q(s, .) / alpha): the KL projection of Lemma 2 over all distributions."""
    _check_gamma_alpha(0.0, alpha)
    return torch.softmax(Q / alpha, dim=-1)


def soft_policy_iteration(
    mdp: TabularMDP,
    gamma: float,
    alpha: float,
    tol: float = 1e-10,
    max_iters: int = 1_000,
    exact: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, list[dict[str, float]]]:
    """Alternate soft policy evaluation and improvement from the uniform policy (Theorem 1).

    Returns ``(pi, Q, history)``; ``history[i]`` holds the iteration's soft value from the
    initial distribution and the policy change ``max_s TV(pi_new(.|s), pi_old(.|s))``.
    """
    _check_gamma_alpha(gamma, alpha)
    pi = torch.full_like(mdp.R, 1.0 / mdp.num_actions)
    history: list[dict[str, float]] = []
    Q = None
    for it in range(1, max_iters + 1):
        if exact:
            Q = soft_policy_evaluation_exact(mdp, pi, gamma, alpha)
        else:
            Q, _ = soft_policy_evaluation(mdp, pi, gamma, alpha, tol=tol, Q0=Q)
        pi_new = soft_policy_improvement(Q, alpha)
        change = 0.5 * (pi_new - pi).abs().sum(-1).max()
        value = mdp.initial @ soft_value(Q, pi, alpha)
        history.append(
            {"iteration": it, "soft_value": float(value), "policy_change": float(change)}
        )
        pi = pi_new
        if change < tol:
            break
    return pi, soft_policy_evaluation_exact(mdp, pi, gamma, alpha), history


def soft_value_iteration(
    mdp: TabularMDP, gamma: float, alpha: float, tol: float = 1e-10, max_iters: int = 100_000
) -> torch.Tensor:
    """The soft-optimal Q directly: Q <- R + gamma C [alpha logsumexp(Q / alpha)]."""
    _check_gamma_alpha(gamma, alpha)
    Q = torch.zeros_like(mdp.R)
    for _ in range(max_iters):
        V = alpha * torch.logsumexp(Q / alpha, dim=-1)
        Q_next = mdp.R + gamma * torch.einsum("sat,t->sa", mdp.continuation, V)
        if (Q_next - Q).abs().max() < tol * (1 - gamma):
            return Q_next
        Q = Q_next
    raise RuntimeError(f"soft value iteration did not reach tol={tol} in {max_iters} sweeps.")


def value_iteration(
    mdp: TabularMDP, gamma: float, tol: float = 1e-10, max_iters: int = 100_000
) -> torch.Tensor:
    """The ordinary optimal Q* (the alpha -> 0 limit): Q <- R + gamma C max_a Q."""
    _check_gamma_alpha(gamma)
    Q = torch.zeros_like(mdp.R)
    for _ in range(max_iters):
        Q_next = mdp.R + gamma * torch.einsum("sat,t->sa", mdp.continuation, Q.max(-1).values)
        if (Q_next - Q).abs().max() < tol * (1 - gamma):
            return Q_next
        Q = Q_next
    raise RuntimeError(f"value iteration did not reach tol={tol} in {max_iters} sweeps.")


def greedy_policy(Q: torch.Tensor) -> torch.Tensor:
    """The deterministic policy argmax_a Q(s, a), as a one-hot ``[S, A]``."""
    return torch.nn.functional.one_hot(Q.argmax(-1), Q.shape[-1]).to(DTYPE)


def policy_evaluation(mdp: TabularMDP, pi: torch.Tensor, gamma: float) -> torch.Tensor:
    """Ordinary (alpha = 0) state values of ``pi`` by a linear solve.  ``[S]``."""
    _check_gamma_alpha(gamma)
    P_pi = torch.einsum("sa,sat->st", pi, mdp.continuation)
    eye = torch.eye(mdp.num_states, dtype=DTYPE)
    return torch.linalg.solve(eye - gamma * P_pi, (pi * mdp.R).sum(-1))


def expected_return(mdp: TabularMDP, pi: torch.Tensor, horizon: int, gamma: float = 1.0) -> float:
    """Exact expected return of ``pi`` from the initial distribution over at most ``horizon`` steps.

    This is what a rollout under a ``TimeLimit(horizon)`` measures on average (gamma = 1: the
    plain sum of rewards; for FrozenLake, the success probability).
    """
    P_pi = torch.einsum("sa,sat->st", pi, mdp.continuation)
    r_pi = (pi * mdp.R).sum(-1)
    V = torch.zeros(mdp.num_states, dtype=DTYPE)
    for _ in range(horizon):
        V = r_pi + gamma * P_pi @ V
    return float(mdp.initial @ V)


def rollout_returns(env, pi: torch.Tensor, episodes: int, seed: int = 0) -> torch.Tensor:
    """Undiscounted returns of ``episodes`` real episodes of ``pi`` on ``env`` (its own TimeLimit).

    Actions are sampled from ``pi[s]`` (a one-hot ``pi`` gives the greedy policy).
    """
    generator = torch.Generator().manual_seed(seed)
    returns = torch.zeros(episodes, dtype=DTYPE)
    for episode in range(episodes):
        state, _ = env.reset(seed=seed + episode)
        finished = False
        while not finished:
            action = int(torch.multinomial(pi[state], 1, generator=generator))
            state, reward, terminated, truncated, _ = env.step(action)
            returns[episode] += reward
            finished = terminated or truncated
    return returns
