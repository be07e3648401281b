"""Environment steps per second of the whole training loop (collection + 1 update per step):
sac_tr's recipe against Stable-Baselines3 ``learn()``, on the same machine in the same run.

    python benchmarks/bench_train.py                        # HalfCheetah-v5, 3,000 steps each, 2 threads
    python benchmarks/bench_train.py --frames 5000 --loss sac_v2 --threads 1
    python benchmarks/bench_train.py --device cuda --frames 20000 --learning-starts 1000
    python benchmarks/bench_train.py --device cuda --frames 50000 --compile --cudagraphs --no-sb3

Both start learning after ``--learning-starts`` random steps and then do one gradient step per
environment step with batch 256 and 2 x 256 networks; neither evaluates or logs during the
timed run. Each contender runs ``--reps`` times, alternating; the medians and their ratio are printed.
``--device cuda`` trains both on the GPU (environments on the CPU; ours keeps its replay buffer
on the GPU unless ``--buffer-device cpu``; SB3 keeps its buffer in host memory).
``--compile`` / ``--cudagraphs`` (ours): the whole update through torch.compile / captured in CUDA
graphs; the compilation and capture happen inside the timed run, so give enough ``--frames``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from tempfile import TemporaryDirectory

import torch
from recipe_config import recipe_config  # benchmarks/, on the path as this script's folder

from sac_tr.train import train


def run_ours(args) -> float:
    overrides = [
        "env=halfcheetah",
        f"env.id={args.env_id}",
        f"total_frames={args.frames}",
        f"env.init_random_frames={args.learning_starts}",
        f"loss={args.loss}",
        "logger=none",
        "progress=false",
        f"threads={args.threads}",
        f"eval.every_frames={10 * args.frames}",
        "eval.episodes=1",
        "eval.max_steps=1",
        "eval.video_every=0",
        f"checkpoint.every_frames={10 * args.frames}",
        "checkpoint.save_buffer=false",
        f"buffer.size={args.frames}",
        f"frames_per_batch={args.frames_per_batch}",
        f"collector.asynchronous={str(args.asynchronous).lower()}",
        f"device={args.device}",
        f"buffer.device={args.buffer_device}",
        f"compile={str(args.compile).lower()}",
        f"cudagraphs={str(args.cudagraphs).lower()}",
    ]
    cfg = recipe_config(overrides)
    with TemporaryDirectory() as run_dir:
        return train(cfg, run_dir).frames_per_second  # timed from after construction, like SB3's


def run_sb3(args) -> float | None:
    try:
        import gymnasium as gym
        from stable_baselines3 import SAC
    except ImportError:
        print("(stable-baselines3 not installed: pip install -e '.[bench]')")
        return None
    model = SAC(
        "MlpPolicy",
        gym.make(args.env_id),
        learning_starts=args.learning_starts,
        buffer_size=args.frames,
        # the same blocks as ours: k environment steps, then k gradient steps (k = 1: interleaved)
        train_freq=(args.frames_per_batch, "step"),
        gradient_steps=args.frames_per_batch,
        device=args.device,
        seed=0,
        verbose=0,
    )
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    model.learn(total_timesteps=args.frames)
    return args.frames / (time.perf_counter() - start)


def _gpu_name(device: str) -> str:
    """`` (<GPU model>)`` for a CUDA device, so that a printed figure names its GPU."""
    if not device.startswith("cuda"):
        return ""
    return f" ({torch.cuda.get_device_name(torch.device(device))})"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--env-id", default="HalfCheetah-v5")
    parser.add_argument("--frames", type=int, default=3000)
    parser.add_argument("--learning-starts", type=int, default=500)
    parser.add_argument("--loss", default="sac_v1", choices=["sac_v1", "sac_v2"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument(
        "--frames-per-batch",
        type=int,
        default=1,
        help="env steps per collector batch, then as many updates (SB3: train_freq, gradient_steps)",
    )
    parser.add_argument(
        "--async",
        dest="asynchronous",
        action="store_true",
        help="ours: TorchRL's AsyncCollector (environment in a worker process)",
    )
    parser.add_argument(
        "--device",
        default="cpu",
        help="where both learners train: cpu, cuda or cuda:N (environments stay on the CPU)",
    )
    parser.add_argument(
        "--buffer-device",
        default="auto",
        help="ours: where the replay buffer lives (auto = the training device, or cpu)",
    )
    parser.add_argument(
        "--compile", action="store_true", help="ours: torch.compile the whole update"
    )
    parser.add_argument(
        "--cudagraphs", action="store_true", help="ours: capture the update in CUDA graphs"
    )
    parser.add_argument("--no-sb3", action="store_true", help="time ours only")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ours, sb3 = [], []
    for _ in range(args.reps):
        ours.append(run_ours(args))
        result = None if args.no_sb3 else run_sb3(args)
        if result is not None:
            sb3.append(result)
    print(
        f"{args.env_id}, {args.frames} steps ({args.learning_starts} random), UTD 1, batch 256, "
        f"2 x 256, device={args.device}{_gpu_name(args.device)}, "
        f"buffer.device={args.buffer_device}, threads={args.threads}, "
        f"reps={args.reps}, "
        f"frames_per_batch={args.frames_per_batch}, ours asynchronous={args.asynchronous}, "
        f"compile={args.compile}, cudagraphs={args.cudagraphs}"
    )
    print(
        f"sac_tr {args.loss}: {statistics.median(ours):.1f} env steps/s  {[round(x, 1) for x in ours]}"
    )
    if sb3:
        print(
            f"sb3 SAC.learn: {statistics.median(sb3):.1f} env steps/s  {[round(x, 1) for x in sb3]}"
        )
        print(f"ratio sac_tr / sb3: {statistics.median(ours) / statistics.median(sb3):.2f}")


if __name__ == "__main__":
    main()
