"""Run directories across restarts: which checkpoint a run continues from (``resume=auto`` or a
path), whether the saved configuration still matches, and tidying what a restart leaves behind."""

from __future__ import annotations

import os
import shlex
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NoReturn

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from sac_tr.checkpoint import (
    ABANDONED,
    LEFT_CURVE,
    PREFIX,
    SUFFIX,
    CheckpointError,
    buffer_dir,
    find_checkpoint,
    is_abandoned,
    list_checkpoints,
    load_checkpoint,
    run_dir_of,
)
from sac_tr.run_lock import LOCK_NAME

__all__ = [
    "RESUMABLE_KEYS",
    "added_keys",
    "checkpoint_frames",
    "config_differences",
    "continuing_overrides",
    "hydra_wrote_record",
    "read_hydra_files",
    "refuse_abandoned",
    "refuse_loose",
    "remove_if_unused",
    "resolve_resume",
    "restore_hydra_files",
    "write_hydra_files",
]

# The keys a resumed run may change: the frame budget, ``resume`` itself, how the process runs
# (torch threads, the progress bar), which never changes what is learned, and ``nan_guard``, which
# changes nothing while every value is finite: a run stopped on a NaN/inf (its checkpoint is the
# last good state) continues with it on.
RESUMABLE_KEYS = ("total_frames", "resume", "threads", "progress", "nan_guard")

# What hydra writes into ``<run dir>/.hydra/`` when a job starts, before the task runs.
HYDRA_FILES = ("config.yaml", "hydra.yaml", "overrides.yaml")


def resolve_resume(resume: str | None, run_dir: str | os.PathLike) -> Path | None:
    """The checkpoint a run continues from, or ``None`` for a fresh start.

    ``resume=auto``: the newest ``checkpoints/step_<frames>.pt`` in ``run_dir`` when there is one,
    else ``None`` (start fresh), so the same command starts a run and continues it after any stop.
    Any other value is a checkpoint file or a run directory (``find_checkpoint`` explains a miss).
    """
    if not resume:
        return None
    if str(resume) == "auto":
        found = list_checkpoints(Path(run_dir) / "checkpoints")
        return found[-1] if found else None
    path = find_checkpoint(resume)
    if is_abandoned(path):
        refuse_abandoned(path)
    if path.absolute().parent.name != "checkpoints":
        refuse_loose(path)
    return path


def _files_to_copy(path: Path, abandoned: bool = False) -> tuple[list[Path], str]:
    """The files that continue ``path`` elsewhere (the checkpoint, and its buffer's folder when
    it is beside it), and a line for a checkpoint saved with its buffer whose folder is not: a
    copy without it would be refused next (``check_buffer_beside``)."""
    folder = buffer_dir(path)
    if folder.is_dir():
        return [path, folder], ""
    try:
        has_buffer = bool(load_checkpoint(path).get("has_buffer"))
    except CheckpointError:  # damaged: named when it is resumed
        has_buffer = False
    if not has_buffer:
        missing = ""
    elif abandoned:  # set aside with it, and removed since: nothing to copy it from
        missing = (
            f"Its replay buffer's folder {folder.name}/, set aside with it, is gone: without it the "
            "copy will be refused (a run continues only with the transitions it learned from); "
            "the checkpoint can still be evaluated.\n"
        )
    else:
        missing = (
            f"Its replay buffer's folder {folder.name}/ is not beside it: copy that too, from "
            "where the checkpoint came from (a run continues only with the transitions it "
            "learned from).\n"
        )
    return [path], missing


def refuse_loose(path: Path) -> NoReturn:
    """Refuse to continue a checkpoint that is not in a run's ``checkpoints/`` folder (a file
    copied or downloaded on its own): a run continues in the directory its checkpoints are in,
    and this one's would be its folder's parent, which holds no run of it."""
    folder = path.absolute().parent
    home = folder / f"run_{path.stem}"
    files, missing = _files_to_copy(path)
    target = shlex.quote(str(home / "checkpoints"))
    raise CheckpointError(
        f"{str(path)!r} is not in a run's checkpoints/ folder, so it has no run directory to "
        f"continue in (the run would write its eval.csv and checkpoints into {str(folder.parent)!r}"
        "). Put it in one of its own (its curve starting at "
        f"{checkpoint_frames(path):,} frames):\n"
        f"    mkdir -p {target}\n"
        f"    cp -r {' '.join(shlex.quote(str(f)) for f in files)} {target}/\n"
        f"{missing}"
        f"then launch the run's command with resume={shlex.quote(str(home))}."
    )


