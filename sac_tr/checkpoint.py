"""Checkpoints: everything a run needs to continue, written atomically, loaded without unpickling code."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "CheckpointError",
    "find_checkpoint",
    "get_rng_state",
    "load_checkpoint",
    "save_checkpoint",
    "set_rng_state",
]

LATEST = "latest.pt"


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, truncated or not one of ours; the message names the file."""


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write ``state`` to ``path`` atomically: a temporary file in the same folder, then a rename,
    so a crash mid-write leaves the previous checkpoint intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def find_checkpoint(path: str | os.PathLike) -> Path:
    """Accept a checkpoint file or a run directory (then ``run_dir/checkpoints/latest.pt``)."""
    path = Path(path)
    if path.is_dir():
        candidate = path / "checkpoints" / LATEST
        if not candidate.exists():
            candidate = path / LATEST
        path = candidate
    if not path.is_file():
        raise CheckpointError(
            f"No checkpoint at {str(path)!r}: give a .pt file or a run directory."
        )
    return path


def load_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> dict[str, Any]:
    """Load a checkpoint with ``torch.load(weights_only=True)``: tensors and plain containers
    only, never arbitrary pickled code."""
    path = find_checkpoint(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # truncated zip, wrong format, disallowed globals
        raise CheckpointError(
            f"Could not read checkpoint {str(path)!r} ({type(err).__name__}: {err}). "
            "It may be truncated or not a sac_tr checkpoint; use an earlier one."
        ) from err
    if not isinstance(state, dict) or "frames" not in state:
        raise CheckpointError(f"{str(path)!r} is not a sac_tr checkpoint (no 'frames' entry).")
    return state


def get_rng_state() -> dict[str, Any]:
    """The torch, numpy and Python random generators' states, as checkpointable tensors and lists."""
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]),
        "python": list(random.getstate()[1]),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what ``get_rng_state`` saved."""
    torch.set_rng_state(state["torch"])
    keys = state["numpy_keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, state["numpy_pos"], 0, 0.0))
    random.setstate((3, tuple(state["python"]), None))
