"""The SAC training loop (the paper's Algorithm 1): ``train`` reads top to bottom.

``train`` is the loop; ``TrainingRun`` holds what the loop works on (environments, agent, replay
buffer, logger, counters) and does each step's bookkeeping in one small method.
"""

from __future__ import annotations

import logging
import os
import random
import shlex
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import yaml
from omegaconf import DictConfig, OmegaConf
from tensordict import TensorDictBase
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from sac_tr.agent import make_agent, update
from sac_tr.checkpoint import (
    LEFT_CURVE,
    CheckpointError,
    buffer_dir,
    check_buffer_beside,
    checkpoint_bytes,
    checkpoint_path,
    get_rng_state,
    list_checkpoints,
    load_checkpoint,
    rotate_checkpoints,
    run_dir_of,
    save_buffer,
    save_checkpoint,
    set_aside_newer,
    set_rng_state,
)
from sac_tr.config import ConfigError, resolve_device, validate_config
from sac_tr.data import buffer_device, make_collector, make_replay_buffer
from sac_tr.env_state import (
    EnvStateError,
    EnvUnreachableError,
    capture_collector_state,
    restore_collector_state,
)
from sac_tr.envs import make_env
from sac_tr.eval_csv import (
    EvalCSVError,
    Trimmed,
    counted_rows,
    last_eval_row,
    read_eval_rows,
    trim_eval_csv,
)
from sac_tr.evaluation import EVAL_SEED_OFFSET, evaluate, record_video
from sac_tr.faults import NonFiniteError, batch_statistics, nonfinite_parameters, nonfinite_rows
from sac_tr.run_dirs import (
    RESUMABLE_KEYS,
    added_keys,
    checkpoint_frames,
    config_differences,
    continuing_overrides,
    hydra_wrote_record,
    launch_record,
    read_hydra_files,
    resolve_resume,
    restore_hydra_files,
    write_hydra_files,
)
from sac_tr.run_lock import RunDirInUseError, hold_run_dir, holder_record
from sac_tr.signals import StopOnSignal
from sac_tr.threads import ThreadGovernor
from sac_tr.tracking import EvalCSV, log_metrics, log_video_file, make_logger

__all__ = ["Counters", "TrainSummary", "TrainingRun", "train"]


@dataclass
class TrainSummary:
    """What a finished run reports."""

    run_dir: Path
    frames: int
    updates: int
    last_eval_return: float
    checkpoint: Path
    frames_per_second: float
    interrupted_by: str | None = None  # "SIGINT" or "SIGTERM" when the run was stopped early
    already_finished: bool = False  # resume found a checkpoint at total_frames: nothing to do


@dataclass
class Counters:
    """Progress of a run, saved in every checkpoint."""

    frames: int = 0
    updates: int = 0
    evals: int = 0
    evaluated_at: int = -1  # frames of the last evaluation (-1: none yet)
    # of ``evals``, those in another directory's eval.csv: a checkpoint continued in a directory
    # of its own, whose curve starts after them (``TrainingRun._restore``)
    evals_elsewhere: int = 0
    update_credit: float = 0.0  # fractional updates owed when utd_ratio is not an integer
    skipped_transitions: int = 0  # NaN/inf transitions dropped (nan_guard=true)
    skipped_updates: int = 0  # batches with a NaN/inf loss skipped (nan_guard=true)
    wall_time_s: float = 0.0  # seconds of training so far, over every resumed segment


# What check_same_config lets a resume change, as a user writes it (resume is how one resumes).
_MAY_CHANGE = tuple(key for key in RESUMABLE_KEYS if key != "resume")

_CONSOLE_LOGGERS = [
    logging.getLogger(),
    logging.getLogger("torchrl"),
]  # torchrl's does not propagate


def _crossed(frames: int, new_frames: int, every: int) -> bool:
    """True when the frame counter passed a multiple of ``every`` in the last batch."""
    return frames // every > (frames - new_frames) // every


def train(cfg: DictConfig, run_dir: str | Path) -> TrainSummary:
    """Train SAC as configured; outputs (eval.csv, checkpoints, videos, logs) go to ``run_dir``.

    With ``cfg.resume`` set (a checkpoint, a run directory, or ``auto``: the newest checkpoint in
    ``run_dir`` if there is one), everything learned so far is restored and the counters continue
    where they stopped, in the original run directory. A run whose checkpoint is already at
    ``total_frames`` returns at once with ``already_finished=True``. A checkpoint a fault stop
    wrote before an evaluation due at its frames (``evaluation_due``) makes that evaluation first.
    One process trains in a run directory at a time: a launch into one another process holds
    raises ``RunDirInUseError`` (``sac_tr.run_lock``) before anything is built.
    """
    launch_dir = Path(run_dir)
    try:
        validate_config(cfg)  # fail on a typo before any environment or network is built
    except ConfigError:
        # launched in place: hydra wrote this command there (over a run's record, maybe one a
        # process is training)
        _put_back_run_record(launch_dir, holder_record(launch_dir))
        raise
    launch = launch_record(cfg, launch_dir)  # this command, as hydra records it (none outside)
    try:
        found = resolve_resume(cfg.resume, launch_dir)
    except CheckpointError:  # e.g. resume=<its own abandoned/ checkpoint>, launched in the run
        _put_back_run_record(launch_dir, holder_record(launch_dir))
        raise
    held = launch_dir if found is None else run_dir_of(found)  # the directory the run writes
    in_place = held.resolve() == launch_dir.resolve()
    if not in_place and hydra_wrote_record(launch_dir):  # resume=PATH launched in another
        _put_back_run_record(launch_dir, holder_record(launch_dir))  # run's directory
    try:  # the run writes this launch's record into held/.hydra/ (in place, or on resume=PATH)
        with hold_run_dir(held, record=launch):
            return _train(cfg, launch_dir, launch, held)
    except RunDirInUseError as err:
        if in_place:  # hydra wrote this launch's record over the holder's
            _put_back_run_record(held, err.record)
        raise


