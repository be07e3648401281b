"""Evaluate a saved SAC policy: deterministic return over N episodes, optionally an mp4.

python recipes/evaluate.py checkpoint=runs/halfcheetah/<run>
python recipes/evaluate.py checkpoint=runs/pendulum/<run> episodes=20 seed=0 video=true

By default the run's own evaluation is made again (its episodes, step cap and reseeded start
states: ``seed + 10_000``), so the return can be checked against the run's ``eval.csv`` row at
that checkpoint; ``episodes``, ``max_steps`` and ``seed`` set others.
"""

from __future__ import annotations

import os
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from sac_tr.agent import make_agent
from sac_tr.checkpoint import (
    LEFT_CURVE,
    CheckpointError,
    find_checkpoint,
    is_abandoned,
    load_checkpoint,
    run_dir_of,
)
from sac_tr.config import ConfigError, resolve_device, validate_evaluate_config
from sac_tr.envs import make_env
from sac_tr.eval_csv import EvalCSVError, read_eval_rows
from sac_tr.evaluation import EVAL_SEED_OFFSET, evaluate, record_video
from sac_tr.refusal import refuse
from sac_tr.threads import ThreadGovernor

os.environ.setdefault("MUJOCO_GL", "egl")


@hydra.main(config_path="../configs/evaluate", config_name="evaluate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    try:
        validate_evaluate_config(cfg)
        path = find_checkpoint(cfg.checkpoint)
        state = load_checkpoint(path)
    except (ConfigError, CheckpointError) as err:
        refuse("evaluate", err)
    ThreadGovernor(cfg.threads)  # auto: the cores not busy with other processes
    device = resolve_device(cfg.device)
    train_cfg = OmegaConf.create(state["config"])
    own = {
        "episodes": train_cfg.eval.episodes,
        "max_steps": train_cfg.eval.max_steps,
        "seed": train_cfg.seed + EVAL_SEED_OFFSET,
    }
    chosen = {key: own[key] if cfg[key] is None else cfg[key] for key in own}
    env = make_env(train_cfg.env.id, seed=chosen["seed"])
    # The actor's own module acts here, as in the run's evaluations: nothing to accelerate (and
    # nothing for the run's accelerate=on to refuse).
    train_cfg.accelerate = "off"
    agent = make_agent(env, train_cfg, device)
    agent.loss.load_state_dict(state["loss"])
    returns = evaluate(env, agent.actor, chosen["episodes"], chosen["max_steps"], chosen["seed"])
    print(
        f"{train_cfg.env.id}, checkpoint at {state['frames']} frames ({path}): deterministic return "
        f"{returns.mean():.1f} +- {returns.std(unbiased=False):.1f} over {chosen['episodes']} "
        f"episode{'s' if chosen['episodes'] != 1 else ''} (min {returns.min():.1f}, max "
        f"{returns.max():.1f}; seed {chosen['seed']}, "
        f"at most {chosen['max_steps']} steps)"
    )
    if chosen != own:
        other = ", ".join(
            f"{k}={chosen[k]} (the run's: {own[k]})" for k in own if chosen[k] != own[k]
        )
        print(f"(not compared with the run's eval.csv: {other})")
    elif path.parent.name == "checkpoints":
        say_run_row(path.parent.parent / "eval.csv", int(state["frames"]), float(returns.mean()))
    elif is_abandoned(path):  # its rows were trimmed from the run's curve: the one it was on
        curve = path.parent / LEFT_CURVE
        if curve.is_file():
            say_run_row(curve, int(state["frames"]), float(returns.mean()))
        else:  # set aside before 2026-12-04, when the curve was not yet kept beside it
            print(f"(not compared: no {LEFT_CURVE} beside it holds the curve it was on)")
    if cfg.video:
        video_path = Path(
            cfg.video_path or run_dir_of(path) / "videos" / f"playback_{state['frames']:09d}.mp4"
        )
        video_env = make_env(
            train_cfg.env.id,
            seed=chosen["seed"],
            from_pixels=True,
            render_size=train_cfg.eval.get("video_size"),  # as the run's own videos
            render_effects=train_cfg.eval.get("video_effects", True),
        )
        episode_return = record_video(video_env, agent.actor, video_path, chosen["max_steps"])
        print(f"video: {video_path} (return {episode_return:.1f})")


def say_run_row(eval_csv: Path, frames: int, mean: float) -> None:
    """Print how the return just measured compares with the run's own row at ``frames``."""
    try:
        rows = [r for r in read_eval_rows(eval_csv) if int(float(r["frames"])) == frames]
    except EvalCSVError as err:
        print(f"(the run's eval.csv cannot be read to compare: {err})")
        return
    if not rows:
        print(f"(the run's eval.csv has no evaluation at {frames} frames to compare with)")
        return
    logged = float(rows[0]["return_mean"])
    same = "the same" if logged == mean else f"{mean - logged:+.3g} from it"
    print(
        f"The run's own evaluation at {frames} frames ({eval_csv}): {logged:.1f}; this one is {same}."
    )


if __name__ == "__main__":
    main()
