"""The training environment's mid-episode state, so a resumed run continues the same episode.

A TorchRL collector keeps the current observation (and the step counter, the running episode
return, the init flag) in a tensordict it carries from step to step; the gymnasium environment
under it keeps the simulator state, its random generator and the time-limit counter. Both are
captured here as tensors, strings and plain numbers, which ``torch.load(weights_only=True)``
reads back without unpickling code.

Simulator state: MuJoCo environments through ``mujoco.mj_getState`` (the full integration state,
warm start included, so the next step is bit-identical); other environments (classic control,
toy text) through their plain attributes (numpy arrays, numbers, ``None``). An environment
stepped in another process (``collector.parallel=true`` or ``collector.asynchronous=true``)
cannot be reached; capturing or restoring it raises ``EnvUnreachableError`` and the caller
starts new episodes instead.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from tensordict import TensorDict
from torchrl.collectors import Collector
from torchrl.envs import EnvBase, ParallelEnv, SerialEnv, TransformedEnv

__all__ = [
    "EnvStateError",
    "EnvUnreachableError",
    "capture_collector_state",
    "capture_gym_state",
    "restore_collector_state",
    "restore_gym_state",
]

_PLAIN = (bool, int, float, str, type(None))


class EnvStateError(RuntimeError):
    """The environment's state cannot be captured or restored (the message says why)."""


class EnvUnreachableError(EnvStateError):
    """The environments are stepped in another process: their state is not reachable from here,
    and a resumed run starts new episodes (other ``EnvStateError``s are mistakes to report)."""


def _gym_envs(env: EnvBase) -> list[gym.Env]:
    """The gymnasium environments under a TorchRL environment (one, or one per SerialEnv slot)."""
    if isinstance(env, TransformedEnv):
        return _gym_envs(env.base_env)
    if isinstance(env, ParallelEnv):
        raise EnvUnreachableError(
            "environments stepped in worker processes (collector.parallel=true) cannot be "
            "captured; a resumed run starts new episodes there."
        )
    if isinstance(env, SerialEnv):
        if env.is_closed:
            env.start()
        return [g for sub in env._envs for g in _gym_envs(sub)]
    inner = getattr(env, "_env", None)
    if not isinstance(inner, gym.Env):
        raise EnvStateError(f"{type(env).__name__} does not wrap a gymnasium environment.")
    return [inner]


def _wrapper_chain(env: gym.Env) -> list[gym.Env]:
    chain = [env]
    while isinstance(chain[-1], gym.Wrapper):
        chain.append(chain[-1].env)
    return chain


def capture_gym_state(env: gym.Env) -> dict[str, Any]:
    """A gymnasium environment's state: simulator, random generator, time-limit counters."""
    base = env.unwrapped
    rng = base.np_random.bit_generator.state
    state: dict[str, Any] = {
        # PCG64's 128-bit integers as text: weights_only loading reads plain str/int/float.
        "rng": {k: str(v) if isinstance(v, int) else v for k, v in rng["state"].items()},
        "rng_extra": [int(rng["has_uint32"]), int(rng["uinteger"])],
        "rng_kind": rng["bit_generator"],
        "elapsed_steps": [getattr(w, "_elapsed_steps", None) for w in _wrapper_chain(env)],
    }
    if hasattr(base, "model") and hasattr(base, "data"):  # MuJoCo
        import mujoco

        spec = mujoco.mjtState.mjSTATE_INTEGRATION
        buf = np.empty(mujoco.mj_stateSize(base.model, spec), dtype=np.float64)
        mujoco.mj_getState(base.model, base.data, buf, spec)
        state["mujoco"] = torch.from_numpy(buf)
        # Derived quantities too (body positions, contact forces...): some tasks read them
        # before stepping (Ant's x_position_before), and after mj_step they still describe the
        # previous sub-step, which a fresh mj_forward would not reproduce.
        state["mujoco_arrays"] = {
            name: torch.from_numpy(value.copy())
            for name in dir(base.data)
            if not name.startswith("_")
            and isinstance(value := getattr(base.data, name), np.ndarray)
        }
    else:  # plain attributes: numpy arrays, numbers, None (classic control, toy text)
        attrs: dict[str, Any] = {}
        for name, value in vars(base).items():
            if name.startswith("_np_random") or name in ("spec", "render_mode"):
                continue
            if isinstance(value, np.ndarray) and value.dtype != object:
                attrs[name] = ("array", torch.from_numpy(value.copy()))
            elif isinstance(value, np.generic):
                attrs[name] = ("scalar", torch.from_numpy(np.asarray(value)))
            elif isinstance(value, _PLAIN):
                attrs[name] = ("plain", value)
            elif isinstance(value, tuple) and all(isinstance(v, _PLAIN) for v in value):
                attrs[name] = ("tuple", list(value))
        state["attrs"] = attrs
    return state


