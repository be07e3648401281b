"""How small a trained policy's sigma gets: log sigma of the actor over every state in a run's
replay buffer, at its newest checkpoint (saved with its buffer).

    python benchmarks/policy_log_std.py ~/sac_tr_suite/hopper_sac_v1_seed0 [more run dirs]

Prints, per run, the smallest log sigma, its 0.01% / 1% / 50% quantiles and the largest |mu|: how
far the policy stays from the regime where TanhNormal's log-density loses digits
(docs/custom_parts.md, "The acceleration layer").
"""

from __future__ import annotations

import argparse

import torch
from omegaconf import OmegaConf
from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer

from sac_tr.agent import make_agent
from sac_tr.checkpoint import buffer_dir, find_checkpoint, load_checkpoint
from sac_tr.envs import make_env


def log_std_summary(run_dir: str) -> str:
    """One line on the newest checkpoint of ``run_dir``: its actor's log sigma over its buffer."""
    path = find_checkpoint(run_dir)
    state = load_checkpoint(path)
    if not state.get("has_buffer"):
        return f"{run_dir}: {path.name} was saved without its buffer; nothing to measure"
    cfg = OmegaConf.create(state["config"])
    agent = make_agent(make_env(cfg.env.id), cfg, torch.device("cpu"))
    agent.loss.load_state_dict(state["loss"])
    buffer = TensorDictReplayBuffer(storage=LazyTensorStorage(1_000_000))
    buffer.loads(buffer_dir(path))
    states = buffer[: len(buffer)].select("observation")
    actor, params = agent.loss.actor_network, agent.loss.actor_network_params
    with torch.no_grad(), params.to_module(actor):
        out = actor.module[0](states)  # the network and its head: loc, scale
    log_std = out["scale"].log().flatten()
    quantiles = torch.quantile(
        log_std[:: max(1, log_std.numel() // 1_000_000)], torch.tensor([1e-4, 1e-2, 0.5])
    )
    return (
        f"{run_dir} @ {state['frames']:,} frames: {len(buffer):,} states, log sigma min "
        f"{float(log_std.min()):.2f}, quantiles 0.01% / 1% / 50% "
        f"{' / '.join(f'{float(q):.2f}' for q in quantiles)}, max |mu| "
        f"{float(out['loc'].abs().max()):.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run directories (each with checkpoints/)")
    torch.set_num_threads(1)
    for run in parser.parse_args().runs:
        print(log_std_summary(run))


if __name__ == "__main__":
    main()
