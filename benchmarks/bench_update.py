"""Gradient updates per second: sac_tr against TorchRL's SACLoss and Stable-Baselines3, one process.

    python benchmarks/bench_update.py                    # 2 threads, batch 256, 2 x 256, 17 -> 6
    python benchmarks/bench_update.py --threads 1 --batch-size 512 --hidden 400 300

sac_tr runs its losses as the recipe does (``accelerate=auto``: the fast evaluators proven equal to
the networks), and also on the reference path (``accelerate=off``: every network through its own
module) and with networks hand-built from TorchRL's blocks (``MLP`` in a ``ValueOperator``, a
``ProbabilisticActor`` with ``NormalParamExtractor`` and ``TanhNormal``), so that the worth of the
acceleration layer is measured.

Each contender performs the full update: loss, backward, optimizer step(s), target update, on the
same random batches with the same network sizes. Repetitions are interleaved (A B C D E A B ...)
so that machine noise hits everyone alike; warm-up is excluded. Prints the median and spread of
updates/s, the ratios ours/theirs on the last lines, and the share of the matmul ceiling reached
(FLOPs of one update counted from the layer sizes, peak measured here with torch.mm).
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from collections.abc import Callable

import torch
from tensordict import TensorDict
from tensordict.nn import NormalParamExtractor
from torch import nn
from torchrl.data import Bounded
from torchrl.modules import MLP, ValueOperator
from torchrl.objectives import SACLoss, SoftUpdate

from sac_tr import SACv1Loss, make_actor, make_qvalue, make_value
from sac_tr.accel import accelerate
from sac_tr.agent import update
from sac_tr.losses import SACv2Loss
from sac_tr.modules import tanh_normal_actor
from sac_tr.targets import make_target_updater


def random_batches(
    n: int, batch: int, obs_dim: int, act_dim: int, seed: int = 0
) -> list[TensorDict]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        done = torch.rand(batch, 1, generator=g) < 0.01
        out.append(
            TensorDict(
                observation=torch.randn(batch, obs_dim, generator=g),
                action=torch.rand(batch, act_dim, generator=g) * 2 - 1,
                next=TensorDict(
                    observation=torch.randn(batch, obs_dim, generator=g),
                    reward=torch.randn(batch, 1, generator=g),
                    done=done,
                    terminated=done,
                    truncated=torch.zeros_like(done),
                    batch_size=[batch],
                ),
                batch_size=[batch],
            )
        )
    return out


def tensordict_update(loss, updater, forward=None) -> Callable[[TensorDict], None]:
    """loss + backward + Adam + target update; sac_tr's losses use fused Adam as its recipe does."""
    fused = isinstance(loss, (SACv1Loss, SACv2Loss))
    kind = {"fused": True} if fused else {"foreach": True}
    optimizer = torch.optim.Adam(loss.parameters(), lr=3e-4, **kind)
    forward = loss if forward is None else forward

    def step(batch: TensorDict) -> None:
        out = forward(batch)
        total = sum(v for k, v in out.items() if k.startswith("loss_"))
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        updater.step()

    return step


