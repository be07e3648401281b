"""Stable-Baselines3 SAC as a learning baseline, evaluated exactly as sac_tr evaluates its own runs.

    python benchmarks/sb3_sac.py Hopper-v5 --seed 0 --frames 300000 --eval-every 10000 --dir D

Trains SB3's ``SAC("MlpPolicy", env)`` with its defaults (plus ``--kwargs`` JSON), and every
``--eval-every`` frames evaluates its deterministic policy with ``sac_tr.evaluation.evaluate`` on an
environment built by ``sac_tr.envs.make_env`` and reseeded with ``seed + 10_000``: the same function,
environment wrapper, start states and step cap as our recipe. Rows go to ``D/eval.csv`` in our format.

Resumable: SIGTERM/SIGINT (or ``--checkpoint-every``) saves the model and its replay buffer under
``D/checkpoints/``; running the same command again continues from there (SB3 restarts the episode
it was in, so a resumed SB3 run is not bit-exact, unlike ours) and does nothing once finished.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

import torch
from tensordict.nn import TensorDictModule

from sac_tr.envs import make_env
from sac_tr.eval_csv import EvalCSVError, last_eval_row, trim_eval_csv
from sac_tr.evaluation import evaluate
from sac_tr.tracking import EvalCSV

EVAL_SEED_OFFSET = 10_000  # the recipe's eval environment: seed + 10_000


def sb3_actor(model) -> TensorDictModule:
    """SB3's deterministic action a = tanh(mu(s)), rescaled to the action bounds, as a TorchRL
    module reading ``observation`` and writing ``action``, so our ``evaluate`` can run it."""

    def act(observation: torch.Tensor) -> torch.Tensor:
        action, _ = model.predict(observation.cpu().numpy(), deterministic=True)
        return torch.as_tensor(action, dtype=observation.dtype)

    return TensorDictModule(act, in_keys=["observation"], out_keys=["action"])


def train_sb3(
    env_id: str,
    seed: int,
    frames: int,
    eval_every: int,
    run_dir: Path,
    *,
    episodes: int = 10,
    max_steps: int = 1000,
    checkpoint_every: int = 50_000,
    sb3_kwargs: dict | None = None,
) -> Path:
    """Train (or continue) one SB3 SAC run in ``run_dir``; returns the path of its ``eval.csv``."""
    import gymnasium as gym
    from stable_baselines3 import SAC
    from stable_baselines3.common.callbacks import BaseCallback

    ckpt = run_dir / "checkpoints"
    model_file, buffer_file, meta_file = (
        ckpt / "model.zip",
        ckpt / "replay_buffer.pkl",
        ckpt / "meta.json",
    )
    meta = json.loads(meta_file.read_text()) if meta_file.exists() else {"frames": 0, "wall": 0.0}
    if meta["frames"] >= frames:
        print(f"Already finished: {run_dir} at {meta['frames']} frames.")
        return run_dir / "eval.csv"
    trim_eval_csv(run_dir / "eval.csv", meta["frames"])
    eval_csv = EvalCSV(run_dir)
    eval_env = make_env(env_id, seed=seed + EVAL_SEED_OFFSET)
    env = gym.make(env_id)
    if model_file.exists():
        model = SAC.load(model_file, env=env, device="cpu")
        model.load_replay_buffer(buffer_file)
    else:
        model = SAC("MlpPolicy", env, seed=seed, verbose=0, device="cpu", **(sb3_kwargs or {}))
    stop = {"signum": None}

    def on_signal(signum, frame):
        stop["signum"] = signum

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    start, wall0 = time.perf_counter(), meta["wall"]

    def save() -> None:
        ckpt.mkdir(parents=True, exist_ok=True)
        model.save(model_file)
        model.save_replay_buffer(buffer_file)
        tmp = meta_file.with_suffix(".tmp")
        tmp.write_text(
            json.dumps({"frames": model.num_timesteps, "wall": wall0 + time.perf_counter() - start})
        )
        os.replace(tmp, meta_file)  # written last: it names a complete model and buffer

    class Evaluate(BaseCallback):
        def _on_step(self) -> bool:
            t = self.num_timesteps
            if t % eval_every == 0:
                returns = evaluate(
                    eval_env,
                    sb3_actor(self.model),
                    episodes,
                    max_steps,
                    seed=seed + EVAL_SEED_OFFSET,
                )
                eval_csv.append(
                    frames=t,
                    updates=int(self.model._n_updates),
                    return_mean=float(returns.mean()),
                    return_std=float(returns.std(unbiased=False)),
                    episodes=episodes,
                    wall_time_s=round(wall0 + time.perf_counter() - start, 2),
                )
            if t % checkpoint_every == 0 or t >= frames or stop["signum"] is not None:
                save()
            return stop["signum"] is None

    model.learn(
        total_timesteps=frames - model.num_timesteps,
        callback=Evaluate(),
        reset_num_timesteps=False,
    )
    if stop["signum"] is not None:
        print(f"Stopped at {model.num_timesteps} frames; rerun the same command to continue.")
    row = last_eval_row(run_dir / "eval.csv")
    print(f"SB3 {env_id} seed {seed}: {model.num_timesteps} frames, last eval {row}")
    return run_dir / "eval.csv"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("env_id")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--frames", type=int, required=True)
    parser.add_argument("--eval-every", type=int, required=True)
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--checkpoint-every", type=int, default=50_000)
    parser.add_argument("--dir", type=Path, required=True, help="the run directory")
    parser.add_argument("--kwargs", default="{}", help="JSON: extra SAC(...) keyword arguments")
    args = parser.parse_args()
    torch.set_num_threads(1)
    try:
        train_sb3(
            args.env_id,
            args.seed,
            args.frames,
            args.eval_every,
            args.dir,
            episodes=args.episodes,
            checkpoint_every=args.checkpoint_every,
            sb3_kwargs=json.loads(args.kwargs),
        )
    except EvalCSVError as err:
        sys.exit(f"sb3_sac: {err}")


if __name__ == "__main__":
    main()
