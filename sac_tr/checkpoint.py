"""Checkpoints: everything a run needs to continue, written atomically, loaded without unpickling code.

A run keeps its last ``keep`` checkpoints as ``run_dir/checkpoints/step_<frames>.pt`` (and, when
the replay buffer is saved, ``step_<frames>.buffer/`` beside each), so a checkpoint damaged by a
crash still leaves the previous one to resume from.
"""

from __future__ import annotations

import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sac_tr.eval_csv import fsync_path

__all__ = [
    "CheckpointError",
    "buffer_dir",
    "check_buffer_beside",
    "checkpoint_bytes",
    "checkpoint_path",
    "find_checkpoint",
    "get_rng_state",
    "is_abandoned",
    "list_checkpoints",
    "load_checkpoint",
    "rotate_checkpoints",
    "run_dir_of",
    "save_buffer",
    "save_checkpoint",
    "set_aside_newer",
    "set_rng_state",
]

PREFIX, SUFFIX = "step_", ".pt"
# What every sac_tr checkpoint has held (``TrainingRun.save``); newer entries are optional.
REQUIRED_KEYS = ("frames", "updates", "loss", "optimizer", "config")


def checkpoint_path(ckpt_dir: str | os.PathLike, frames: int) -> Path:
    """``ckpt_dir/step_<frames, 10 digits>.pt``: names sort in frame order."""
    return Path(ckpt_dir) / f"{PREFIX}{frames:010d}{SUFFIX}"


def buffer_dir(checkpoint: str | os.PathLike) -> Path:
    """Where the replay buffer saved with ``checkpoint`` lives: ``step_<frames>.buffer/``."""
    return Path(checkpoint).with_suffix(".buffer")


def checkpoint_bytes(checkpoint: str | os.PathLike) -> int:
    """The size on disk of a checkpoint file plus the replay buffer saved beside it."""
    checkpoint = Path(checkpoint)
    buffer = buffer_dir(checkpoint)
    files = (
        [checkpoint, *(p for p in buffer.rglob("*") if p.is_file())]
        if buffer.is_dir()
        else [checkpoint]
    )
    return sum(p.stat().st_size for p in files)


def list_checkpoints(ckpt_dir: str | os.PathLike) -> list[Path]:
    """The checkpoints in ``ckpt_dir``, oldest first."""
    return sorted(Path(ckpt_dir).glob(f"{PREFIX}*{SUFFIX}"))


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


def save_buffer(buffer: Any, path: str | os.PathLike) -> Path:
    """``buffer.dumps`` into a temporary folder, then a rename: a crash mid-write never leaves a
    half-written buffer under the final name."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    buffer.dumps(tmp)
    shutil.rmtree(path, ignore_errors=True)
    os.replace(tmp, path)
    return path


def rotate_checkpoints(ckpt_dir: str | os.PathLike, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` checkpoints (and their buffers). Returns the deleted."""
    old = list_checkpoints(ckpt_dir)[:-keep] if keep > 0 else []
    for path in old:
        path.unlink(missing_ok=True)
        shutil.rmtree(buffer_dir(path), ignore_errors=True)
    return old


def check_buffer_beside(state: dict[str, Any], path: str | os.PathLike) -> None:
    """Refuse to resume a checkpoint saved with its replay buffer when the buffer's folder is not
    beside it (the ``.pt`` file copied on its own): raised before anything is built, rather than
    a missing file from deep inside the buffer's loader once the run is."""
    folder = buffer_dir(path)
    if state.get("has_buffer") and not folder.is_dir():
        raise CheckpointError(
            f"{str(path)!r} was saved with its replay buffer, but the buffer's folder "
            f"{str(folder)!r} is not beside it (the checkpoint file copied without it, or the "
            f"folder deleted). Copy {folder.name}/ from where the checkpoint came from into "
            f"{str(folder.parent)!r}, then launch again; a run can continue only with the "
            "transitions it learned from."
        )


def set_aside_newer(path: str | os.PathLike, curve: str | os.PathLike | None = None) -> list[Path]:
    """Move the checkpoints newer than ``path`` in its folder (and their buffers) into a new
    ``abandoned/<n>/`` beside them (n = 1, 2, ...: one folder per set-aside, so a timeline left
    later never replaces one left earlier): a run resumed from an older checkpoint leaves that
    timeline, and ``resume=auto`` (the newest checkpoint) must not return to it. ``curve``, the
    run's ``eval.csv`` before the resume trims it, is copied there first as ``LEFT_CURVE`` (whole
    or not at all), so a copy of one of them can continue with its curve. Returns where they
    went."""
    path = Path(path)
    newer = [p for p in list_checkpoints(path.parent) if p.name > path.name]
    if not newer:
        return []
    root = path.parent / ABANDONED
    n = 1 + max((int(d.name) for d in root.glob("*") if _NUMBERED.fullmatch(d.name)), default=0)
    aside = root / str(n)
    aside.mkdir(parents=True)
    if curve is not None and Path(curve).is_file():  # before any checkpoint leaves its timeline
        partial = aside / f"{LEFT_CURVE}.tmp"
        shutil.copyfile(curve, partial)
        fsync_path(partial)
        os.replace(partial, aside / LEFT_CURVE)
        fsync_path(aside)
    for old in newer:
        for item in (old, buffer_dir(old)):
            if item.exists():
                os.replace(item, aside / item.name)
    return [aside / old.name for old in newer]


