"""Evaluate a saved SAC policy: deterministic return over N episodes, optionally an mp4.

python recipes/evaluate.py checkpoint=runs/halfcheetah/<run> episodes=10
python recipes/evaluate.py checkpoint=runs/pendulum/<run> video=true
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from sac_tr.agent import make_agent
from sac_tr.checkpoint import CheckpointError, find_checkpoint, load_checkpoint
from sac_tr.envs import make_env
from sac_tr.evaluation import evaluate, record_video
from sac_tr.threads import ThreadGovernor

os.environ.setdefault("MUJOCO_GL", "egl")


@hydra.main(config_path="../configs/evaluate", config_name="evaluate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    ThreadGovernor(cfg.threads)  # auto: the cores not busy with other processes
    try:
        path = find_checkpoint(cfg.checkpoint)
        state = load_checkpoint(path, map_location=cfg.device)
    except CheckpointError as err:
        print(f"evaluate: {err}", file=sys.stderr)
        sys.exit(2)
    train_cfg = OmegaConf.create(state["config"])
    env = make_env(train_cfg.env.id, seed=cfg.seed)
    agent = make_agent(env, train_cfg, torch.device(cfg.device))
    agent.loss.load_state_dict(state["loss"])
    returns = evaluate(env, agent.actor, cfg.episodes, cfg.max_steps)
    print(
        f"{train_cfg.env.id}, checkpoint at {state['frames']} frames ({path}): deterministic return "
        f"{returns.mean():.1f} +- {returns.std(unbiased=False):.1f} over {cfg.episodes} episodes "
        f"(min {returns.min():.1f}, max {returns.max():.1f})"
    )
    if cfg.video:
        video_path = Path(
            cfg.video_path or path.parent.parent / "videos" / f"playback_{state['frames']:09d}.mp4"
        )
        video_env = make_env(
            train_cfg.env.id,
            seed=cfg.seed,
            from_pixels=True,
            render_size=train_cfg.eval.get("video_size"),  # as the run's own videos
            render_effects=train_cfg.eval.get("video_effects", True),
        )
        episode_return = record_video(video_env, agent.actor, video_path, cfg.max_steps)
        print(f"video: {video_path} (return {episode_return:.1f})")


if __name__ == "__main__":
    main()