def restore_gym_state(env: gym.Env, state: dict[str, Any]) -> None:
    """Put ``env`` (the same task, any seed) in the state ``capture_gym_state`` returned."""
    base = env.unwrapped
    rng = base.np_random.bit_generator
    if rng.state["bit_generator"] != state["rng_kind"]:
        raise EnvStateError(
            f"saved random generator {state['rng_kind']} != {rng.state['bit_generator']}"
        )
    has_uint32, uinteger = state["rng_extra"]
    rng.state = {
        "bit_generator": state["rng_kind"],
        "state": {k: int(v) for k, v in state["rng"].items()},
        "has_uint32": has_uint32,
        "uinteger": uinteger,
    }
    chain = _wrapper_chain(env)
    if len(chain) != len(state["elapsed_steps"]):
        raise EnvStateError("the environment's wrappers differ from the saved ones.")
    for wrapper, steps in zip(chain, state["elapsed_steps"], strict=True):
        if steps is not None:
            wrapper._elapsed_steps = steps
    if "mujoco" in state:
        import mujoco

        spec = mujoco.mjtState.mjSTATE_INTEGRATION
        mujoco.mj_setState(base.model, base.data, state["mujoco"].numpy(), spec)
        for name, value in state["mujoco_arrays"].items():
            target = getattr(base.data, name, None)
            # Constraint arrays change size with the contacts; the next step recomputes them.
            if isinstance(target, np.ndarray) and target.shape == tuple(value.shape):
                target[...] = value.numpy()
        return
    for name, (kind, value) in state["attrs"].items():
        if kind == "array":
            value = value.numpy().copy()
        elif kind == "scalar":
            value = value.numpy()[()]
        elif kind == "tuple":
            value = tuple(value)
        setattr(base, name, value)


def _check_in_process(collector: Any) -> None:
    if not isinstance(collector, Collector):
        raise EnvUnreachableError(
            f"{type(collector).__name__} steps its environments in a worker process "
            "(collector.asynchronous=true); a resumed run starts new episodes."
        )


def capture_collector_state(collector: Collector) -> dict[str, Any]:
    """The collector's carried tensordict (current observation, step count, episode return)
    and the state of every gymnasium environment it steps. Raises ``EnvStateError`` if an
    environment cannot be reached."""
    _check_in_process(collector)
    return {
        "carrier": collector._carrier.to_dict(),
        "envs": [capture_gym_state(g) for g in _gym_envs(collector.env)],
    }


def restore_collector_state(collector: Collector, state: dict[str, Any]) -> None:
    """Put a freshly built collector back where ``capture_collector_state`` saw the old one.
    Raises ``EnvStateError`` if its environments cannot be reached."""
    _check_in_process(collector)
    envs = _gym_envs(collector.env)
    if len(envs) != len(state["envs"]):
        raise EnvStateError(
            f"the checkpoint holds {len(state['envs'])} environment states but the collector "
            f"steps {len(envs)}: resume with the same collector.num_envs."
        )
    for env, saved in zip(envs, state["envs"], strict=True):
        restore_gym_state(env, saved)
    carrier = collector._carrier
    carrier.update(TensorDict.from_dict(state["carrier"], batch_size=carrier.batch_size))
