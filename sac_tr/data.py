"""Data builders: TorchRL's collector (synchronous, or asynchronous on request) and a TensorDict
replay buffer."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
from omegaconf import DictConfig
from tensordict.nn import TensorDictModuleBase
from torchrl.collectors import AsyncCollector, Collector
from torchrl.data import LazyMemmapStorage, LazyTensorStorage, TensorDictReplayBuffer
from torchrl.envs import EnvBase, EnvCreator, ParallelEnv, SerialEnv

__all__ = ["buffer_device", "make_collector", "make_replay_buffer"]


def make_collector(
    env_fn: Callable[[], EnvBase],
    policy: TensorDictModuleBase,
    *,
    frames_per_batch: int,
    total_frames: int,
    init_random_frames: int,
    device: torch.device | str = "cpu",
    storing_device: torch.device | str | None = None,
    num_envs: int = 1,
    parallel: bool = False,
    asynchronous: bool = False,
) -> Collector | AsyncCollector:
    """TorchRL's synchronous collector (``SyncDataCollector`` before TorchRL 0.12), or with
    ``asynchronous=True`` its ``AsyncCollector``.

    The first ``init_random_frames`` frames use uniformly random actions from the action spec
    (the paper's initial exploration); after that the stochastic policy acts. With
    ``num_envs > 1`` the collector steps that many environments at once, in this process
    (``SerialEnv``: one batched policy call per step) or each in its own process
    (``ParallelEnv``: environment steps run concurrently; pays off with spare cores).
    ``frames_per_batch`` must then be a multiple of ``num_envs``.

    The collector runs ``policy`` itself, in this process: parameters updated by the optimizer
    act on the next step with no weight synchronisation (tests/test_data.py checks it).

    Devices, as TorchRL's own SAC uses them: the environments step on the CPU (MuJoCo runs
    there) and ``policy`` acts on ``device`` (its parameters' device; TorchRL moves each
    observation there and each action back); the batches are stored on ``storing_device``
    (default ``device``), where the replay buffer lives, so that adding them copies nothing more
    and, with a GPU buffer, no frame waits for a copy to the host.

    ``asynchronous=True``: TorchRL's ``AsyncCollector`` instead, which steps the environments in
    a worker process while this one learns. The worker acts with the learner's parameters
    (TorchRL shares them through shared memory and pushes them again at every hand-over), but
    it collects the next batch while this process learns on the current one, so the acting
    policy is up to a batch of updates behind, and runs are not reproducible step for step.
    This process keeps its torch threads (TorchRL's default would leave it one core fewer).
    """
    if num_envs > 1:
        batched = ParallelEnv if parallel else SerialEnv
        creator = EnvCreator(env_fn) if parallel else env_fn  # picklable for the worker processes
        env_fn = partial(batched, num_envs, creator)
    common = dict(
        frames_per_batch=frames_per_batch,
        total_frames=total_frames,
        init_random_frames=init_random_frames,
        env_device="cpu",
        policy_device=device,
        storing_device=device if storing_device is None else storing_device,
        use_buffers=True,  # preallocated batch buffers instead of stacking each step
    )
    if asynchronous:
        return AsyncCollector(
            EnvCreator(env_fn),
            policy,
            update_at_each_batch=True,
            num_threads=torch.get_num_threads(),
            **common,
        )
    return Collector(
        env_fn,
        policy,
        **common,
        # Per-frame cost: no trajectory ids (SAC does not read them; with the buffers above
        # ~0.15 ms/frame at frames_per_batch=1 on HalfCheetah), and never let the collector add
        # transforms to the environment we built.
        track_traj_ids=False,
        auto_register_policy_transforms=False,
    )


def buffer_device(buffer_cfg: DictConfig, training_device: torch.device | str) -> torch.device:
    """Where the replay buffer's transitions live (``buffer_cfg.device``).

    ``auto``: the training device for an in-memory buffer (on a GPU, batches are then sampled
    where the update runs), the CPU for a disk buffer (memory-mapped files are host memory).
    ``cpu`` keeps the GPU's memory for the networks; each sampled batch is then copied over.
    """
    name = buffer_cfg.get("device", "auto")
    if name != "auto":
        return torch.device(name)
    return torch.device("cpu") if buffer_cfg.storage == "disk" else torch.device(training_device)


def make_replay_buffer(
    buffer_cfg: DictConfig, batch_size: int, run_dir: str | Path, device: torch.device | str = "cpu"
) -> TensorDictReplayBuffer:
    """A uniform replay buffer D of ``buffer_cfg.size`` transitions, sampled ``batch_size`` at a time,
    for training on ``device``.

    ``buffer_cfg.storage``: ``memory`` (``LazyTensorStorage``) or ``disk`` (``LazyMemmapStorage``
    under ``run_dir/buffer``, for buffers larger than RAM and for resuming). The transitions live
    on ``buffer_device(buffer_cfg, device)`` and the sampled indices are drawn there. A buffer in
    host memory feeding a GPU returns its batches in pinned memory, so that
    ``batch.to(device, non_blocking=True)`` copies them without waiting for the GPU.
    """
    where = buffer_device(buffer_cfg, device)
    if buffer_cfg.storage == "disk":
        storage = LazyMemmapStorage(
            buffer_cfg.size, scratch_dir=Path(run_dir) / "buffer", existsok=True
        )
    else:
        storage = LazyTensorStorage(buffer_cfg.size, device=where)
    pin = where.type == "cpu" and torch.device(device).type == "cuda"
    return TensorDictReplayBuffer(storage=storage, batch_size=batch_size, pin_memory=pin)
