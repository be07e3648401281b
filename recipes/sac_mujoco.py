"""Train SAC on MuJoCo (or any continuous gymnasium task) with the paper's settings.

    python recipes/sac_mujoco.py                                # HalfCheetah-v5, 1M frames
    python recipes/sac_mujoco.py env=hopper seed=1              # another task, another seed
    python recipes/sac_mujoco.py env=pendulum total_frames=10000 eval.every_frames=2000
    python recipes/sac_mujoco.py resume=runs/hopper/<run>       # continue an interrupted run

The training loop is ``sac_tr.train.train`` (one function, in the order of the paper's
Algorithm 1); the pieces it composes are the builders in ``sac_tr/``.
"""

from __future__ import annotations

import os
import signal
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from sac_tr.config import ConfigError
from sac_tr.train import train

os.environ.setdefault("MUJOCO_GL", "egl")  # offscreen rendering for eval videos


@hydra.main(config_path="../configs", config_name="sac_mujoco", version_base="1.3")
def main(cfg: DictConfig) -> None:
    try:
        summary = train(cfg, HydraConfig.get().runtime.output_dir)
    except ConfigError as err:
        print(f"sac_mujoco: {err}", file=sys.stderr)
        sys.exit(2)
    if summary.interrupted_by:
        overrides = [o for o in HydraConfig.get().overrides.task if not o.startswith("resume=")]
        command = " ".join(
            ["python recipes/sac_mujoco.py", *overrides, f"resume={summary.run_dir}"]
        )
        print(
            f"Stopped by {summary.interrupted_by} at {summary.frames} frames ({summary.updates} updates); "
            f"checkpoint saved to {summary.checkpoint}.\nResume with: {command}"
        )
        sys.exit(128 + int(getattr(signal, summary.interrupted_by)))
    print(
        f"Done: {summary.frames} frames, {summary.updates} updates, "
        f"last eval return {summary.last_eval_return:.1f}, {summary.frames_per_second:.0f} frames/s. "
        f"Run directory: {summary.run_dir} (eval.csv, checkpoints/step_<frames>.pt, videos/)"
    )


if __name__ == "__main__":
    main()
