"""Train SAC on MuJoCo (or any continuous gymnasium task) with the paper's settings.

    python recipes/sac_mujoco.py                                # HalfCheetah-v5, 1M frames
    python recipes/sac_mujoco.py env=hopper seed=1              # another task, another seed
    python recipes/sac_mujoco.py env=pendulum total_frames=10000 eval.every_frames=2000
    python recipes/sac_mujoco.py env=hopper resume=runs/hopper/<run>   # continue it (same overrides)
    python recipes/sac_mujoco.py resume=auto hydra.run.dir=D    # start in D, or continue D's run

The training loop is ``sac_tr.train.train`` (one function, in the order of the paper's
Algorithm 1); the pieces it composes are the builders in ``sac_tr/``.
"""

from __future__ import annotations

import os
import shlex
import signal
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from sac_tr.accel import AccelerationError
from sac_tr.checkpoint import CheckpointError
from sac_tr.config import ConfigError
from sac_tr.eval_csv import EvalCSVError
from sac_tr.refusal import refuse
from sac_tr.run_dirs import continuing_overrides, remove_if_unused
from sac_tr.run_lock import RunDirInUseError
from sac_tr.signals import forward_signal, outlive_lost_output, say
from sac_tr.train import train

os.environ.setdefault("MUJOCO_GL", "egl")  # offscreen rendering for eval videos


@hydra.main(config_path="../configs", config_name="sac_mujoco", version_base="1.3")
def main(cfg: DictConfig) -> None:
    output_dir = HydraConfig.get().runtime.output_dir
    outlive_lost_output()  # `| less` quit: the run goes on (its results are in eval.csv)
    try:
        summary = train(cfg, output_dir)
    except RunDirInUseError as err:  # that directory is another process's run: leave it be
        if Path(err.run_dir).resolve() != Path(output_dir).resolve():
            remove_if_unused(output_dir)  # resume=PATH launched elsewhere
        refuse("sac_mujoco", err)
    except (ConfigError, CheckpointError, EvalCSVError, AccelerationError) as err:
        remove_if_unused(output_dir)  # nothing ran: leave no empty run directory behind
        refuse("sac_mujoco", err)
    if str(summary.run_dir) != str(output_dir):
        remove_if_unused(output_dir)  # resumed in the original run directory
    if summary.already_finished:
        say(
            f"Already finished: {summary.run_dir} holds a checkpoint at {summary.frames} frames "
            f"(total_frames={cfg.total_frames}); last eval return {summary.last_eval_return:.1f}. "
            "Raise total_frames to train further."
        )
        return
    if summary.interrupted_by:
        overrides = continuing_overrides(HydraConfig.get().overrides.task, summary.run_dir)
        command = shlex.join(["python", "recipes/sac_mujoco.py", *overrides])  # quoted for the
        # shell: an override may hold spaces, brackets or quotes
        say(  # after SIGHUP the terminal may be gone: then not an error
            f"Stopped by {summary.interrupted_by} at {summary.frames} frames ({summary.updates} updates); "
            f"checkpoint saved to {summary.checkpoint}.\nResume with: {command}"
        )
        forward_signal(summary.interrupted_by)  # under submitit: requeue (it may exit here)
        sys.exit(128 + int(getattr(signal, summary.interrupted_by)))
    say(  # a signal in the last batch: the run finished, and its terminal may be gone
        f"Done: {summary.frames} frames, {summary.updates} updates, "
        f"last eval return {summary.last_eval_return:.1f}, {summary.frames_per_second:.0f} frames/s. "
        f"Run directory: {summary.run_dir} (eval.csv, checkpoints/step_<frames>.pt"
        + (", videos/)" if cfg.eval.video_every else ")")
    )


if __name__ == "__main__":
    main()
