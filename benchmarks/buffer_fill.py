"""Does the loop slow down as the replay buffer fills? Sampling and update time at each fill level.

    python benchmarks/buffer_fill.py                                  # HalfCheetah and Ant
    python benchmarks/buffer_fill.py --envs hopper --fills 10000 300000

Builds the recipe's run (``sac_tr.train.TrainingRun``, default config: a 1M-transition buffer in
memory, batch 256), collects 1,000 random transitions, then grows the buffer to each of ``--fills``
transitions (copies of those, written as the collector writes: ``extend``) and times, at each
level, ``--steps`` iterations of what the training loop does per frame once learning has started:
add one transition, sample a batch, make one update (``sac_tr.agent.update``). Medians over
``--repeats``, interleaved with nothing else; one torch thread. A flat column means the buffer's
size does not slow the loop: the random gather of a batch is the only part that touches it.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
from recipe_config import recipe_config  # benchmarks/, on the path as this script's folder

from sac_tr.agent import update
from sac_tr.train import TrainingRun

SEED_FRAMES = 1_000


def _time(fn, steps: int, repeats: int) -> float:
    """Median seconds per call of ``fn`` over ``repeats`` blocks of ``steps`` calls."""
    blocks = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            fn()
        blocks.append((time.perf_counter() - start) / steps)
    return statistics.median(blocks)


def measure(env: str, fills: list[int], steps: int, repeats: int) -> list[tuple[int, float, float]]:
    """(fill, seconds per sample, seconds per add+sample+update) at each fill level."""
    overrides = [f"env={env}", "logger=none", "progress=false", "threads=1"]
    overrides += ["checkpoint.save_buffer=false"]  # finish() checkpoints: not the 1M buffer
    overrides += [f"env.init_random_frames={SEED_FRAMES}", f"total_frames={SEED_FRAMES}"]
    cfg = recipe_config(overrides)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        run = TrainingRun(cfg, Path(tmp))
        for batch in run.collector:
            run.store(batch)
        buffer, agent = run.buffer, run.agent
        seed = buffer[:SEED_FRAMES].clone()
        one = seed[:1].clone()
        for fill in sorted(fills):
            while len(buffer) < fill:
                buffer.extend(seed[: min(SEED_FRAMES, fill - len(buffer))])

            def loop_step() -> None:
                buffer.extend(one)  # one new transition per frame (the fill grows by a few hundred)
                update(agent, buffer.sample())

            sample = _time(buffer.sample, steps, repeats)
            step = _time(loop_step, steps, repeats)
            results.append((len(buffer), sample, step))
        run.finish()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--envs", nargs="+", default=["halfcheetah", "ant"])
    parser.add_argument(
        "--fills", type=int, nargs="+", default=[10_000, 100_000, 300_000, 1_000_000]
    )
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{datetime.date.today()}, one thread, batch 256"
    )
    print("| task | transitions in the buffer | sample (ms) | add + sample + update (ms) |")
    print("| --- | --- | --- | --- |")
    for env in args.envs:
        for fill, sample, step in measure(env, args.fills, args.steps, args.repeats):
            print(f"| {env} | {fill:,} | {sample * 1e3:.3f} | {step * 1e3:.2f} |", flush=True)


if __name__ == "__main__":
    main()
