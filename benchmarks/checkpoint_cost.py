"""What a checkpoint costs per task: its size with the replay buffer, and the time to write it.

    python benchmarks/checkpoint_cost.py                      # the suite's four tasks
    python benchmarks/checkpoint_cost.py --envs hopper ant --frames 2000

Builds the recipe's run (``sac_tr.train.TrainingRun``, default config: a 1M-transition buffer),
collects ``--frames`` random transitions into it, and times ``TrainingRun.save()`` (networks,
optimizer, RNG and environment state, and the buffer) twice. The buffer's storage is allocated
for its whole capacity at the first write, so the size does not grow with the frames collected.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import tempfile
import time
from pathlib import Path

import torch
from recipe_config import recipe_config  # benchmarks/, on the path as this script's folder

from sac_tr.checkpoint import checkpoint_bytes
from sac_tr.train import TrainingRun


def measure(env: str, frames: int) -> tuple[float, list[float]]:
    """(megabytes, [seconds per save]) for one task."""
    overrides = [f"env={env}", "logger=none", "progress=false", "threads=1"]
    overrides += [f"env.init_random_frames={frames}", f"total_frames={frames}"]
    cfg = recipe_config(overrides)
    with tempfile.TemporaryDirectory() as tmp:
        run = TrainingRun(cfg, Path(tmp))
        for batch in run.collector:
            run.store(batch)
        seconds = []
        for _ in range(2):
            start = time.perf_counter()
            path = run.save()
            seconds.append(time.perf_counter() - start)
        size = checkpoint_bytes(path) / 2**20
        run.finish()
    return size, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--envs", nargs="+", default=["halfcheetah", "hopper", "walker2d", "ant"])
    parser.add_argument("--frames", type=int, default=1000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"{platform.processor() or platform.machine()}, {datetime.date.today()}")
    print("| task | checkpoint with buffer (MB) | time to write (s), two saves |")
    print("| --- | --- | --- |")
    for env in args.envs:
        size, seconds = measure(env, args.frames)
        print(f"| {env} | {size:.0f} | {' / '.join(f'{s:.2f}' for s in seconds)} |")


if __name__ == "__main__":
    main()