def refuse_abandoned(path: Path) -> NoReturn:
    """Refuse to continue a checkpoint that ``set_aside_newer`` moved into ``abandoned/``: the
    run left that timeline, and the evaluations it made after the resume point were trimmed from
    the run's ``eval.csv``, so continuing it in its run would splice two timelines' curves (or
    leave a gap). It can continue in a directory of its own, with the curve of the timeline it
    was on (``LEFT_CURVE``, kept beside it since 2026-12-04) or, without one, from its frames."""
    run = run_dir_of(path)
    aside = path.parent.name  # abandoned/<n>/: a copy named for each set-aside
    copy = run.parent / (
        f"{run.name}_{path.stem}"
        if aside == ABANDONED
        else f"{run.name}_abandoned{aside}_{path.stem}"
    )
    files, missing = _files_to_copy(path, abandoned=True)
    target = shlex.quote(str(copy / "checkpoints"))
    curve = path.parent / LEFT_CURVE  # kept since 2026-12-04: the copy's curve starts at frame 0
    copy_curve = (
        f"    cp {shlex.quote(str(curve))} {shlex.quote(str(copy / 'eval.csv'))}\n"
        if curve.is_file()
        else ""
    )
    start = (
        "at frame 0, with the evaluations of the timeline it was on"
        if copy_curve
        else f"at {checkpoint_frames(path):,} frames"
    )
    raise CheckpointError(
        f"{str(path)!r} was set aside in checkpoints/{ABANDONED}/ when {str(run)!r} was resumed "
        "from an earlier checkpoint: that run has left its timeline, and the evaluations made "
        f"along it are not in {'its eval.csv' if (run / 'eval.csv').is_file() else 'its curve'}"
        ", so it cannot continue there.\n"
        f"To continue it in a directory of its own (its curve starting {start}), copy it "
        "there:\n"
        f"    mkdir -p {target}\n"
        f"    cp -r {' '.join(shlex.quote(str(f)) for f in files)} {target}/\n"
        f"{copy_curve}"
        f"{missing}"
        f"then launch the run's command with resume={shlex.quote(str(copy))} (keep the two apart "
        "when you plot: recipes/plot.py takes them for the same run, twice, and refuses them).\n"
        f"To evaluate it: python recipes/evaluate.py checkpoint={shlex.quote(str(path))}"
    )


def checkpoint_frames(path: str | os.PathLike) -> int:
    """The frame count a checkpoint was written at, read from its name ``step_<frames>.pt``."""
    name = Path(path).name
    if not (name.startswith(PREFIX) and name.endswith(SUFFIX)):
        raise ValueError(f"{name!r} is not named {PREFIX}<frames>{SUFFIX}.")
    return int(name[len(PREFIX) : -len(SUFFIX)])


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, Mapping):
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out or {prefix[:-1]: {}}
    return {prefix[:-1]: node}


def config_differences(
    saved_yaml: str, cfg: DictConfig, ignore: tuple[str, ...] = RESUMABLE_KEYS
) -> list[str]:
    """The dotted keys whose values differ between a checkpoint's saved configuration and ``cfg``
    (a key the saved one has and ``cfg`` lacks counts), leaving out ``ignore`` (dotted keys, each
    with what is below it) and the keys a newer sac_tr added (``added_keys``). Both sides are
    compared as written, before interpolations are resolved, as the checkpoint stores them."""
    saved, new = _flat_pair(saved_yaml, cfg)
    return sorted(
        key
        for key in saved
        if not any(key == top or key.startswith(f"{top}.") for top in ignore)
        and saved[key] != new.get(key, _MISSING)
    )


def added_keys(saved_yaml: str, cfg: DictConfig) -> list[str]:
    """The dotted keys of ``cfg`` that a checkpoint's saved configuration does not have: options
    added to sac_tr after the run started, which the resumed run takes at their new values."""
    saved, new = _flat_pair(saved_yaml, cfg)
    return sorted(new.keys() - saved.keys())