def _train(cfg: DictConfig, launch_dir: Path, launch: dict[str, str], held: Path) -> TrainSummary:
    """``train`` once its configuration is valid and this process holds ``held``, the directory
    the run writes."""
    run_dir = launch_dir
    resumed, due = None, False
    path = resolve_resume(cfg.resume, run_dir)  # again, now that no other process writes there
    if (run_dir_of(path) if path else launch_dir).resolve() != held.resolve():
        raise ConfigError(f"{held}: its checkpoints changed during the launch; launch it again.")
    if launch and held.resolve() == launch_dir.resolve():
        write_hydra_files(launch_dir, launch)  # a launch refused meanwhile may have written there
    if path is None:
        if str(cfg.resume) == "auto":  # and no checkpoint in run_dir
            first = min(int(cfg.checkpoint.every_frames), int(cfg.total_frames))
            restart_before_first_checkpoint(run_dir, first)
        refuse_fresh_start_over_a_run(run_dir)
    if path is not None:
        run_dir = run_dir_of(path)  # the run continues in its own directory
        resumed = (load_checkpoint(path), path)
        # resume=auto: hydra has just rewritten the run's own .hydra/ with this command
        in_place = run_dir.resolve() == launch_dir.resolve()
        try:
            check_same_config(resumed[0], cfg, path)
            # a damaged curve, one with other columns or missing counted evaluations is named
            # before anything is built
            EvalCSV.check(run_dir, eval_columns(cfg), unfinished_ok=True)
            rows, counted = counted_rows(run_dir / "eval.csv", *_count(resumed[0]))
        except (ConfigError, EvalCSVError, CheckpointError):
            if in_place:
                _keep_run_record(run_dir, resumed[0])  # the refused command is not the run's
            raise
        due = evaluation_due(resumed[0], cfg, rows, counted)
        if checkpoint_frames(path) >= cfg.total_frames and not due:
            if in_place:
                _keep_run_record(run_dir, resumed[0])
            if counted.completed:  # its counted last row lacks only its newline: given it, so
                trim_eval_csv(run_dir / "eval.csv", *_count(resumed[0]))
                print(  # that every reader (the suite's launcher, plot.py) sees the run finished
                    f"{run_dir / 'eval.csv'}: its last row, which the checkpoint counts, lacked its "
                    "newline; completed."
                )
            return finished_summary(resumed[0], run_dir, path, rows)
        try:  # a run that goes on loads its buffer (a finished one never does)
            check_buffer_beside(resumed[0], path)
        except CheckpointError:
            if in_place:
                _keep_run_record(run_dir, resumed[0])
            raise
        say_nan_guard_switch(resumed[0], cfg, path)  # a run that goes on: its checks passed
        # resume=PATH to an older checkpoint: the newer ones, and the curve they were on (before
        # TrainingRun trims it), go to checkpoints/abandoned/<n>/
        moved = set_aside_newer(path, curve=run_dir / "eval.csv")
        for step in moved:
            print(f"Resuming from {path.name}: the newer {step.name} moved to {step.parent}/.")
        if moved and (moved[0].parent / LEFT_CURVE).is_file():
            print(f"The curve they were on is kept as {moved[0].parent / LEFT_CURVE}.")
    first_update = max(cfg.env.init_random_frames, cfg.batch_size)  # see TrainingRun.learn
    if cfg.total_frames < first_update:
        print(
            f"Note: total_frames={cfg.total_frames} makes no update: learning starts after "
            f"env.init_random_frames={cfg.env.init_random_frames} random frames, once the buffer "
            f"holds batch_size={cfg.batch_size} transitions (frame {first_update}); raise "
            "total_frames or lower those."
        )
    run = TrainingRun(cfg, run_dir, resumed, hydra_files=launch)
    if resumed and launch:  # resume=PATH: the run's record is now this command (under hydra, a
        # copy of a checkpoints/ folder gets its first one)
        write_hydra_files(run_dir, launch, create=hydra_wrote_record(launch_dir))
    # Ctrl-C / SIGTERM: finish this step, checkpoint, return. Log lines (torchrl's INFO, the
    # user's) are written above the progress bar instead of through it.
    with StopOnSignal() as stop, logging_redirect_tqdm(loggers=_CONSOLE_LOGGERS):
        if due:  # the evaluation the loop makes at these frames, then their checkpoint again
            print(
                f"Resuming {path}: a fault stopped the run at {run.counters.frames:,} frames before "
                "the evaluation due there; evaluating its policy now."
            )
            run.evaluate()
            run.save()
        for batch in run.collector or ():
            new_frames = run.store(batch)  # a_t ~ pi(.|s_t), s_t+1 ~ p;  D <- D u {(s, a, r, s')}
            run.learn(new_frames)  # V_psi, pi_phi, Q_theta_i steps, then psibar <- tau psi + ...
            run.log_losses()
            frames = run.counters.frames
            if _crossed(frames, new_frames, cfg.eval.every_frames) or frames >= cfg.total_frames:
                run.evaluate()  # the deterministic policy tanh(mu(s)), as in the paper
            if (
                _crossed(frames, new_frames, cfg.checkpoint.every_frames)
                or frames >= cfg.total_frames
            ):
                run.save()
            run.show_progress(new_frames)
            if stop.signum is not None:
                break
        finished = run.counters.frames >= cfg.total_frames  # a signal in the last batch: done
        return run.finish(interrupted_by=None if finished else stop.name or None)