def make_contenders(args, obs_dim: int, act_dim: int) -> dict[str, Callable[[TensorDict], None]]:
    spec = Bounded(-torch.ones(act_dim), torch.ones(act_dim), shape=(act_dim,))
    hidden = tuple(args.hidden)

    def nets(value: bool):
        torch.manual_seed(0)
        actor = make_actor(spec, obs_dim, hidden_sizes=hidden)
        q = make_qvalue(obs_dim, act_dim, hidden_sizes=hidden)
        return (actor, q, make_value(obs_dim, hidden_sizes=hidden)) if value else (actor, q)

    def hand_built(value: bool):
        """The same networks assembled from TorchRL's blocks, as its tutorials do (ReLU, as
        ``make_actor`` and the other contenders: TorchRL's MLP defaults to Tanh)."""
        torch.manual_seed(0)
        cells = {"num_cells": list(hidden), "activation_class": nn.ReLU}
        trunk = MLP(in_features=obs_dim, out_features=2 * act_dim, **cells)
        actor = tanh_normal_actor(nn.Sequential(trunk, NormalParamExtractor()), spec)
        q = ValueOperator(
            MLP(in_features=obs_dim + act_dim, out_features=1, **cells),
            in_keys=["observation", "action"],
        )
        v = ValueOperator(MLP(in_features=obs_dim, out_features=1, **cells))
        return (actor, q, v) if value else (actor, q)

    def our_loss(value: bool, networks=nets, mode: str = "auto") -> SACv1Loss | SACv2Loss:
        loss = (
            SACv1Loss(*networks(True), reward_scale=5.0) if value else SACv2Loss(*networks(False))
        )
        paths = accelerate(loss, mode)
        if mode == "auto" and set(paths.values()) != {"accelerated"}:
            print(f"(note: not every network is accelerated: {paths})")
        return loss

    def ours(value: bool, networks=nets, mode: str = "auto") -> Callable[[TensorDict], None]:
        loss = our_loss(value, networks, mode)
        return tensordict_update(loss, make_target_updater(loss, tau=0.005))

    theirs_v1 = SACLoss(*nets(True), num_qvalue_nets=2)
    theirs_v2 = SACLoss(*nets(False), num_qvalue_nets=2)
    contenders = {
        "sac_tr v1": ours(True),
        "sac_tr v1 reference": ours(True, mode="off"),
        "sac_tr v1 hand-built": ours(True, hand_built),
        "torchrl SACLoss v1": tensordict_update(theirs_v1, SoftUpdate(theirs_v1, tau=0.005)),
        "sac_tr v2": ours(False),
        "sac_tr v2 reference": ours(False, mode="off"),
        "sac_tr v2 hand-built": ours(False, hand_built),
        "torchrl SACLoss v2": tensordict_update(theirs_v2, SoftUpdate(theirs_v2, tau=0.005)),
    }
    if args.compile:
        contenders.update(recipe_updates(args, obs_dim, act_dim))
    sb3 = make_sb3(args, obs_dim, act_dim)
    if sb3 is not None:
        contenders["sb3 SAC.train"] = sb3
    return contenders


def recipe_step(agent) -> Callable[[TensorDict], None]:
    """``sac_tr.agent.update`` as the training loop calls it: with deferred fault checks (compile),
    the inputs are checked in full on the first batch only (``TrainingRun.learn``)."""

    def step(batch: TensorDict) -> None:
        update(agent, batch)
        if agent.defer_fault_checks and agent.check_inputs:
            agent.skip_input_checks()

    return step


def recipe_updates(args, obs_dim: int, act_dim: int) -> dict[str, Callable[[TensorDict], None]]:
    """The recipe's own update (``sac_tr.agent.update`` on ``make_agent``'s agent, HalfCheetah-v5),
    eager and with ``compile=true`` (loss, backward, fused Adam and the target update compiled as
    one function), for v1 and v2."""
    if (obs_dim, act_dim) != (17, 6):
        print(
            "(--compile times the recipe's HalfCheetah-v5 agent: run it with --obs-dim 17 --act-dim 6)"
        )
        return {}
    from recipe_config import recipe_config  # benchmarks/, this script's folder

    from sac_tr.agent import make_agent
    from sac_tr.envs import make_env

    out = {}
    for loss in ("sac_v1", "sac_v2"):
        for compiled in (False, True):
            overrides = [
                "env=halfcheetah",
                f"loss={loss}",
                f"compile={str(compiled).lower()}",
                f"batch_size={args.batch_size}",
                f"network.hidden_sizes=[{','.join(map(str, args.hidden))}]",
            ]
            cfg = recipe_config(overrides)
            torch.manual_seed(0)
            agent = make_agent(make_env(cfg.env.id, seed=0), cfg, "cpu")
            name = f"sac_tr {loss[-2:]} recipe{' compiled' if compiled else ''}"
            out[name] = recipe_step(agent)
    torch.set_num_threads(args.threads)
    return out


def make_sb3(args, obs_dim: int, act_dim: int) -> Callable[[TensorDict], None] | None:
    """SB3's own SAC.train(gradient_steps=1) on a replay buffer filled with random transitions."""
    try:
        import gymnasium as gym
        import numpy as np
        from stable_baselines3 import SAC
    except ImportError:
        print("(stable-baselines3 not installed: pip install -e '.[bench]' to compare with it)")
        return None

    class Dummy(gym.Env):
        observation_space = gym.spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32)
        action_space = gym.spaces.Box(-1.0, 1.0, (act_dim,), np.float32)

    model = SAC(
        "MlpPolicy",
        Dummy(),
        batch_size=args.batch_size,
        buffer_size=20_000,
        device="cpu",
        policy_kwargs={"net_arch": list(args.hidden)},
        seed=0,
    )
    rng = np.random.default_rng(0)
    for _ in range(5_000):
        model.replay_buffer.add(
            rng.standard_normal((1, obs_dim)),
            rng.standard_normal((1, obs_dim)),
            rng.uniform(-1, 1, (1, act_dim)),
            rng.standard_normal(1),
            np.zeros(1),
            [{}],
        )
    from stable_baselines3.common.logger import configure

    model.set_logger(configure(None, []))  # train() records its losses into a logger
    torch.set_num_threads(args.threads)  # SB3 resets threads when it builds its model

    def step(_batch: TensorDict) -> None:
        model.train(gradient_steps=1, batch_size=args.batch_size)

    return step


