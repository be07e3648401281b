"""Exact soft policy iteration on Taxi, FrozenLake or CliffWalking: convergence and evaluation.

    python recipes/soft_policy_iteration.py env=taxi alpha=0.05
    python recipes/soft_policy_iteration.py env=frozen_lake alpha=0.001 gamma=0.99

Prints the soft value and policy change per iteration (also history.csv and convergence.png in
the run directory), cross-checks against soft value iteration, then evaluates the soft policy
and its greedy version exactly and over real episodes.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import gymnasium as gym
import hydra
import matplotlib
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from sac_tr.refusal import refuse
from sac_tr.tabular import (
    expected_return,
    greedy_policy,
    mdp_from_gym,
    rollout_returns,
    soft_policy_iteration,
    soft_value_iteration,
)
from sac_tr.tracking import log_metrics, make_logger

matplotlib.use("Agg")
import matplotlib.pyplot as plt

ENV_IDS = {"taxi": "Taxi-v4", "frozen_lake": "FrozenLake-v1", "cliff_walking": "CliffWalking-v1"}


def plot_history(history: list[dict[str, float]], path: Path, title: str) -> None:
    """Soft value from the initial distribution and policy change per iteration."""
    its = [h["iteration"] for h in history]
    fig, (ax_v, ax_c) = plt.subplots(1, 2, figsize=(10, 3.8))
    ax_v.plot(its, [h["soft_value"] for h in history], marker="o")
    ax_v.set(
        xlabel="iteration",
        ylabel="soft value E_s0[V(s0)]",
        title="soft value (Lemma 2: non-decreasing)",
    )
    ax_c.semilogy(its, [max(h["policy_change"], 1e-16) for h in history], marker="o")
    ax_c.set(xlabel="iteration", ylabel="max_s TV(pi_new, pi_old)", title="policy change")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


@hydra.main(
    config_path="../configs/tabular", config_name="soft_policy_iteration", version_base="1.3"
)
def main(cfg: DictConfig) -> None:
    env_id = ENV_IDS.get(cfg.env, cfg.env)
    try:
        env = gym.make(env_id)
        mdp = mdp_from_gym(env)
        pi, q, history = soft_policy_iteration(
            mdp, cfg.gamma, cfg.alpha, tol=cfg.tol, max_iters=cfg.max_iters
        )
    except (ValueError, TypeError, gym.error.Error) as err:
        refuse("soft_policy_iteration", err)
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    logger = make_logger(
        cfg.logger.backend,
        run_dir,
        f"spi_{cfg.env}_alpha{cfg.alpha}",
        project=cfg.logger.project,
        wandb_mode=cfg.logger.wandb_mode,
        config=OmegaConf.to_container(cfg, resolve=True),
    )

    print(
        f"{env_id}: {mdp.num_states} states, {mdp.num_actions} actions, alpha={cfg.alpha}, gamma={cfg.gamma}"
    )
    print(f"{'iter':>4} {'soft value':>14} {'policy change':>14}")
    for h in history:
        print(f"{h['iteration']:>4} {h['soft_value']:>14.6f} {h['policy_change']:>14.3e}")
        log_metrics(
            logger,
            {"spi/soft_value": h["soft_value"], "spi/policy_change": h["policy_change"]},
            int(h["iteration"]),
        )
    with (run_dir / "history.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)
    plot_history(
        history,
        run_dir / "convergence.png",
        f"soft policy iteration on {env_id}, alpha={cfg.alpha}",
    )

    gap = float((q - soft_value_iteration(mdp, cfg.gamma, cfg.alpha)).abs().max())
    print(
        f"max |Q_SPI - Q_soft-value-iteration| = {gap:.2e}  (Theorem 1: both reach the soft-optimal Q)"
    )
    horizon = env.spec.max_episode_steps or 1000
    print(f"Evaluation over the {horizon}-step time limit, undiscounted return:")
    for name, policy in (("soft (stochastic)", pi), ("greedy", greedy_policy(q))):
        exact = expected_return(mdp, policy, horizon)
        returns = rollout_returns(env, policy, cfg.episodes, seed=cfg.seed)
        se = float(returns.std()) / math.sqrt(len(returns))
        print(
            f"  {name:<18} exact {exact:9.4f}   {cfg.episodes} episodes {float(returns.mean()):9.4f} +- {se:.4f} (s.e.)"
        )
        log_metrics(
            logger,
            {
                f"eval/{name.split()[0]}_exact": exact,
                f"eval/{name.split()[0]}_rollout_mean": float(returns.mean()),
            },
            len(history),
        )
    print(f"Run directory: {run_dir} (history.csv, convergence.png)")
    if logger is not None and hasattr(getattr(logger, "experiment", None), "finish"):
        logger.experiment.finish()


if __name__ == "__main__":
    main()