def check_same_config(state: dict, cfg: DictConfig, path: Path) -> None:
    """Refuse to continue a run under another configuration: only ``RESUMABLE_KEYS`` may change
    (``total_frames``, how the process runs, and ``nan_guard``: ``say_nan_guard_switch``), anything
    else would splice two experiments into one curve."""
    differing = config_differences(state["config"], cfg)
    if differing:
        saved = OmegaConf.create(state["config"])
        lines = [
            f"  {key}: saved {OmegaConf.select(saved, key)!r}, now {OmegaConf.select(cfg, key)!r}"
            for key in differing[:20]
        ]
        raise ConfigError(
            f"Cannot resume from {path}: the run was started with another configuration "
            f"({len(differing)} key(s) differ; only {', '.join(_MAY_CHANGE)} may change):\n"
            + "\n".join(lines)
            + "\nRerun with the saved values, or give the new configuration its own run directory."
            + _saved_overrides(state, run_dir_of(path))
        )
    added = added_keys(state["config"], cfg)
    if added:  # options this sac_tr has and the run's did not: said, not silently taken
        print(f"Resuming {path}: keys new since it was written, at today's values: {added}")


def _saved_overrides(state: dict, run_dir: Path) -> str:
    """The command-line overrides the run was last launched with, as hydra recorded them, to
    copy into the command that continues it ("" outside hydra). Its ``resume=`` becomes the run
    directory (``continuing_overrides``)."""
    text = (state.get("hydra_files") or {}).get("overrides.yaml")
    overrides = yaml.safe_load(text) if text else None
    if not overrides:
        return ""
    return (
        "\nThe run was last launched with (resume= set to its run directory, which continues "
        "its newest checkpoint): " + shlex.join(continuing_overrides(overrides, run_dir))
    )


def say_nan_guard_switch(state: dict, cfg: DictConfig, path: Path) -> None:
    """Print that a resume turns ``nan_guard`` on or off (the record of the switch is this line)."""
    saved = OmegaConf.create(state["config"])
    if saved.get("nan_guard", False) != cfg.nan_guard:
        now = (
            "dropped, and batches with a NaN/inf loss skipped (charts/skipped_transitions, "
            "charts/skipped_updates)"
            if cfg.nan_guard
            else "no longer dropped: the first one stops the run"
        )
        print(
            f"Resuming {path} with nan_guard={str(cfg.nan_guard).lower()} (the run had "
            f"{str(not cfg.nan_guard).lower()}): from {state['frames']:,} frames on, NaN/inf "
            f"transitions are {now}."
        )


def say_trimmed(path: Path, frames: int, done: Trimmed) -> None:
    """Print what resuming at ``frames`` did to the curve at ``path`` (``trim_eval_csv``)."""
    if done.dropped:
        print(
            f"Resuming at {frames:,} frames: dropped {done.dropped} evaluation(s) written after "
            f"the checkpoint from {path}; they are made again."
        )
    if done.cut:
        print(f"Resuming: dropped the unfinished last line of {path} (a run killed writing it).")
    if done.completed:
        print(
            f"Resuming: the last row of {path} lacked its newline and is one the checkpoint "
            "counts; kept (a value cut inside its last field could not be told)."
        )
    if done.missing and last_eval_row(path) is None:  # none of them: a new directory
        print(
            f"Note: {path} holds none of the {done.missing} evaluations the checkpoint at "
            f"{frames:,} frames counts (a checkpoint continued in a directory of its own): the "
            f"curve there starts after {frames:,} frames."
        )
    elif done.missing:
        print(
            f"Warning: {path} lacks {done.missing} of the evaluations the checkpoint at "
            f"{frames:,} frames counts (lost with a machine before they reached the disk, "
            "deleted, or trimmed when this checkpoint was set aside in checkpoints/abandoned/): "
            "the curve has a gap there."
        )


def eval_columns(cfg: DictConfig) -> tuple[str, ...]:
    """The columns ``eval.csv`` has beyond ``EvalCSV.FIELDS`` under ``cfg``."""
    return EvalCSV.STOCHASTIC if cfg.eval.stochastic else ()