def update_flops(
    batch: int, obs_dim: int, act_dim: int, hidden: tuple[int, ...], v1: bool
) -> float:
    """Multiply-adds x 2 of one update, counted per linear layer.

    Forward: actor on s; Q_1,2 on (s, a~); Q_1,2 on (s, a). v1: V on s, V_target on s'.
    v2: actor on s', target Q_1,2 on (s', a'). Backward costs 2x the forward of a layer whose
    weights get a gradient (input and weight gradients), 1x where only the input gradient flows
    (Q on (s, a~), detached weights, gradient to a~), 0x without gradient (targets)."""

    def mlp(inp: int, out: int) -> float:
        sizes = [inp, *hidden, out]
        return sum(2.0 * batch * a * b for a, b in itertools.pairwise(sizes))

    actor, q, v = mlp(obs_dim, 2 * act_dim), mlp(obs_dim + act_dim, 1), mlp(obs_dim, 1)
    total = actor * 3 + 2 * q * 2 + 2 * q * 3  # actor f+b, Q(s,a~) f+input-grad, Q(s,a) f+b
    total += (
        (v * 3 + v) if v1 else (actor + 2 * q)
    )  # V f+b and V_target f; or actor(s') + Qbar(s',a')
    return total


def measure_peak(threads: int, n: int) -> float:
    """GFLOP/s of a [batch, n] x [n, n] matmul, the shape of the hidden layers."""
    a, b = torch.randn(256, n), torch.randn(n, n)
    for _ in range(20):
        a @ b
    reps, start = 400, time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2.0 * 256 * n * n * reps / (time.perf_counter() - start) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--hidden", type=int, nargs="+", default=[256, 256])
    parser.add_argument("--obs-dim", type=int, default=17)
    parser.add_argument("--act-dim", type=int, default=6)
    parser.add_argument("--reps", type=int, default=7, help="interleaved repetitions")
    parser.add_argument("--updates", type=int, default=100, help="updates per repetition")
    parser.add_argument(
        "--compile",
        action="store_true",
        help="also time the recipe's update, eager and compile=true (the whole update compiled)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    contenders = make_contenders(args, args.obs_dim, args.act_dim)
    batches = random_batches(args.updates, args.batch_size, args.obs_dim, args.act_dim)
    for step in contenders.values():  # warm-up, excluded
        for batch in batches[:20]:
            step(batch)
    rates: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(args.reps):
        for name, step in contenders.items():
            start = time.perf_counter()
            for batch in batches:
                step(batch)
            rates[name].append(args.updates / (time.perf_counter() - start))
    print(
        f"threads={torch.get_num_threads()} batch={args.batch_size} hidden={args.hidden} "
        f"obs={args.obs_dim} act={args.act_dim} reps={args.reps} x {args.updates} updates"
    )
    for name, values in rates.items():
        q = statistics.quantiles(values, n=4)
        print(f"{name:<26} {statistics.median(values):7.1f} updates/s  (IQR {q[0]:.1f}-{q[2]:.1f})")
    peak = measure_peak(args.threads, args.hidden[0])
    med = {name: statistics.median(v) for name, v in rates.items()}
    for name, v1 in [(n, "v1" in n) for n in med if n.startswith("sac_tr")]:
        gflop = (
            update_flops(args.batch_size, args.obs_dim, args.act_dim, tuple(args.hidden), v1) / 1e9
        )
        ceiling = peak / gflop
        print(
            f"{name}: {gflop:.3f} GFLOP/update; matmul peak {peak:.0f} GFLOP/s -> ceiling "
            f"{ceiling:.0f} updates/s; reached {100 * med[name] / ceiling:.0f}%"
        )
    for ours in [n for n in med if n.startswith("sac_tr")]:
        version = "v1" if "v1" in ours else "v2"
        print(
            f"ratio {ours} / torchrl SACLoss {version}: {med[ours] / med['torchrl SACLoss ' + version]:.2f}"
        )
        if version == "v2" and "sb3 SAC.train" in med:
            print(f"ratio {ours} / sb3 SAC.train: {med[ours] / med['sb3 SAC.train']:.2f}")


if __name__ == "__main__":
    main()
