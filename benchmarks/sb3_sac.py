"""Stable-Baselines3 SAC as a learning baseline, evaluated exactly as sac_tr evaluates its own runs.

    python benchmarks/sb3_sac.py Hopper-v5 --seed 0 --frames 300000 --eval-every 10000 --dir D

Trains SB3's ``SAC("MlpPolicy", env)`` with its defaults (plus ``--kwargs`` JSON), and every
``--eval-every`` frames evaluates its deterministic policy with ``sac_tr.evaluation.evaluate`` on an
environment built by ``sac_tr.envs.make_env`` and reseeded with ``seed + 10_000``: the same function,
environment wrapper, start states and step cap as our recipe. Rows go to ``D/eval.csv`` in our format.

Resumable: SIGTERM/SIGINT/SIGHUP (or ``--checkpoint-every``) saves the model and its replay buffer to
``D/checkpoints/step_<frames>/``, flushed to disk, and then names it in ``D/checkpoints/meta.json``
(replaced atomically), so a run killed or a machine lost while saving keeps its previous
checkpoint; the disk holds two checkpoints during a save (SB3 keeps observations as float64: about
0.2 GiB a checkpoint for Hopper, 0.3 for HalfCheetah and Walker2d, 1.6 for Ant). Running the same
command again continues from there and does nothing once finished (a run stopped before its
first checkpoint starts again). Checkpoints are written once SB3 has stored a step's transition
and made its gradient step; still, a resumed SB3 run is not bit-exact, unlike ours: SB3 starts a
new episode. A stopped run exits 128 + the signal's number, as our recipe does, so a launcher can
tell a stop from a finished run.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path

import torch
from tensordict.nn import TensorDictModule

from sac_tr.envs import make_env
from sac_tr.eval_csv import (
    EvalCSVError,
    check_counted,
    fsync_path,
    last_eval_row,
    trim_eval_csv,
)
from sac_tr.evaluation import EVAL_SEED_OFFSET, evaluate
from sac_tr.run_lock import RunDirInUseError, hold_run_dir
from sac_tr.signals import say
from sac_tr.tracking import EvalCSV
from sac_tr.train import restart_before_first_checkpoint, say_trimmed


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
) -> int | None:
    """Train (or continue) one SB3 SAC run in ``run_dir`` (its rows in ``run_dir/eval.csv``);
    returns the signal that stopped it, or ``None`` when it reached ``frames``."""
    import gymnasium as gym
    from stable_baselines3 import SAC
    from stable_baselines3.common.callbacks import BaseCallback

    ckpt = run_dir / "checkpoints"
    meta_file = ckpt / "meta.json"  # names the complete checkpoint: written after it
    meta = json.loads(meta_file.read_text()) if meta_file.exists() else {"frames": 0, "wall": 0.0}
    if meta["frames"] >= frames:
        print(f"Already finished: {run_dir} at {meta['frames']} frames.")
        return None
    if not meta_file.exists():  # stopped before its first checkpoint: starts again
        restart_before_first_checkpoint(run_dir, min(checkpoint_every, frames))
        if (row := last_eval_row(run_dir / "eval.csv")) is not None:  # past it: not this run's
            raise EvalCSVError(
                f"{run_dir / 'eval.csv'} already holds evaluations (the last at {row['frames']} "
                f"frames), but {ckpt} has no checkpoint to continue from: a fresh run would mix "
                "two curves in one file. Move eval.csv (or the whole directory) aside."
            )
    # What the run was started with: a resume under other arguments would splice two curves.
    args = {
        "env_id": env_id,
        "seed": seed,
        "eval_every": eval_every,
        "episodes": episodes,
        "max_steps": max_steps,
        "sb3_kwargs": sb3_kwargs or {},
    }
    try:  # as meta.json will hold them: tuples become lists
        args = json.loads(json.dumps(args))
    except TypeError as err:
        raise EvalCSVError(
            f"sb3_kwargs must be JSON values, to be recorded for a resume ({err}): give "
            "net_arch and the like as lists and numbers, as --kwargs does."
        ) from None
    saved_args = meta.get("args") or (
        {"eval_every": meta["eval_every"]} if "eval_every" in meta else {}
    )
    differing = [
        f"{k}: saved {v!r}, now {args.get(k)!r}" for k, v in saved_args.items() if args.get(k) != v
    ]
    if differing:
        raise EvalCSVError(
            f"{run_dir} was started with other arguments ({'; '.join(differing)}): rerun with "
            "the saved ones, or give this run another --dir."
        )
    counted = meta["frames"] // eval_every  # evaluations up to the checkpoint
    EvalCSV.check(run_dir, unfinished_ok=True)  # before loading anything
    check_counted(run_dir / "eval.csv", meta["frames"], counted)
    eval_env = make_env(env_id, seed=seed + EVAL_SEED_OFFSET)
    env = gym.make(env_id)
    if meta_file.exists():
        folder = ckpt / meta.get("dir", "")  # no "dir": saved straight into checkpoints/ (before)
        model = SAC.load(folder / "model.zip", env=env, device="cpu")
        model.load_replay_buffer(folder / "replay_buffer.pkl")
        if model.num_timesteps != meta["frames"]:  # the layout before step_<frames>/ could
            raise EvalCSVError(
                f"{folder / 'model.zip'} is at {model.num_timesteps} frames but {meta_file} says "
                f"{meta['frames']}: a save was cut short. Move {ckpt} and eval.csv aside to "
                "start this run again."
            )
    else:
        kwargs = copy.deepcopy(args["sb3_kwargs"])  # its own copy: SB3 edits policy_kwargs
        try:
            model = SAC("MlpPolicy", env, seed=seed, verbose=0, device="cpu", **kwargs)
        except TypeError as err:  # e.g. a misspelt keyword: SAC's own words
            raise EvalCSVError(f"--kwargs is not what SB3's SAC takes: {err}.") from None
    for stale in ckpt.glob("step_*"):  # a save killed before meta.json named it
        if stale.name != meta.get("dir"):
            shutil.rmtree(stale)
    done = trim_eval_csv(run_dir / "eval.csv", meta["frames"], counted)  # later: made again
    say_trimmed(run_dir / "eval.csv", meta["frames"], done)
    eval_csv = EvalCSV(run_dir)
    stop = {"signum": None}

    def on_signal(signum, frame):
        stop["signum"] = signum

    caught = [signal.SIGTERM, signal.SIGINT]
    if signal.getsignal(signal.SIGHUP) != signal.SIG_IGN:  # a closed terminal, unless nohup
        caught.append(signal.SIGHUP)
    previous = {sig: signal.signal(sig, on_signal) for sig in caught}
    start, wall0 = time.perf_counter(), meta["wall"]

    def save() -> None:
        """A new ``step_<frames>/`` with the model and its buffer, on disk (fsync), then
        ``meta.json`` naming it, then the older checkpoints removed: a kill, or a machine lost,
        at any point leaves one complete checkpoint. The disk holds two during a save."""
        target = ckpt / f"step_{model.num_timesteps}"
        target.mkdir(parents=True, exist_ok=True)
        model.save(target / "model.zip")
        model.save_replay_buffer(target / "replay_buffer.pkl")
        wall = wall0 + time.perf_counter() - start
        tmp = meta_file.with_suffix(".tmp")
        tmp.write_text(
            json.dumps(
                {
                    "frames": model.num_timesteps,
                    "wall": wall,
                    "dir": target.name,
                    "args": args,
                }
            )
        )
        for path in (target / "model.zip", target / "replay_buffer.pkl", target, tmp):
            fsync_path(path)
        os.replace(tmp, meta_file)
        fsync_path(ckpt)
        for old in [*ckpt.glob("step_*"), ckpt / "model.zip", ckpt / "replay_buffer.pkl"]:
            if old.is_dir() and old != target:
                shutil.rmtree(old)
            elif old.is_file():
                old.unlink()

    last_save = {"at": model.num_timesteps, "stopping": False}

    def save_now() -> None:
        save()
        last_save["at"] = model.num_timesteps
        last_save["stopping"] = stop["signum"] is not None

    class Evaluate(BaseCallback):
        """Evaluates when a step's frame count reaches a multiple of ``eval_every`` (as SB3's
        own ``EvalCallback``, before SB3 stores that step and trains on it). Checkpoints at the
        start of the next rollout instead: SB3 calls ``on_step`` before it stores the step's
        transition and makes its gradient step, so a save there would lose both on resume.
        A signal is answered the same way: the next rollout start saves, and the step after it
        stops the run (that step is not saved: made again on resume)."""

        def _on_rollout_start(self) -> None:
            t = self.model.num_timesteps
            if t // checkpoint_every > last_save["at"] // checkpoint_every or (
                stop["signum"] is not None and t != last_save["at"]
            ):
                save_now()
            elif stop["signum"] is not None:  # before a step since the start or the last save
                last_save["stopping"] = True

        def _on_step(self) -> bool:
            if last_save["stopping"]:  # this step is not stored: made again on resume
                return False
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
            return True

    try:
        model.learn(
            total_timesteps=frames - model.num_timesteps,
            callback=Evaluate(),
            reset_num_timesteps=False,
        )
        if not last_save["stopping"] and last_save["at"] < model.num_timesteps:
            save_now()  # learn() ended on its budget: the last step stored and trained on
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    row = last_eval_row(run_dir / "eval.csv")
    last = f"{float(row['return_mean']):.1f} at {row['frames']} frames" if row else "none"
    say(  # after SIGHUP its terminal may be gone: then not an error
        f"SB3 {env_id} seed {seed}: checkpoint at {last_save['at']} frames, last evaluation {last}"
    )
    if last_save["at"] >= frames:  # finished, even if a signal came with the last step
        return None
    if stop["signum"] is not None:
        say(f"Stopped at {last_save['at']} frames; rerun the same command to continue.")
    return stop["signum"]


def _kwargs(text: str) -> dict:
    """``--kwargs``: a JSON object, or a refusal naming what is wrong with it."""
    try:
        kwargs = json.loads(text)
    except ValueError as err:
        raise EvalCSVError(f"--kwargs is not JSON ({err}): {text!r}.") from None
    if not isinstance(kwargs, dict):
        raise EvalCSVError(f"--kwargs must be a JSON object of SAC keywords, not {text!r}.")
    return kwargs


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
        with hold_run_dir(args.dir):  # one process per run directory, as sac_tr's own runs
            signum = train_sb3(
                args.env_id,
                args.seed,
                args.frames,
                args.eval_every,
                args.dir,
                episodes=args.episodes,
                checkpoint_every=args.checkpoint_every,
                sb3_kwargs=_kwargs(args.kwargs),
            )
    except (EvalCSVError, RunDirInUseError) as err:  # refused: before any training
        print(f"sb3_sac: {err}", file=sys.stderr)
        sys.exit(2)
    if signum is not None:
        sys.exit(128 + signum)


if __name__ == "__main__":
    main()