def restart_before_first_checkpoint(run_dir: Path, first: int) -> None:
    """Continue a run in ``run_dir`` that holds no checkpoint, stopped before its first one
    (due at ``first`` frames) could be written: a kill -9, an out-of-memory kill, a lost node.
    Its evaluations, all at or before ``first`` frames, are dropped and said: the run starts
    again and makes them again (on the CPU, the same numbers). A curve that goes past ``first``
    is left as it is, for ``refuse_fresh_start_over_a_run`` to refuse: its checkpoints were
    removed, and starting again would splice two runs."""
    row = last_eval_row(run_dir / "eval.csv")
    if row is None or (frames := int(float(row["frames"]))) > first:
        return
    done = trim_eval_csv(run_dir / "eval.csv", 0, evaluations=None)
    print(
        f"Starting {run_dir} again: it was stopped before its first checkpoint (due at {first:,} "
        f"frames); the {done.dropped} evaluation(s) it made, up to {frames:,} frames, are made again."
    )


def refuse_fresh_start_over_a_run(run_dir: Path) -> None:
    """Refuse a fresh start in a directory that holds a run: checkpoints (named, with
    ``resume=auto`` to continue them), or an ``eval.csv`` with evaluations. With no checkpoint to
    continue from (deleted to save disk, or the curve copied from elsewhere), the new run would
    append a second curve from frame 0 to the first, and a later resume would trim the file to
    its own checkpoint, deleting the first curve."""
    row = last_eval_row(run_dir / "eval.csv")
    saved = list_checkpoints(run_dir / "checkpoints")
    numbered = [  # the same run in a sweep directory named by job number (sac_tr before 2026-12-03)
        d
        for d in sorted(run_dir.parent.glob(f"*_{run_dir.name}"))
        if d.name.split("_")[0].isdigit() and list_checkpoints(d / "checkpoints")
    ]
    if not saved and row is None and numbered:
        raise ConfigError(
            f"{run_dir} is new, but {numbered[0]} beside it holds this job's run under the name "
            "an older sac_tr gave it (with the job number in front). To continue it rather than "
            f"start again: mv {shlex.quote(str(numbered[0]))} {shlex.quote(str(run_dir))} (then "
            "the same command again)."
        )
    if saved:
        _put_back_run_record(run_dir)
        raise ConfigError(
            f"{run_dir} already holds a run (its newest checkpoint: {saved[-1].name}), and resume "
            "is not set: a fresh run there would mix two runs' curves and checkpoints. Add "
            "resume=auto to the same command to continue it (or to be told it is finished), or "
            "give this run another directory."
        )
    if row is not None:
        raise ConfigError(
            f"{run_dir / 'eval.csv'} already holds evaluations (the last at "
            f"{int(float(row['frames'])):,} frames), but {run_dir / 'checkpoints'} has no "
            "checkpoint to continue from: a fresh run there would mix two curves in one file. "
            "Move eval.csv (or the whole directory) aside, or give this run another directory."
        )


def _put_back_run_record(run_dir: Path, holder: Mapping[str, str] | None = None) -> None:
    """A launch in a directory that holds a run, refused or continuing another run elsewhere:
    hydra has just written this launch's ``.hydra/`` record over the run's own; put it back. The record kept by a process training
    there (``holder``: ``RunDirInUseError.record``, ``run_lock.holder_record``) is the run's;
    else (no holder, or one from before records were kept in the lock) the newest checkpoint's."""
    if holder:
        write_hydra_files(run_dir, holder)
        return
    saved = list_checkpoints(run_dir / "checkpoints")
    if saved:
        try:
            _keep_run_record(run_dir, load_checkpoint(saved[-1]))
        except CheckpointError:  # unreadable: resume=auto will name it and the one before
            pass


def _keep_run_record(run_dir: Path, state: dict) -> None:
    """Put back the run's ``.hydra/`` record from its checkpoint (``restore_hydra_files``); say
    so when the checkpoint is older than the record it keeps and ``overrides.yaml`` stays as
    this launch wrote it."""
    restore_hydra_files(run_dir, state)
    if not state.get("hydra_files") and (run_dir / ".hydra" / "overrides.yaml").is_file():
        print(
            f"Note: {run_dir}/.hydra/overrides.yaml now holds this launch's overrides: the run's "
            "checkpoint predates the copy of them sac_tr keeps (config.yaml was put back)."
        )


def _count(state: dict) -> tuple[int, int | None, int | None]:
    """What a checkpoint says of its curve in its run directory, as ``trim_eval_csv`` takes it:
    its frames, the evaluations it counts there (less those made in another directory, before
    it was continued in this one: ``Counters.evals_elsewhere``) and the frames of its last one
    (``None``: not recorded)."""
    evals = state.get("evals")
    if evals is not None:
        evals -= state.get("evals_elsewhere", 0)
    return int(state["frames"]), evals, state.get("evaluated_at")


