"""Evaluation of the deterministic policy (the paper's evaluation) and mp4 recording."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torchrl.envs import EnvBase
from torchrl.envs.utils import ExplorationType, set_exploration_type

from sac_tr.modes import eval_mode

__all__ = ["EVAL_SEED_OFFSET", "cuda_indices", "evaluate", "record_video"]


EVAL_SEED_OFFSET = 10_000  # a run evaluates on seed + EVAL_SEED_OFFSET: start states of its own


@torch.no_grad()
def evaluate(
    env: EnvBase,
    actor: TensorDictModuleBase,
    episodes: int,
    max_steps: int,
    seed: int | None = None,
    stochastic: bool = False,
) -> torch.Tensor:
    """Undiscounted returns of ``episodes`` episodes of the deterministic policy a = tanh(mu(s))
    (with ``stochastic=True``: actions sampled from pi(.|s), the paper's Figure 3a comparison).

    Each episode runs until the environment terminates or truncates (its own time limit) or
    ``max_steps`` steps, whichever comes first. With ``seed``, the environment is reseeded first,
    so every evaluation of a run starts from the same initial states and successive evaluations
    differ only by the policy. The actor runs in eval mode (each module back in its own mode
    after). Returns a float tensor ``[episodes]``.
    """
    if seed is not None:
        env.set_seed(seed)
    returns = torch.empty(episodes)
    mode = ExplorationType.RANDOM if stochastic else ExplorationType.DETERMINISTIC
    # Sampled actions draw from a forked generator: evaluating never shifts the training run's
    # random stream (an exact resume relies on it), and the same seed gives the same samples.
    # Only the generators the actor can draw from are forked (the CPU's and its GPUs'), never
    # every visible GPU.
    devices = cuda_indices(actor)
    with (
        torch.random.fork_rng(devices=devices),
        set_exploration_type(mode),
        eval_mode(actor),
    ):
        if seed is not None:  # only the forked generators: torch.manual_seed would reseed every GPU
            torch.default_generator.manual_seed(seed)
            for index in devices:
                torch.cuda.default_generators[index].manual_seed(seed)
        for i in range(episodes):
            rollout = _rollout(env, actor, max_steps)
            returns[i] = rollout["next", "reward"].sum()
    return returns


def cuda_indices(module: torch.nn.Module) -> list[int]:
    """The indices of the CUDA devices holding ``module``'s parameters or buffers (``[]`` on CPU)."""
    tensors = (*module.parameters(), *module.buffers())
    return sorted({t.device.index or 0 for t in tensors if t.device.type == "cuda"})


def _rollout(env: EnvBase, actor: TensorDictModuleBase, max_steps: int) -> TensorDictBase:
    """One episode of at most ``max_steps`` steps. The environment stays on its device (CPU) and
    the actor on its own (the GPU when training there): when they differ, TorchRL moves each
    observation to the actor's device and the action back (as TorchRL's own SAC evaluates)."""
    first = next(iter(actor.parameters()), None)
    cast = first is not None and first.device != env.device
    return env.rollout(max_steps, actor, break_when_any_done=True, auto_cast_to_device=cast)


@torch.no_grad()
def record_video(
    env: EnvBase,
    actor: TensorDictModuleBase,
    path: str | os.PathLike,
    max_steps: int,
    fps: int = 30,
) -> float:
    """Roll out one deterministic episode on ``env`` (built with ``from_pixels=True``) and write
    its frames to ``path`` as an mp4, the actor in eval mode.  Returns the episode's return."""
    import imageio.v2 as imageio

    with set_exploration_type(ExplorationType.DETERMINISTIC), eval_mode(actor):
        rollout = _rollout(env, actor, max_steps)
    frames = torch.cat([rollout["pixels"][:1], rollout["next", "pixels"]]).cpu().numpy()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    imageio.mimwrite(str(path), frames, fps=fps, macro_block_size=1)
    return float(rollout["next", "reward"].sum())
