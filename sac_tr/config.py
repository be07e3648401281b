"""Configuration checks that run before anything is built, so a typo fails in a second, not an hour."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from sac_tr.accel import MODES as ACCELERATE_MODES
from sac_tr.components import (
    ACTOR_OF_LOSS,
    PARTS,
    import_object,
    part_builder,
    part_offers,
    part_problems,
    resolve_actor_kind,
)
from sac_tr.envs import check_env_id
from sac_tr.schema import config_schema, default_config_dir, unknown_keys
from sac_tr.tracking import BACKENDS, WANDB_MODES

__all__ = ["ConfigError", "resolve_device", "validate_config", "validate_evaluate_config"]

# The keys each built-in loss reads from cfg.loss (beyond name and gamma).
LOSS_KEYS = {
    "sac_v1": ("alpha", "reward_scale", "num_qvalue_nets"),
    "sac_v2": ("alpha_init", "fixed_alpha", "target_entropy", "reward_scale", "num_qvalue_nets"),
    "sac_deterministic": ("reward_scale", "num_qvalue_nets"),
    "td3": ("policy_noise", "noise_clip", "policy_delay", "num_qvalue_nets"),
    "ddpg": (),
}
LOSSES = tuple(LOSS_KEYS)
ACTORS = ("auto", "tanh_normal", "deterministic")


class ConfigError(ValueError):
    """A configuration value is wrong; the message names the key, the value and what is accepted."""


def _positive_int(problems: list[str], key: str, value: Any, allow_zero: bool = False) -> None:
    ok = (
        isinstance(value, int)
        and not isinstance(value, bool)
        and (value >= 0 if allow_zero else value > 0)
    )
    if not ok:
        need = "an integer >= 0" if allow_zero else "a positive integer"
        problems.append(f"{key}={value!r}: must be {need}.")


def _positive_float(problems: list[str], key: str, value: Any) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
        problems.append(f"{key}={value!r}: must be a number > 0.")


def _check_device(problems: list[str], device: Any, key: str = "device") -> None:
    """A known device name, and one this machine has (a CUDA device needs a CUDA build of torch
    and a visible GPU)."""
    if not isinstance(device, str) or not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", device):
        problems.append(f"{key}={device!r}: must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'.")
    elif device.startswith("cuda") and not torch.cuda.is_available():
        why = (
            "this torch is a CPU-only build: install a CUDA build of torch to use a GPU"
            if torch.version.cuda is None
            else "no CUDA GPU is visible: check nvidia-smi and CUDA_VISIBLE_DEVICES"
        )
        problems.append(
            f"{key}={device}: CUDA is not available here; use {key}=auto or cpu ({why})."
        )
    elif device.startswith("cuda:") and int(device[5:]) >= torch.cuda.device_count():
        count = torch.cuda.device_count()
        problems.append(
            f"{key}={device}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}; "
            f"use one of them or {key}=cuda."
        )
    elif device == "mps" and not torch.backends.mps.is_available():
        problems.append(f"{key}=mps: MPS (Apple GPU) is not available here; use {key}=auto or cpu.")


def resolve_device(name: str) -> torch.device:
    """The training device: ``auto`` is CUDA when available, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _check_cudagraphs(problems: list[str], cfg: DictConfig) -> None:
    """``cudagraphs=true`` captures the update in CUDA graphs: a GPU is needed, and every step of
    the update must be tensor work (a hard target copy's schedule is a Python counter)."""
    if cfg.get("cudagraphs", False) is True and cfg.target_update.kind == "hard":
        problems.append(
            "cudagraphs=true with target_update=hard: the hard copy's schedule is a Python counter "
            "that a captured graph cannot follow; use target_update=soft, or cudagraphs=false."
        )
    device = cfg.device
    try:
        on_gpu = resolve_device(device).type == "cuda"
    except (RuntimeError, TypeError):  # not a device name: _check_device says so
        return
    if cfg.get("cudagraphs", False) is True and not on_gpu:
        problems.append(
            f"cudagraphs=true with device={device}: CUDA graphs capture the update on a GPU "
            f"({'none here' if device == 'auto' else 'not the CPU'}); set device=cuda on a GPU "
            "machine, or cudagraphs=false."
        )


