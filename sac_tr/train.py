"""The SAC training loop (the paper's Algorithm 1), read top to bottom in one function: ``train``."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from tensordict import TensorDictBase
from tqdm import tqdm

from sac_tr.agent import SACAgent, make_agent, update
from sac_tr.checkpoint import (
    find_checkpoint,
    get_rng_state,
    load_checkpoint,
    save_checkpoint,
    set_rng_state,
)
from sac_tr.config import validate_config
from sac_tr.data import make_collector, make_replay_buffer
from sac_tr.envs import make_env
from sac_tr.evaluation import evaluate, record_video
from sac_tr.tracking import EvalCSV, log_metrics, log_video_file, make_logger

__all__ = ["TrainSummary", "resolve_device", "train"]


@dataclass
class TrainSummary:
    """What a finished (or resumed-and-finished) run reports."""

    run_dir: Path
    frames: int
    updates: int
    last_eval_return: float
    checkpoint: Path
    frames_per_second: float


def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _crossed(frames: int, new_frames: int, every: int) -> bool:
    """True when the frame counter passed a multiple of ``every`` in the last batch."""
    return frames // every > (frames - new_frames) // every


def train(cfg: DictConfig, run_dir: str | Path) -> TrainSummary:
    """Train SAC as configured; outputs (eval.csv, checkpoints, videos, logs) go to ``run_dir``.

    With ``cfg.resume`` set, everything learned so far is restored from that checkpoint and the
    frame counter continues where it stopped.
    """
    validate_config(cfg)  # fail on a typo before any environment or network is built
    run_dir = Path(run_dir)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    _seed_everything(cfg.seed)
    resumed = load_checkpoint(cfg.resume) if cfg.resume else None
    if resumed is not None:  # continue in the run's own directory
        run_dir = find_checkpoint(cfg.resume).parent.parent

    # --- Build: environments, the agent (pi_phi, Q_theta1,2, V_psi, V_psibar), replay buffer D.
    train_env = make_env(cfg.env.id, seed=cfg.seed)
    eval_env = make_env(cfg.env.id, seed=cfg.seed + 10_000)
    agent = make_agent(train_env, cfg, device)
    buffer = make_replay_buffer(cfg.buffer, cfg.batch_size, run_dir, device)
    frames = updates = evals = 0
    update_credit = 0.0
    wandb_id = None
    if resumed is not None:
        frames, updates, evals = resumed["frames"], resumed["updates"], resumed["evals"]
        update_credit, wandb_id = resumed["update_credit"], resumed.get("wandb_id") or None
        _restore(agent, buffer, resumed, run_dir)
    remaining = cfg.total_frames - frames
    collector = (
        make_collector(
            lambda: make_env(cfg.env.id, seed=cfg.seed + frames),
            agent.actor,
            frames_per_batch=cfg.frames_per_batch,
            total_frames=remaining,
            init_random_frames=max(0, cfg.env.init_random_frames - frames),
            device=device,
        )
        if remaining > 0
        else None
    )
    logger = make_logger(
        cfg.logger.backend,
        run_dir,
        exp_name=f"sac_{cfg.env.name}_seed{cfg.seed}",
        project=cfg.logger.project,
        wandb_mode=cfg.logger.wandb_mode,
        config=OmegaConf.to_container(cfg, resolve=True),
        run_id=wandb_id,
    )
    eval_csv = EvalCSV(run_dir)
    video_env = None
    last_eval = float("nan")
    losses_sum: TensorDictBase | None = None
    losses_count = 0
    start, start_frames = time.perf_counter(), frames
    progress = tqdm(
        total=cfg.total_frames,
        initial=frames,
        unit="frame",
        disable=not cfg.progress,
        dynamic_ncols=True,
    )

    def checkpoint() -> Path:
        return _save(
            agent,
            buffer,
            cfg,
            run_dir,
            frames=frames,
            updates=updates,
            evals=evals,
            update_credit=update_credit,
            logger=logger,
        )

    ckpt_path, saved_at = None, None
    for batch in collector or ():
        # --- Environment step(s): a_t ~ pi_phi(.|s_t), s_{t+1} ~ p; D <- D u {(s, a, r, s')}.
        new_frames = batch.numel()
        frames += new_frames
        buffer.extend(batch.select(*agent.loss.in_keys, ("next", "done"), strict=False).to("cpu"))
        finished = batch["next", "done"].squeeze(-1)
        if finished.any():
            log_metrics(
                logger,
                {"train/episode_return": batch["next", "episode_reward"][finished].mean()},
                frames,
            )

        # --- Gradient step(s): V_psi, pi_phi, Q_theta_i, then psibar <- tau psi + (1-tau) psibar.
        if frames >= cfg.env.init_random_frames and len(buffer) >= cfg.batch_size:
            update_credit += new_frames * cfg.utd_ratio
            while update_credit >= 1.0:
                out = update(agent, buffer.sample().to(device))
                losses_sum = out if losses_sum is None else losses_sum + out
                losses_count += 1
                updates += 1
                update_credit -= 1.0
        collector.update_policy_weights_()

        if losses_count >= cfg.log_every_updates:
            elapsed = time.perf_counter() - start
            metrics = {f"train/{k}": v for k, v in (losses_sum / losses_count).items()}
            metrics.update(
                {
                    "charts/frames_per_second": (frames - start_frames) / elapsed,
                    "charts/updates": updates,
                }
            )
            log_metrics(logger, metrics, frames)
            losses_sum, losses_count = None, 0

        # --- Evaluation of the deterministic policy tanh(mu(s)), every eval.every_frames frames.
        if _crossed(frames, new_frames, cfg.eval.every_frames) or frames >= cfg.total_frames:
            returns = evaluate(eval_env, agent.actor, cfg.eval.episodes, cfg.eval.max_steps)
            evals += 1
            last_eval = float(returns.mean())
            eval_csv.append(
                frames=frames,
                updates=updates,
                return_mean=last_eval,
                return_std=float(returns.std(unbiased=False)),
                episodes=len(returns),
                wall_time_s=round(time.perf_counter() - start, 2),
            )
            log_metrics(
                logger,
                {"eval/return_mean": last_eval, "eval/return_std": returns.std(unbiased=False)},
                frames,
            )
            if cfg.eval.video_every and (evals - 1) % cfg.eval.video_every == 0:
                video_env = video_env or make_env(
                    cfg.env.id, seed=cfg.seed + 20_000, from_pixels=True
                )
                video = run_dir / "videos" / f"eval_{frames:09d}.mp4"
                record_video(video_env, agent.actor, video, cfg.eval.max_steps)
                log_video_file(logger, "eval/video", video, frames)

        if _crossed(frames, new_frames, cfg.checkpoint.every_frames) or frames >= cfg.total_frames:
            ckpt_path, saved_at = checkpoint(), frames
        progress.update(new_frames)
        progress.set_postfix(
            sps=f"{(frames - start_frames) / (time.perf_counter() - start):.0f}",
            updates=updates,
            eval=f"{last_eval:.1f}",
            refresh=False,
        )

    progress.close()
    if collector is not None:
        collector.shutdown()
    if saved_at != frames:  # the loop has not saved this state yet
        ckpt_path = checkpoint()
    if (
        logger is not None
        and hasattr(logger, "experiment")
        and hasattr(logger.experiment, "finish")
    ):
        logger.experiment.finish()
    elapsed = time.perf_counter() - start
    return TrainSummary(
        run_dir=run_dir,
        frames=frames,
        updates=updates,
        last_eval_return=last_eval,
        checkpoint=ckpt_path,
        frames_per_second=(frames - start_frames) / elapsed,
    )


def _save(
    agent: SACAgent,
    buffer,
    cfg: DictConfig,
    run_dir: Path,
    *,
    frames: int,
    updates: int,
    evals: int,
    update_credit: float,
    logger,
) -> Path:
    """Write ``run_dir/checkpoints/latest.pt``: networks and targets (the loss's state), the
    optimizer, counters, RNG states, the W&B run id and, if asked, the replay buffer."""
    ckpt_dir = run_dir / "checkpoints"
    if cfg.checkpoint.save_buffer:
        (ckpt_dir / "buffer").mkdir(parents=True, exist_ok=True)
        buffer.dumps(ckpt_dir / "buffer")
    experiment = getattr(logger, "experiment", None)
    state = {
        "frames": frames,
        "updates": updates,
        "evals": evals,
        "update_credit": update_credit,
        "loss": agent.loss.state_dict(),
        "optimizer": agent.optimizer.state_dict(),
        "target_updater_counter": getattr(agent.target_updater, "counter", 0),
        "rng": get_rng_state(),
        "wandb_id": getattr(experiment, "id", "") or "",
        "has_buffer": bool(cfg.checkpoint.save_buffer),
        "config": OmegaConf.to_yaml(cfg),
    }
    return save_checkpoint(state, ckpt_dir / "latest.pt")


def _restore(agent: SACAgent, buffer, state: dict, run_dir: Path) -> None:
    agent.loss.load_state_dict(state["loss"])
    agent.optimizer.load_state_dict(state["optimizer"])
    if hasattr(agent.target_updater, "counter"):
        agent.target_updater.counter = state["target_updater_counter"]
    set_rng_state(state["rng"])
    if state.get("has_buffer"):
        buffer.loads(run_dir / "checkpoints" / "buffer")
