"""Small networks, batches and a hand-written MLP used to check the library independently."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from tensordict import TensorDict, TensorDictBase
from torchrl.data import Bounded

from sac_tr import SACv1Loss, make_actor, make_qvalue, make_value
from sac_tr.losses import SACv2Loss

ROOT = Path(__file__).resolve().parents[1]


def run_script(
    script: str, *args: str, timeout: float = 120, **kwargs
) -> subprocess.CompletedProcess:
    """Run the repository's ``script`` (e.g. ``"recipes/evaluate.py"``) with ``args`` in a new
    Python process, as a user would from the shell; its output is captured as text.
    ``kwargs`` go to ``subprocess.run`` (``cwd``, ``env``)."""
    return subprocess.run(
        [sys.executable, str(ROOT / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        **kwargs,
    )


def start_recipe(run_dir: Path, *args: str, cwd: Path, **kwargs) -> subprocess.Popen:
    """Start ``recipes/sac_mujoco.py`` with ``args`` in ``run_dir`` (``hydra.run.dir``), its
    output piped to the test (``kwargs`` go to ``subprocess.Popen``: ``text``, ``stderr``), which
    must wait for it (or kill it)."""
    script = str(ROOT / "recipes" / "sac_mujoco.py")
    return subprocess.Popen(
        [sys.executable, script, *args, f"hydra.run.dir={run_dir}"],
        **{"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "cwd": cwd, **kwargs},
    )


# Tests that build an agent, train, evaluate, checkpoint or resume run on each of these devices;
# the CUDA cases are skipped (with this reason) on a machine without a GPU.
NO_CUDA = "needs a CUDA GPU: torch.cuda.is_available() is False on this machine"
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA)
DEVICES = [pytest.param("cpu", id="cpu"), pytest.param("cuda", id="cuda", marks=needs_cuda)]

OBS_DIM = 3
ACT_DIM = 2
HIDDEN = (8, 8)
LOW, HIGH = -2.0, 3.0  # deliberately asymmetric bounds, so the affine rescaling is exercised


def action_spec(low: float = LOW, high: float = HIGH, dim: int = ACT_DIM) -> Bounded:
    return Bounded(low * torch.ones(dim), high * torch.ones(dim), shape=(dim,))


def make_loss(
    alpha: float = 1.0,
    reward_scale: float = 1.0,
    gamma: float = 0.99,
    seed: int = 0,
    hidden_sizes: tuple[int, ...] = HIDDEN,
    **kwargs,
) -> SACv1Loss:
    torch.manual_seed(seed)
    actor = make_actor(action_spec(), OBS_DIM, hidden_sizes=hidden_sizes)
    qvalue = make_qvalue(OBS_DIM, ACT_DIM, hidden_sizes=hidden_sizes)
    value = make_value(OBS_DIM, hidden_sizes=hidden_sizes)
    loss = SACv1Loss(actor, qvalue, value, alpha=alpha, reward_scale=reward_scale, **kwargs)
    loss.make_value_estimator(gamma=gamma)
    return loss


def make_loss_v2(
    alpha_init: float = 1.0,
    gamma: float = 0.99,
    seed: int = 0,
    hidden_sizes: tuple[int, ...] = HIDDEN,
    **kwargs,
) -> SACv2Loss:
    torch.manual_seed(seed)
    actor = make_actor(action_spec(), OBS_DIM, hidden_sizes=hidden_sizes)
    qvalue = make_qvalue(OBS_DIM, ACT_DIM, hidden_sizes=hidden_sizes)
    loss = SACv2Loss(actor, qvalue, alpha_init=alpha_init, **kwargs)
    loss.make_value_estimator(gamma=gamma)
    return loss


def make_batch(
    batch: int = 6,
    seed: int = 1,
    terminated: torch.Tensor | None = None,
    truncated: torch.Tensor | None = None,
) -> TensorDict:
    g = torch.Generator().manual_seed(seed)
    if terminated is None:
        terminated = torch.zeros(batch, 1, dtype=torch.bool)
    if truncated is None:
        truncated = torch.zeros(batch, 1, dtype=torch.bool)
    return TensorDict(
        observation=torch.randn(batch, OBS_DIM, generator=g),
        action=LOW + (HIGH - LOW) * torch.rand(batch, ACT_DIM, generator=g),
        next=TensorDict(
            observation=torch.randn(batch, OBS_DIM, generator=g),
            reward=torch.randn(batch, 1, generator=g),
            terminated=terminated,
            truncated=truncated,
            done=terminated | truncated,
            batch_size=[batch],
        ),
        batch_size=[batch],
    )


def mlp(params: TensorDictBase, x: torch.Tensor) -> torch.Tensor:
    """Evaluate a TorchRL MLP by hand from its parameters: linear, ReLU, ..., linear (float64)."""
    layers = sorted(params.keys(), key=int)
    h = x.double()
    for i, name in enumerate(layers):
        h = F.linear(h, params[name]["weight"].double(), params[name]["bias"].double())
        if i < len(layers) - 1:
            h = torch.relu(h)
    return h


def actor_mlp_params(loss: SACv1Loss) -> TensorDictBase:
    # ProbabilisticActor -> TensorDictModule -> Sequential(MLP, head) -> MLP layers
    return loss.actor_network_params["module", "0", "module", "0"]


def value_mlp_params(params: TensorDictBase) -> TensorDictBase:
    return params["module"]


def squashed_gaussian_by_hand(loc, log_std, eps, low=LOW, high=HIGH):
    """The action and its log-density by the change-of-variables formula, written out (eq. 21)."""
    log_std = log_std.clamp(-20.0, 2.0)
    std = log_std.exp()
    u = loc + std * eps
    half_range = (high - low) / 2
    action = low + half_range * (torch.tanh(u) + 1)
    log_normal = (-0.5 * eps**2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
    log_det_tanh = torch.log1p(-(torch.tanh(u) ** 2)).sum(-1)
    log_det_affine = loc.shape[-1] * math.log(half_range)
    return action, log_normal - log_det_tanh - log_det_affine