def _check_buffer_device(problems: list[str], buffer: DictConfig) -> None:
    """``buffer.device``: a device name; a disk buffer lives in host memory-mapped files."""
    device = buffer.get("device", "auto")
    _check_device(problems, device, "buffer.device")
    if buffer.storage == "disk" and device not in ("auto", "cpu"):
        problems.append(
            f"buffer.device={device} with buffer.storage=disk: a disk buffer is memory-mapped host "
            "memory; use buffer.device=auto (or cpu), or buffer.storage=memory."
        )


def validate_config(cfg: DictConfig, config_dir: tuple[Path, str] | None = None) -> None:
    """Check every value the training run reads, and that ``cfg`` holds no key the recipe does
    not know (``+batchsize=512``); raise one ``ConfigError`` listing all problems.

    ``config_dir``: (directory, primary config name) the schema is read from; by default the
    running hydra app's, or this repository's ``configs/sac_mujoco.yaml``.
    """
    problems: list[str] = []
    source = config_dir or default_config_dir()
    if source is not None:
        problems += unknown_keys(cfg, config_schema(*source))
    try:
        check_env_id(cfg.env.id)
    except ValueError as err:
        problems.append(f"env.id: {err}")
    for key in (
        "total_frames",
        "frames_per_batch",
        "batch_size",
        "buffer.size",
        "eval.every_frames",
        "eval.episodes",
        "eval.max_steps",
        "checkpoint.every_frames",
        "log_every_updates",
    ):
        _positive_int(problems, key, cfg_get(cfg, key))
    for key in ("env.init_random_frames", "seed", "eval.video_every"):
        _positive_int(problems, key, cfg_get(cfg, key), allow_zero=True)
    for key in (
        "utd_ratio",
        "optim.lr_actor",
        "optim.lr_qvalue",
        "optim.lr_value",
        "optim.lr_alpha",
        "optim.lr_default",
    ):
        _positive_float(problems, key, cfg_get(cfg, key))
    _check_parts(problems, cfg)
    for key in LOSS_KEYS.get(cfg.loss.name, ()) if not cfg.loss.get("target") else ():
        if key not in cfg.loss:
            problems.append(
                f"loss.{key} is missing: loss={cfg.loss.name} needs {LOSS_KEYS[cfg.loss.name]}."
            )
    if "reward_scale" in cfg.loss:
        _positive_float(problems, "loss.reward_scale", cfg.loss.reward_scale)
    if cfg.loss.name == "td3" and not cfg.loss.get("target"):
        for key in ("policy_noise", "noise_clip"):
            value = cfg.loss.get(key)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                problems.append(f"loss.{key}={value!r}: must be a number >= 0.")
        _positive_int(problems, "loss.policy_delay", cfg.loss.get("policy_delay"))
    if cfg.loss.name == "sac_v1" and "alpha" in cfg.loss:
        _positive_float(problems, "loss.alpha", cfg.loss.alpha)
    if cfg.loss.name == "sac_v2" and "alpha_init" in cfg.loss:
        _positive_float(problems, "loss.alpha_init", cfg.loss.alpha_init)
        entropy = cfg.loss.get("target_entropy")
        if entropy != "auto" and not isinstance(entropy, (int, float)):
            problems.append(
                f"loss.target_entropy={entropy!r}: must be 'auto' (-dim(A)) or a number."
            )
    if "num_qvalue_nets" in cfg.loss:
        _positive_int(problems, "loss.num_qvalue_nets", cfg.loss.num_qvalue_nets)
    if not (isinstance(cfg.loss.gamma, (int, float)) and 0 <= cfg.loss.gamma < 1):
        problems.append(f"loss.gamma={cfg.loss.gamma!r}: must be in [0, 1).")
    for key in (
        "network.hidden_sizes",
        "actor.hidden_sizes",
        "critic.hidden_sizes",
        "value.hidden_sizes",
    ):
        hidden = cfg_get(cfg, key)
        if (
            not hasattr(hidden, "__len__")
            or isinstance(hidden, str)
            or not hidden
            or any(not isinstance(h, int) or isinstance(h, bool) or h <= 0 for h in hidden)
        ):
            problems.append(f"{key}={hidden}: must be a non-empty list of positive integers.")
    if cfg.network.activation not in ("relu", "tanh", "elu"):
        problems.append(
            f"network.activation={cfg.network.activation!r}: must be relu, tanh or elu."
        )
    deterministic = resolve_actor_kind(cfg) == "deterministic" and not cfg.actor.get("target")
    if deterministic and cfg.eval.stochastic:
        problems.append(
            "eval.stochastic=true: a deterministic actor has no stochastic policy to evaluate."
        )
    kind = cfg.target_update.kind
    if kind not in ("soft", "hard"):
        problems.append(f"target_update.kind={kind!r}: must be 'soft' or 'hard'.")
    tau = cfg.target_update.tau
    if not (isinstance(tau, (int, float)) and 0 < tau <= 1):
        problems.append(f"target_update.tau={tau!r}: must be in (0, 1].")
    _positive_int(problems, "target_update.hard_update_every", cfg.target_update.hard_update_every)
    if cfg.buffer.storage not in ("memory", "disk"):
        problems.append(f"buffer.storage={cfg.buffer.storage!r}: must be 'memory' or 'disk'.")
    if (
        isinstance(cfg.batch_size, int)
        and isinstance(cfg.buffer.size, int)
        and cfg.batch_size > cfg.buffer.size
    ):
        problems.append(
            f"batch_size={cfg.batch_size} is larger than buffer.size={cfg.buffer.size}."
        )
    _check_device(problems, cfg.device)
    _check_buffer_device(problems, cfg.buffer)
    if cfg.logger.backend not in BACKENDS:
        problems.append(f"logger.backend={cfg.logger.backend!r}: must be one of {BACKENDS}.")
    if cfg.logger.wandb_mode not in WANDB_MODES:
        problems.append(
            f"logger.wandb_mode={cfg.logger.wandb_mode!r}: must be one of {WANDB_MODES}."
        )
    _positive_int(problems, "collector.num_envs", cfg.collector.num_envs)
    n_envs, fpb = cfg.collector.num_envs, cfg.frames_per_batch
    if isinstance(n_envs, int) and isinstance(fpb, int) and n_envs > 0 and fpb % n_envs:
        problems.append(
            f"frames_per_batch={fpb} is not a multiple of collector.num_envs={n_envs} "
            f"(use frames_per_batch={n_envs * max(1, fpb // n_envs)})."
        )
    _check_cudagraphs(problems, cfg)
    for key in (
        "compile",
        "cudagraphs",
        "nan_guard",
        "checkpoint.save_buffer",
        "collector.parallel",
        "collector.asynchronous",
        "collector.act_in_train_mode",
        "progress",
        "eval.video_effects",
    ):
        if not isinstance(cfg_get(cfg, key), bool):
            problems.append(f"{key}={cfg_get(cfg, key)!r}: must be true or false.")
    _positive_int(problems, "checkpoint.keep", cfg.checkpoint.keep)
    if cfg.eval.video_size is not None:
        _positive_int(problems, "eval.video_size", cfg.eval.video_size)
    if cfg.get("accelerate", "auto") not in ACCELERATE_MODES:
        problems.append(
            f"accelerate={cfg.accelerate!r}: must be one of {', '.join(ACCELERATE_MODES)} "
            "(auto: fast evaluators where proven equal; on: require them; off: none)."
        )
    if cfg.threads not in ("auto", None):
        _positive_int(problems, "threads", cfg.threads)
        if problems and problems[-1].startswith("threads="):
            problems[-1] = problems[-1][:-1] + ", 'auto' or null."
    if cfg.resume not in (None, "auto") and not Path(str(cfg.resume)).exists():
        problems.append(
            f"resume={cfg.resume!r}: no such file or directory (give a checkpoint file, a run directory, or auto)."
        )
    if problems:
        raise ConfigError("Invalid configuration:\n  - " + "\n  - ".join(problems))