def _flat_pair(saved_yaml: str, cfg: DictConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    saved = _flatten(OmegaConf.to_container(OmegaConf.create(saved_yaml), resolve=False))
    return saved, _flatten(OmegaConf.to_container(cfg, resolve=False))


_MISSING = object()


def remove_if_unused(run_dir: str | os.PathLike) -> bool:
    """Delete a run directory that holds nothing but what hydra writes before a run starts (its
    ``.hydra/`` folder and an empty log) and ``sac_tr.run_lock``'s lock file: left by a run
    refused before it trained (never call it for a ``RunDirInUseError``: the directory is the
    holder's, however empty it looks yet), or by a resume that continued in the original
    directory; with it, the parents under ``./runs`` (and ``runs/`` itself) it leaves empty.
    Returns whether it was deleted."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return False
    for entry in run_dir.iterdir():
        if entry.name == ".hydra":
            continue
        if entry.is_file() and entry.suffix == ".log" and entry.stat().st_size == 0:
            continue
        if entry.name == LOCK_NAME:  # sac_tr.run_lock's, taken before the run was refused
            continue
        return False
    shutil.rmtree(run_dir)
    runs = (Path.cwd() / "runs").resolve()
    for parent in run_dir.resolve().parents:  # runs/<env>/ and runs/ left empty by the removal
        if (parent != runs and runs not in parent.parents) or any(parent.iterdir()):
            break
        parent.rmdir()
        if parent == runs:
            break
    return True


def launch_record(cfg: DictConfig, run_dir: str | os.PathLike) -> dict[str, str]:
    """This launch's ``.hydra/`` record (``read_hydra_files``'s form), ``cfg`` being the task's
    configuration. Under hydra, made in memory as hydra writes the files: the files on disk may
    already be another launch's, written over them by a second launch into the same directory
    (refused then by ``sac_tr.run_lock``). Outside hydra, the files in ``run_dir`` (none)."""
    if hydra_wrote_record(run_dir):
        hydra = HydraConfig.get()
        return {
            "config.yaml": OmegaConf.to_yaml(cfg),
            "hydra.yaml": OmegaConf.to_yaml(OmegaConf.create({"hydra": hydra})),
            "overrides.yaml": OmegaConf.to_yaml(hydra.overrides.task),
        }
    return read_hydra_files(run_dir)


def continuing_overrides(overrides: list[str], run_dir: str | os.PathLike) -> list[str]:
    """``overrides`` with their ``resume=`` (``+resume=``, any value) replaced by
    ``resume=<run_dir>``: the overrides that continue that run from its newest checkpoint (an
    older ``resume=<checkpoint>`` pasted again would set the newer ones aside)."""
    kept = [str(o) for o in overrides if str(o).lstrip("+").split("=", 1)[0] != "resume"]
    return [*kept, f"resume={run_dir}"]


def hydra_wrote_record(run_dir: str | os.PathLike) -> bool:
    """Whether this process runs under hydra with ``run_dir`` as its output directory and
    ``.hydra/`` as its record's folder: hydra then wrote this launch's record there before the
    task ran (over the record of a run that directory holds)."""
    if not HydraConfig.initialized():
        return False
    hydra = HydraConfig.get()
    here = Path(hydra.runtime.output_dir).resolve() == Path(run_dir).resolve()
    return here and hydra.output_subdir == ".hydra"


def read_hydra_files(run_dir: str | os.PathLike) -> dict[str, str]:
    """The text of each of hydra's ``.hydra/*.yaml`` files in ``run_dir`` (none outside hydra):
    the record of the command a run was started or continued with, kept in its checkpoints."""
    folder = Path(run_dir) / ".hydra"
    return {name: (folder / name).read_text() for name in HYDRA_FILES if (folder / name).is_file()}


def restore_hydra_files(run_dir: str | os.PathLike, state: Mapping[str, Any]) -> list[str]:
    """Put back the record of the run that owns ``run_dir`` from its checkpoint ``state``.

    Hydra rewrites ``.hydra/`` before the task runs, so a launch that is refused (another
    configuration) or finds the run finished would otherwise leave its own command there, and
    ``sac_tr.analysis`` would group the run by it. A checkpoint from before the files were kept
    gives back ``config.yaml`` alone (its saved configuration): ``overrides.yaml``, by which
    analysis groups runs, then stays as the launch wrote it. Returns the names rewritten."""
    return write_hydra_files(run_dir, state.get("hydra_files") or {"config.yaml": state["config"]})


def write_hydra_files(
    run_dir: str | os.PathLike, files: Mapping[str, str], create: bool = False
) -> list[str]:
    """Replace those of hydra's ``.hydra/*.yaml`` files in ``run_dir`` that exist and differ from
    ``files`` (name to text); with ``create``, also write the missing ones (a run directory made
    by copying a checkpoint, which has none): ``files`` must then be a hydra launch's record.
    Returns the names written."""
    folder = Path(run_dir) / ".hydra"
    if create and files:
        folder.mkdir(exist_ok=True)
    written = []
    for name, text in files.items():
        target = folder / name
        exists = target.is_file()
        if (
            name in HYDRA_FILES
            and (exists or create)
            and (not exists or target.read_text() != text)
        ):
            # a name of its own: a refused launch may put the record back at the same time
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
            with os.fdopen(fd, "w") as f:
                f.write(text)
            os.replace(tmp, target)
            written.append(name)
    return written