ABANDONED = "abandoned"  # where ``set_aside_newer`` moves a left timeline's checkpoints
# beside them, the eval.csv of the timeline they were on (``set_aside_newer``)
LEFT_CURVE = "timeline_eval.csv"
_NUMBERED = re.compile(r"[0-9]+")  # its folders, one per set-aside


def is_abandoned(checkpoint: str | os.PathLike) -> bool:
    """Whether a checkpoint is one ``set_aside_newer`` moved: ``checkpoints/abandoned/<n>/``
    (or ``checkpoints/abandoned/``, where sac_tr put them before 2026-12-04)."""
    folder = Path(checkpoint).absolute().parent
    if folder.name != ABANDONED and _NUMBERED.fullmatch(folder.name):
        folder = folder.parent
    return folder.name == ABANDONED and folder.parent.name == "checkpoints"


def run_dir_of(checkpoint: str | os.PathLike) -> Path:
    """The run directory a checkpoint belongs to: ``<run>`` for ``<run>/checkpoints/step_X.pt``
    and for one set aside in ``<run>/checkpoints/abandoned/`` (``is_abandoned``)."""
    folder = Path(checkpoint).absolute().parent
    if is_abandoned(checkpoint):
        folder = folder.parent if folder.name != ABANDONED else folder
        return folder.parent.parent
    return folder.parent


def find_checkpoint(path: str | os.PathLike) -> Path:
    """Accept a checkpoint file, a run directory or its ``checkpoints`` folder (then the newest
    ``step_<frames>.pt`` there)."""
    path = Path(path)
    if path.is_dir():
        found = list_checkpoints(path / "checkpoints") or list_checkpoints(path)
        if not found:
            raise CheckpointError(
                f"No checkpoint in {str(path)!r}: expected checkpoints/{PREFIX}<frames>{SUFFIX}; "
                "give a .pt file or a run directory."
            )
        path = found[-1]
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
        try:
            with path.open("rb") as f:
                head = f.read(4)
        except OSError as unreadable:  # e.g. no read permission
            raise CheckpointError(f"Could not read {str(path)!r}: {unreadable}.") from err
        # Not torch.save's zip nor its legacy pickle, and not a file cut or zeroed by a crash or
        # a full disk (those are named as damaged checkpoints, with the one before).
        if head.strip(b"\0") and not head.startswith((b"PK\x03\x04", b"\x80")):
            raise CheckpointError(
                f"{str(path)!r} is not a checkpoint: not a file torch.save wrote (it begins with "
                f"{head!r}). Give a run directory or its checkpoints/{PREFIX}<frames>{SUFFIX}."
            ) from err
        older = [p for p in list_checkpoints(path.parent) if p.name < path.name]
        hint = (
            f"resume from the previous one: {str(older[-1])!r}" if older else "use an earlier one"
        )
        why = _why_unreadable(err) if head.strip(b"\0") else "it is empty or begins with zero bytes"
        raise CheckpointError(
            f"Could not read checkpoint {str(path)!r} ({why}). "
            f"It may be truncated or not a sac_tr checkpoint; {hint}."
        ) from err
    if not isinstance(state, dict):
        raise CheckpointError(f"{str(path)!r} is not a sac_tr checkpoint (not a dict).")
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise CheckpointError(
            f"{str(path)!r} is not a sac_tr checkpoint (no {', '.join(map(repr, missing))} entry)."
        )
    return state


def _why_unreadable(err: Exception) -> str:
    """``torch.load``'s error in one line. A file holding pickled objects (a whole model saved
    with ``torch.save(model)``, or worse) is named by the first object torch refused, without
    torch's advice to load it with ``weights_only=False``: sac_tr never runs a file's pickled
    code."""
    text = str(err)
    found = re.search(r"GLOBAL (\S+)", text)
    if found:
        return f"it holds a pickled {found.group(1)}; a sac_tr checkpoint holds tensors only"
    if "weights_only" in text or "Weights only" in text:
        found = re.search(r"WeightsUnpickler error: ([^\n]*)", text)
        detail = f": {found.group(1)[:200]}" if found else ""
        return (
            f"it holds objects that are not tensors{detail}; a sac_tr checkpoint holds tensors only"
        )
    first = (text.strip().splitlines() or [""])[0]
    return f"{type(err).__name__}: {first[:200]}"


def get_rng_state() -> dict[str, Any]:
    """The torch (CPU and, once this process has used CUDA, every CUDA device's), numpy and
    Python random generators' states, as checkpointable tensors and lists.

    On a GPU the policy's noise, the loss's samples and the replay buffer's indices come from
    the CUDA generators, so an exact resume needs their states too."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]),
        "python": list(random.getstate()[1]),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what ``get_rng_state`` saved. A checkpoint written without CUDA states (on a CPU,
    or by an older sac_tr) leaves the CUDA generators as they are; CUDA states are restored for
    the devices both the checkpoint and this machine have."""
    torch.set_rng_state(state["torch"])
    keys = state["numpy_keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, state["numpy_pos"], 0, 0.0))
    random.setstate((3, tuple(state["python"]), None))
    cuda_states = state.get("cuda") or []
    if cuda_states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda_states[: torch.cuda.device_count()])