def _loss_takes_value(cfg: DictConfig) -> bool:
    """Whether the configured loss is offered a value network V_psi (``sac_v1``,
    ``sac_deterministic``, or a loss class that requires ``value_network``); true when the loss
    cannot be looked up, to check V anyway."""
    try:
        return part_builder(cfg, "loss") is None or "value_network" in part_offers(cfg, "loss")
    except ImportError:
        return True


def _check_parts(problems: list[str], cfg: DictConfig) -> None:
    """Known loss and actor names, importable user classes, a loss/actor pair that works, and
    arguments every part's builder takes (no unknown ``kwargs``, no required one missing)."""
    for group in PARTS:
        target = cfg_get(cfg, group).get("target")
        if target:
            try:
                import_object(target)
            except ImportError as err:
                problems.append(f"{group}.target={target!r}: {err}")
                continue
        if group == "value" and not _loss_takes_value(cfg):
            continue  # V is never built (make_loss notes its settings as unused): nothing to check
        if part_builder(cfg, group) is not None:
            problems.extend(part_problems(cfg, group))
    custom_loss, custom_actor = bool(cfg.loss.get("target")), bool(cfg.actor.get("target"))
    if not custom_loss and cfg.loss.name not in LOSSES:
        problems.append(
            f"loss.name={cfg.loss.name!r}: must be one of {LOSSES} "
            "(or set loss.target to your own LossModule class)."
        )
    if not custom_actor and cfg.actor.name not in ACTORS:
        problems.append(f"actor.name={cfg.actor.name!r}: must be one of {ACTORS}.")
    if custom_loss or custom_actor or cfg.loss.name not in LOSSES or cfg.actor.name == "auto":
        return
    needed = ACTOR_OF_LOSS[cfg.loss.name]
    if cfg.actor.name != needed:
        why = (
            "its entropy term needs log pi(a|s), which a deterministic actor does not have"
            if needed == "tanh_normal"
            else "it trains a deterministic policy mu(s) (exploration noise is added separately)"
        )
        problems.append(
            f"actor={cfg.actor.name} cannot be used with loss={cfg.loss.name}: {why}. Use "
            f"actor={needed} (or actor=auto), or a loss made for a {cfg.actor.name} actor: "
            f"{sorted(k for k, v in ACTOR_OF_LOSS.items() if v == cfg.actor.name)}."
        )