def evaluation_due(
    state: dict, cfg: DictConfig, rows: list[dict[str, str]], counted: Trimmed
) -> bool:
    """True for a checkpoint whose curve lacks the evaluation due at its frames: the batch that
    reached them crossed a multiple of ``eval.every_frames``, or reached the ``total_frames`` the
    checkpoint was written under. The loop evaluates before it saves, so only a stop on a fault
    in that batch (NaN/inf in its transitions, or in a loss on the CPU:
    ``TrainingRun._stop_on_fault``) writes such a checkpoint. ``rows`` are the evaluations it
    counts (``counted_rows``). With some of them missing from the file (``counted.missing``), or a
    checkpoint that does not count them (before c4127e7), which one is missing cannot be told, and
    nothing is made again."""
    if state.get("evals") is None or counted.missing:
        return False
    frames = int(state["frames"])
    # its last evaluation: in the curve, or made in another directory (``evals_elsewhere``)
    last = int(float(rows[-1]["frames"])) if rows else max(state.get("evaluated_at") or 0, 0)
    every = cfg.eval.every_frames
    saved_total = OmegaConf.create(state["config"]).get("total_frames", frames + 1)
    return last < frames and (last // every < frames // every or frames >= int(saved_total))


def finished_summary(
    state: dict, run_dir: Path, path: Path, rows: list[dict[str, str]]
) -> TrainSummary:
    """What a run that already reached its frame budget reports, without building anything;
    ``rows`` are the evaluations its checkpoint counts (``counted_rows``)."""
    row = rows[-1] if rows else None  # this checkpoint's last evaluation, not a later one's
    return TrainSummary(
        run_dir=run_dir,
        frames=int(state["frames"]),
        updates=int(state["updates"]),
        last_eval_return=float(row["return_mean"]) if row else float("nan"),
        checkpoint=path,
        frames_per_second=float("nan"),
        already_finished=True,
    )


def wandb_run_to_continue(state: dict, run_dir: Path) -> str | None:
    """The W&B run id a run resumed from ``state`` in ``run_dir`` logs to: the checkpoint's own,
    unless the run it was written in still exists elsewhere (the checkpoint was copied: out of
    ``abandoned/``, or a run forked with ``cp -r``), when two runs would log into one W&B run;
    then a new one, said. A run directory moved (``mv``) keeps its W&B run. Checkpoints from
    before 2026-12-04 do not record their directory: their W&B run is continued."""
    wandb_id, written_in = state.get("wandb_id") or None, state.get("run_dir")
    if not (wandb_id and written_in) or Path(written_in) == run_dir.resolve():
        return wandb_id
    if Path(written_in).is_dir() and os.path.samefile(written_in, run_dir):
        return wandb_id  # the same directory by another path (a bind mount, another mount point)
    if not (Path(written_in) / "eval.csv").is_file():  # moved here, or its original removed
        return wandb_id
    print(
        f"Note: this checkpoint was written by the run in {written_in}, which is still there: "
        f"this run logs to a new W&B run, not to that run's ({wandb_id})."
    )
    return None


class TrainingRun:
    """Everything one training run works on, built (and restored when resuming) from ``cfg``."""

    def __init__(
        self,
        cfg: DictConfig,
        run_dir: Path,
        resumed: tuple[dict, Path] | None = None,
        hydra_files: dict[str, str] | None = None,
    ) -> None:
        self.cfg = cfg
        self.threads = ThreadGovernor(cfg.threads)  # auto: cores not busy with other processes
        self.device = resolve_device(cfg.device)
        random.seed(cfg.seed)
        np.random.seed(cfg.seed)
        torch.manual_seed(cfg.seed)
        self.run_dir = run_dir
        # The command as hydra recorded it, kept in checkpoints (``restore_hydra_files``): this
        # launch's, else (train() outside hydra) the one the run already kept.
        self.hydra_files = (
            hydra_files
            or (resumed[0].get("hydra_files") if resumed else None)
            or read_hydra_files(run_dir)
        )

        # Environments, the agent (pi_phi, Q_theta_1,2, V_psi, V_psibar) and the replay buffer D.
        self.eval_env = make_env(cfg.env.id, seed=cfg.seed + EVAL_SEED_OFFSET)
        self.video_env = None
        self.agent = make_agent(make_env(cfg.env.id, seed=cfg.seed), cfg, self.device)
        print("\n".join(self.agent.notes))  # what each part was built with, once
        for network, path in self.agent.paths.items():
            print(f"{network}: {path}")
        self.buffer = make_replay_buffer(cfg.buffer, cfg.batch_size, self.run_dir, self.device)
        self.counters = Counters()
        self.last_eval = float("nan")
        self.saved_at: int | None = None
        if resumed:
            self._restore(*resumed)
        frames = self.counters.frames
        self.collector = (
            make_collector(
                lambda: make_env(cfg.env.id, seed=cfg.seed + frames),
                self.agent.policy,  # the actor, behind exploration noise if it is deterministic
                num_envs=cfg.collector.num_envs,
                parallel=cfg.collector.parallel,
                asynchronous=cfg.collector.asynchronous,
                frames_per_batch=cfg.frames_per_batch,
                total_frames=cfg.total_frames - frames,
                init_random_frames=max(0, cfg.env.init_random_frames - frames),
                device=self.device,  # the policy acts there; the environments stay on the CPU
                storing_device=buffer_device(cfg.buffer, self.device),  # where D lives
            )
            if frames < cfg.total_frames
            else None
        )
        if resumed:  # last, so that building the collector draws nothing from the saved RNG
            self._restore_collector(resumed[0].get("collector"))
            set_rng_state(resumed[0]["rng"])
        self.logger = make_logger(
            cfg.logger.backend,
            self.run_dir,
            exp_name=f"sac_{cfg.env.name}_seed{cfg.seed}",
            project=cfg.logger.project,
            wandb_mode=cfg.logger.wandb_mode,
            config={
                **OmegaConf.to_container(cfg, resolve=True),
                "network_paths": self.agent.paths,  # which networks run accelerated
            },
            run_id=(
                wandb_run_to_continue(resumed[0], run_dir)
                if resumed and cfg.logger.backend == "wandb"
                else None
            ),
        )
        self.eval_csv = EvalCSV(self.run_dir, extra=eval_columns(cfg))
        self.losses_sum: TensorDictBase | None = None
        self.losses_count = 0
        self.checkpoint_path: Path | None = resumed[1] if resumed else None
        self.resumed_collector = resumed[0].get("collector") if resumed else None
        self.start, self.start_frames = time.perf_counter(), frames
        self.start_wall_time = self.counters.wall_time_s  # earlier segments of a resumed run
        self.progress = tqdm(
            total=cfg.total_frames,
            initial=frames,
            unit="frame",
            disable=not cfg.progress,
            dynamic_ncols=True,
        )

    # ------------------------------------------------------------------ one step of the loop
    def store(self, batch: TensorDictBase) -> int:
        """Add the collected transitions to D; log finished training episodes. Returns frames."""
        batch = batch.reshape(-1)  # [envs, time] -> [frames]
        new_frames = batch.numel()
        self.counters.frames += new_frames
        keys = (*self.agent.loss.in_keys, ("next", "done"))
        batch_in = batch.select(*keys, strict=False)
        bad, culprits = nonfinite_rows(batch_in, batch_in.keys(True, True))
        if culprits:
            if not self.cfg.nan_guard:
                self._stop_on_fault(
                    f"NaN/inf in {culprits} from the environment",
                    batch_statistics(batch_in),
                )
            self.counters.skipped_transitions += int(bad.sum())
            batch_in = batch_in[~bad]
        if batch_in.batch_size[0]:  # a batch nan_guard dropped whole adds nothing (TorchRL's buffer
            self.buffer.extend(batch_in)  # checkpointer fails on a last write of no rows)
        finished = batch["next", "done"].squeeze(-1)
        if finished.any():
            returns = batch["next", "episode_reward"][finished]
            log_metrics(self.logger, {"train/episode_return": returns.mean()}, self.counters.frames)
        return new_frames

    def learn(self, new_frames: int) -> None:
        """``utd_ratio`` gradient steps per new frame, once the random-exploration phase is over."""
        cfg, c = self.cfg, self.counters
        if c.frames < cfg.env.init_random_frames or len(self.buffer) < cfg.batch_size:
            return
        c.update_credit += new_frames * cfg.utd_ratio
        while c.update_credit >= 1.0:
            c.update_credit -= 1.0
            try:
                out = update(
                    self.agent,
                    self.buffer.sample().to(self.device, non_blocking=True),
                    skip_nonfinite=self.cfg.nan_guard,
                    step=c.updates,
                )
            except NonFiniteError as err:  # raised before any parameter moved
                self._stop_on_fault(f"a non-finite loss at update {c.updates + 1}", str(err))
            if out is None:  # nan_guard: the batch was skipped
                c.skipped_updates += 1
                continue
            if self.agent.defer_fault_checks:
                # Told at log time (read_deferred_faults); a skipped batch adds nothing here.
                out = out.apply(lambda v: torch.where(self.agent.last_finite, v, 0.0))
                if self.agent.check_inputs:  # the first batch was checked in full; store()
                    self.agent.skip_input_checks()  # screens every transition that follows
            self.losses_sum = out if self.losses_sum is None else self.losses_sum + out
            self.losses_count += 1
            c.updates += 1
        self.agent.act_mode()  # the collector acts next (eval mode unless act_in_train_mode)

    def read_deferred_faults(self) -> None:
        """On CUDA the update flags NaN/inf losses on the device (no host read per update); here,
        at log and save time, the flags are read: the bad batches moved nothing (the optimizer
        skipped them). Without ``nan_guard`` the run stops, up to ``log_every_updates`` updates
        after the fault; with it they are counted as skipped, as on the CPU."""
        if not self.agent.defer_fault_checks:
            return
        skipped, losses = self.agent.read_faults()
        if not skipped:
            return
        c = self.counters
        c.updates -= skipped
        self.losses_count -= skipped
        if not self.cfg.nan_guard:
            named = ", ".join(f"{name} on {n}" for name, n in losses.items())
            self._stop_on_fault(
                f"a non-finite loss in {skipped} of the updates up to update {c.updates + skipped}",
                f"NaN/inf: {named} (batches). Those batches moved no parameter, moment or target; "
                "on CUDA the flags are read every log_every_updates updates, at logging and "
                "checkpoints, so the batches themselves are not shown.",
            )
        c.skipped_updates += skipped

    def log_losses(self, final: bool = False) -> None:
        """Every ``log_every_updates`` updates (and, with ``final``, whatever the last window
        holds): mean losses and diagnostics, speed (one host sync)."""
        if self.losses_count < (1 if final else self.cfg.log_every_updates):
            return
        self.read_deferred_faults()
        if not self.losses_count:
            return
        means = self.losses_sum / self.losses_count
        # Scalars as they are; per-sample diagnostics (TorchRL's TD3/DDPG return some) averaged.
        metrics = {f"train/{k}": v.float().mean() for k, v in means.items()}
        metrics["charts/frames_per_second"] = self._frames_per_second()
        metrics["charts/updates"] = self.counters.updates
        metrics["charts/threads"] = self.threads.threads
        metrics["charts/skipped_updates"] = self.counters.skipped_updates
        metrics["charts/skipped_transitions"] = self.counters.skipped_transitions
        log_metrics(self.logger, metrics, self.counters.frames)
        self.losses_sum, self.losses_count = None, 0

    def evaluate(self) -> None:
        """Evaluate the deterministic policy; append to eval.csv; record a video when due (every
        ``eval.video_every`` evaluations from the first, and at the last frame)."""
        cfg, c = self.cfg, self.counters
        row = {}
        # The deterministic policy; with eval.stochastic, the same policy sampling its actions
        # (Figure 3a), from the same start states.
        for prefix, stochastic in (("", False), ("stochastic_", True))[: 1 + cfg.eval.stochastic]:
            returns = evaluate(
                self.eval_env,
                self.agent.actor,
                cfg.eval.episodes,
                cfg.eval.max_steps,
                seed=cfg.seed + EVAL_SEED_OFFSET,
                stochastic=stochastic,
            )
            row[f"{prefix}return_mean"] = float(returns.mean())
            row[f"{prefix}return_std"] = float(returns.std(unbiased=False))
        c.evals += 1
        c.evaluated_at = c.frames
        self.last_eval = row["return_mean"]
        self.eval_csv.append(
            frames=c.frames,
            updates=c.updates,
            episodes=cfg.eval.episodes,
            wall_time_s=round(self._wall_time(), 2),
            **row,
        )
        log_metrics(self.logger, {f"eval/{k}": v for k, v in row.items()}, c.frames)
        final = c.frames >= cfg.total_frames  # always show the policy that learned
        if cfg.eval.video_every and ((c.evals - 1) % cfg.eval.video_every == 0 or final):
            if self.video_env is None:
                self.video_env = make_env(
                    cfg.env.id,
                    seed=cfg.seed + 20_000,
                    from_pixels=True,
                    render_size=cfg.eval.video_size,
                    render_effects=cfg.eval.video_effects,
                )
            video = self.run_dir / "videos" / f"eval_{c.frames:09d}.mp4"
            record_video(self.video_env, self.agent.actor, video, cfg.eval.max_steps)
            log_video_file(self.logger, "eval/video", video, c.frames)

    def save(self) -> Path:
        """Write ``checkpoints/step_<frames>.pt``: networks and targets (the loss's state),
        optimizer, counters, RNG states, the collector's environment state (for a resume in the
        middle of an episode), the W&B run id and, if asked, the replay buffer beside it; then
        delete all but the last ``checkpoint.keep``. Parameters holding NaN/inf are never saved."""
        self.read_deferred_faults()
        bad = nonfinite_parameters(self.agent.loss)
        if bad:
            self._stop_on_fault(f"NaN/inf in the parameters {bad[:5]}", "", save=False)
        path = checkpoint_path(self.run_dir / "checkpoints", self.counters.frames)
        self.counters.wall_time_s = self._wall_time()
        started = time.perf_counter()
        # First: a checkpoint file implies its buffer is whole. A buffer already saved at these
        # frames (the resumed checkpoint's, saved again after the evaluation due there: see
        # evaluation_due) holds what D holds.
        same_buffer = self.saved_at == self.counters.frames and buffer_dir(path).is_dir()
        if self.cfg.checkpoint.save_buffer and not same_buffer:
            save_buffer(self.buffer, buffer_dir(path))
        state = {
            **asdict(self.counters),
            "loss": self.agent.loss.state_dict(),
            "optimizer": self.agent.optimizer.state_dict(),
            "target_updater_counter": getattr(self.agent.target_updater, "counter", 0),
            "rng": get_rng_state(),
            "collector": self._collector_state(),
            "wandb_id": getattr(getattr(self.logger, "experiment", None), "id", "") or "",
            "run_dir": str(self.run_dir.resolve()),  # which run the W&B id is (see there)
            "has_buffer": bool(self.cfg.checkpoint.save_buffer),
            "config": OmegaConf.to_yaml(self.cfg),
            "hydra_files": self.hydra_files,
        }
        self.checkpoint_path = save_checkpoint(state, path)
        # a launch refused while this run held its directory (RunDirInUseError) left its own command
        # in .hydra/ when the run had no checkpoint to put the record back from
        try:
            write_hydra_files(self.run_dir, self.hydra_files)
        except OSError as err:  # the record is for reading runs back; training goes on
            print(f"Note: {self.run_dir}/.hydra/ could not be rewritten ({err}).")
        cost = {"checkpoint/seconds": time.perf_counter() - started}
        cost["checkpoint/megabytes"] = checkpoint_bytes(path) / 2**20  # with its buffer
        log_metrics(self.logger, cost, self.counters.frames)
        rotate_checkpoints(path.parent, self.cfg.checkpoint.keep)
        self.saved_at = self.counters.frames
        return self.checkpoint_path

    def show_progress(self, new_frames: int) -> None:
        self.threads.update()  # threads=auto: every few seconds, follow the cores left free
        self.progress.update(new_frames)
        self.progress.set_postfix(
            sps=f"{self._frames_per_second():.0f}",
            updates=self.counters.updates,
            eval=f"{self.last_eval:.1f}",
            threads=self.threads.threads,
            refresh=False,
        )

    def finish(self, interrupted_by: str | None = None) -> TrainSummary:
        """Close everything; make sure the final state is checkpointed."""
        self.progress.close()
        self.log_losses(final=True)  # a short run's losses are logged too
        if self.saved_at != self.counters.frames:
            self.save()  # before the collector closes its environments (their state is saved)
        if self.collector is not None:
            self.collector.shutdown()
        experiment = getattr(self.logger, "experiment", None)
        if hasattr(experiment, "finish"):
            experiment.finish()
        return TrainSummary(
            run_dir=self.run_dir,
            frames=self.counters.frames,
            updates=self.counters.updates,
            last_eval_return=self.last_eval,
            checkpoint=self.checkpoint_path,
            frames_per_second=self._frames_per_second(),
            interrupted_by=interrupted_by,
        )

    # ------------------------------------------------------------------ helpers
    def _wall_time(self) -> float:
        """Seconds of training, this segment plus the earlier ones of a resumed run."""
        return self.start_wall_time + time.perf_counter() - self.start

    def _frames_per_second(self) -> float:
        return (self.counters.frames - self.start_frames) / max(
            time.perf_counter() - self.start, 1e-9
        )

    def _stop_on_fault(self, what: str, details: str, save: bool = True) -> None:
        """Stop the run on a numerical fault: checkpoint the (still finite) state, then raise
        ``NonFiniteError`` naming the fault, the frame, the details and the checkpoint."""
        if save:
            self.save()
        last = self.checkpoint_path
        if last is None:
            advice = "No checkpoint was written yet: fix the cause and start again"
        else:
            advice = (
                f"Last good checkpoint: {last}. Resume from it (the same command with "
                f"resume={last}) after fixing the cause"
            )
        if save:  # a NaN/inf in the data or a loss: nan_guard drops or skips exactly those
            advice += (
                ", or add nan_guard=true to that command to drop such transitions and skip such "
                "batches from there on"
            )
        else:  # parameters that went non-finite from finite losses: nan_guard would not help
            advice += " (lower the learning rates or the reward scale)"
        raise NonFiniteError(
            f"Stopped at frame {self.counters.frames} (update {self.counters.updates}): {what}.\n"
            f"{details}\n{advice}."
        )

    def _collector_state(self) -> dict | None:
        if self.collector is None:  # at total_frames: the state the resumed checkpoint holds
            return self.resumed_collector
        try:
            return capture_collector_state(self.collector)
        except EnvStateError:  # e.g. environments in worker processes: resume starts new episodes
            return None

    def _restore_collector(self, state: dict | None) -> None:
        if self.collector is None or state is None:
            return
        try:
            restore_collector_state(self.collector, state)
        except EnvUnreachableError:  # environments in another process: new episodes there
            pass

    def _restore(self, state: dict, path: Path) -> None:
        defaults = asdict(Counters())
        self.counters = Counters(**{k: state.get(k, v) for k, v in defaults.items()})
        self.agent.loss.load_state_dict(state["loss"])
        self.agent.optimizer.load_state_dict(state["optimizer"])
        if hasattr(self.agent.target_updater, "counter"):
            self.agent.target_updater.counter = state["target_updater_counter"]
        if state.get("has_buffer"):
            self.buffer.loads(buffer_dir(path))
        # Evaluations after this checkpoint (a run killed before its next one) are redone; the
        # ones it counts are checked (no count in a checkpoint from before c4127e7).
        done = trim_eval_csv(self.run_dir / "eval.csv", *_count(state))
        say_trimmed(self.run_dir / "eval.csv", self.counters.frames, done)
        row = last_eval_row(self.run_dir / "eval.csv")
        if done.missing and row is None:  # continued in a directory of its own: the curve there
            self.counters.evals_elsewhere += done.missing  # starts now, and later resumes know it
        if state.get("evals") is None:  # counted from now on: what the curve holds
            self.counters.evals = len(read_eval_rows(self.run_dir / "eval.csv"))
        if state.get("evaluated_at") is None:  # recorded from now on
            self.counters.evaluated_at = int(float(row["frames"])) if row else -1
        self.last_eval = float(row["return_mean"]) if row else float("nan")
        self.saved_at = self.counters.frames  # this state is on disk already
        buffer = (
            f"the replay buffer's {len(self.buffer):,} transitions"
            if state.get("has_buffer")
            else "an empty replay buffer (the checkpoint holds none)"
        )
        last = (
            f"last evaluation {self.last_eval:.1f}"
            if row
            else f"no evaluation in its curve here (the checkpoint counts {done.missing} made "
            "elsewhere)"
            if done.missing
            else "no evaluation yet"
        )
        print(
            f"Resuming {self.run_dir} from {path.name}: {self.counters.frames:,} frames, "
            f"{self.counters.updates:,} updates, {last}, {buffer}."
        )
