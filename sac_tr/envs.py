"""Environment builders: TorchRL GymEnv with the transforms a SAC user expects."""

from __future__ import annotations

import os

import gymnasium as gym
from torchrl.envs import (
    Compose,
    DoubleToFloat,
    EnvBase,
    GymEnv,
    RewardSum,
    TransformedEnv,
)

__all__ = ["check_env_id", "make_env", "observation_dim"]


def check_env_id(env_id: str) -> None:
    """Raise a clear error if ``env_id`` cannot be made here (unknown id, an old MuJoCo v2/v3 id
    that gymnasium only keeps as a stub, or a missing dependency), naming the ids that can."""
    base = str(env_id).split("-")[0].lower()
    close = sorted(k for k in gym.registry if k.split("-")[0].lower() == base)
    hint = f" Known versions: {close}." if close else " See gymnasium.registry for the ids."
    if env_id not in gym.registry:
        raise ValueError(f"Unknown environment id {env_id!r}.{hint}")
    try:
        gym.make(env_id).close()
    except (ImportError, gym.error.Error) as err:
        raise ValueError(f"Environment id {env_id!r} cannot be made here: {err}.{hint}") from err


def make_env(
    env_id: str,
    *,
    seed: int | None = None,
    device: str = "cpu",
    from_pixels: bool = False,
) -> TransformedEnv:
    """A TorchRL environment for ``env_id`` with float observations and the running episode return
    (``episode_reward``). Gymnasium's own time limit ends episodes; TorchRL's ``StepCounter`` and
    ``InitTracker`` are left out (SAC reads neither, and together they doubled the cost of a step).

    Args:
        env_id: a gymnasium id, e.g. ``"HalfCheetah-v5"``.
        seed: seeds the environment's reset and the action spec's sampler.
        device: where the environment's tensors live.
        from_pixels: also render ``pixels`` (for video). MuJoCo renders offscreen with EGL,
            so ``MUJOCO_GL`` is set to ``egl`` when the user has not chosen a backend.
    """
    check_env_id(env_id)
    if from_pixels:
        os.environ.setdefault("MUJOCO_GL", "egl")
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")  # classic-control renders with pygame
    base = GymEnv(env_id, device=device, from_pixels=from_pixels, pixels_only=False)
    env = TransformedEnv(base, Compose(DoubleToFloat(), RewardSum()))
    if seed is not None:
        env.set_seed(seed)
    return env


def observation_dim(env: EnvBase, key: str = "observation") -> int:
    """Size of the flat observation vector."""
    shape = env.observation_spec[key].shape
    if len(shape) != 1:
        raise ValueError(
            f"SAC here expects a flat observation vector, got {key!r} of shape {tuple(shape)}."
        )
    return int(shape[-1])
