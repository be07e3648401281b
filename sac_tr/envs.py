"""Environment builders: TorchRL GymEnv with the transforms a SAC user expects."""

from __future__ import annotations

import os
import warnings

import gymnasium as gym
import numpy as np
from torchrl.envs import (
    Compose,
    DoubleToFloat,
    EnvBase,
    GymEnv,
    RewardSum,
    TransformedEnv,
)

from sac_tr.signatures import accepted_arguments

__all__ = ["check_env_id", "check_spaces", "make_env", "observation_dim"]


def check_env_id(env_id: str) -> None:
    """Raise a clear error if ``env_id`` cannot be made here (unknown id, an old MuJoCo v2/v3 id
    that gymnasium only keeps as a stub, or a missing dependency), naming the ids that can."""
    _route_mujoco_warnings()
    base = str(env_id).split("-")[0].lower()
    close = sorted(k for k in gym.registry if k.split("-")[0].lower() == base)
    hint = f" Known versions: {close}." if close else " See gymnasium.registry for the ids."
    if env_id not in gym.registry:
        raise ValueError(f"Unknown environment id {env_id!r}.{hint}")
    try:
        env = gym.make(env_id)
    except (ImportError, gym.error.Error) as err:
        raise ValueError(f"Environment id {env_id!r} cannot be made here: {err}.{hint}") from err
    try:
        check_spaces(env_id, env.observation_space, env.action_space)
    finally:
        env.close()


def check_spaces(env_id: str, observation_space: gym.Space, action_space: gym.Space) -> None:
    """Raise a clear error unless the task has what SAC acts on here: a flat ``Box`` of
    observations and a flat ``Box`` of actions with finite bounds (the policy squashes a Gaussian
    into them, paper appendix C)."""
    boxes = "e.g. Pendulum-v1, MountainCarContinuous-v0 or the MuJoCo tasks (HalfCheetah-v5, ...)"
    if not (
        isinstance(action_space, gym.spaces.Box)
        and len(action_space.shape) == 1
        and np.isfinite(action_space.low).all()
        and np.isfinite(action_space.high).all()
    ):
        raise ValueError(
            f"Environment id {env_id!r} has the action space {action_space}: SAC here acts in a "
            f"flat Box of continuous actions with finite bounds ({boxes})."
        )
    if not (isinstance(observation_space, gym.spaces.Box) and len(observation_space.shape) == 1):
        raise ValueError(
            f"Environment id {env_id!r} has the observation space {observation_space}: SAC here "
            f"reads a flat Box of observations ({boxes}; wrap the task to flatten them)."
        )


def make_env(
    env_id: str,
    *,
    seed: int | None = None,
    device: str = "cpu",
    from_pixels: bool = False,
    render_size: int | None = None,
    render_effects: bool = True,
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
        render_size: frame width and height in pixels, for environments whose constructor takes
            ``width`` and ``height`` (MuJoCo's: 480 by default); others keep their own size.
        render_effects: ``False`` turns off MuJoCo's shadows and reflections in the rendered
            frames (on a CPU they cost ~3/4 of the rendering time); the physics is untouched.
    """
    check_env_id(env_id)
    kwargs = {}
    if from_pixels:
        os.environ.setdefault("MUJOCO_GL", "egl")
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")  # classic-control renders with pygame
        if render_size is not None and _takes_size(env_id):
            kwargs = {"width": render_size, "height": render_size}
    base = GymEnv(env_id, device=device, from_pixels=from_pixels, pixels_only=False, **kwargs)
    model = getattr(base._env.unwrapped, "model", None)  # a MuJoCo model (mjModel) if any
    if from_pixels and not render_effects and hasattr(model, "light_castshadow"):
        model.light_castshadow[:] = 0  # rendering-only fields of mjModel
        model.mat_reflectance[:] = 0
    env = TransformedEnv(base, Compose(DoubleToFloat(), RewardSum()))
    if seed is not None:
        env.set_seed(seed)
    return env


def _takes_size(env_id: str) -> bool:
    """Whether the environment's constructor (for a class, through the bases its ``**kwargs``
    lead to) names ``width`` and ``height`` (MuJoCo environments pass them on to ``MujocoEnv``)."""
    entry = gym.spec(env_id).entry_point
    creator = gym.envs.registration.load_env_creator(entry) if isinstance(entry, str) else entry
    return {"width", "height"} <= accepted_arguments(creator, positional=0).names.keys()


def _route_mujoco_warnings() -> None:
    """Send MuJoCo's C-level warnings through Python's ``warnings`` (each message once).

    Gymnasium's bundled MuJoCo models use a compiler attribute that MuJoCo 3.3+ calls deprecated
    (``settotalmass``); MuJoCo prints that line each time a model is compiled, 7 times per run.
    It is gymnasium's to fix and harmless here; as a Python warning it is shown once per process, can
    be filtered like any other, and MuJoCo's other warnings still reach the user.
    """
    try:
        import mujoco
    except ImportError:
        return
    if mujoco.get_mju_user_warning() is None:  # leave a handler the user installed alone
        mujoco.set_mju_user_warning(_mujoco_warning)


_MUJOCO_WARNED: set[str] = set()


def _mujoco_warning(message: str) -> None:
    # Once per message by hand: libraries that change warning filters reset Python's own
    # once-per-place registry, and the line came back at every environment built.
    if message not in _MUJOCO_WARNED:
        _MUJOCO_WARNED.add(message)
        warnings.warn(f"MuJoCo: {message.strip()}", RuntimeWarning, stacklevel=2)


def observation_dim(env: EnvBase, key: str = "observation") -> int:
    """Size of the flat observation vector."""
    shape = env.observation_spec[key].shape
    if len(shape) != 1:
        raise ValueError(
            f"SAC here expects a flat observation vector, got {key!r} of shape {tuple(shape)}."
        )
    return int(shape[-1])