def cfg_get(cfg: DictConfig, dotted: str) -> Any:
    """``cfg_get(cfg, "eval.every_frames")``: a nested value by its dotted key."""
    node: Any = cfg
    for part in dotted.split("."):
        node = node[part]
    return node


def validate_evaluate_config(cfg: DictConfig) -> None:
    """Check ``recipes/evaluate.py``'s settings before any checkpoint is read or environment
    built; raise one ``ConfigError`` listing all problems. ``episodes``, ``max_steps`` and
    ``seed`` may be null: the run's own evaluation settings then apply."""
    problems: list[str] = []
    if OmegaConf.is_missing(cfg, "checkpoint") or cfg.checkpoint in (None, ""):
        problems.append(
            "checkpoint: required: give a checkpoint file or a run directory, e.g. "
            "checkpoint=runs/hopper/<run>."
        )
    for key in ("episodes", "max_steps"):
        if cfg[key] is not None:
            _positive_int(problems, key, cfg[key])
    if cfg.seed is not None:
        _positive_int(problems, "seed", cfg.seed, allow_zero=True)
    if not isinstance(cfg.video, bool):
        problems.append(f"video={cfg.video!r}: must be true or false.")
    _check_device(problems, cfg.device)
    if problems:
        raise ConfigError("Invalid configuration:\n  - " + "\n  - ".join(problems))
