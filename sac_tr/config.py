"""Configuration checks that run before anything is built, so a typo fails in a second, not an hour."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from sac_tr.envs import check_env_id
from sac_tr.tracking import BACKENDS, WANDB_MODES

__all__ = ["ConfigError", "validate_config"]

# The keys each loss reads from cfg.loss (beyond name, gamma, num_qvalue_nets, reward_scale).
LOSS_KEYS = {"sac_v1": ("alpha",), "sac_v2": ("alpha_init", "fixed_alpha", "target_entropy")}
LOSSES = tuple(LOSS_KEYS)


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


def _check_device(problems: list[str], device: Any) -> None:
    if not isinstance(device, str) or not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", device):
        problems.append(f"device={device!r}: must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'.")


def validate_config(cfg: DictConfig) -> None:
    """Check every value the training run reads; raise one ``ConfigError`` listing all problems."""
    problems: list[str] = []
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
        "loss.reward_scale",
    ):
        _positive_float(problems, key, cfg_get(cfg, key))
    for key in LOSS_KEYS.get(cfg.loss.name, ()):
        if key not in cfg.loss:
            problems.append(
                f"loss.{key} is missing: loss={cfg.loss.name} needs {LOSS_KEYS[cfg.loss.name]}."
            )
    if cfg.loss.name == "sac_v1" and "alpha" in cfg.loss:
        _positive_float(problems, "loss.alpha", cfg.loss.alpha)
    if cfg.loss.name == "sac_v2" and "alpha_init" in cfg.loss:
        _positive_float(problems, "loss.alpha_init", cfg.loss.alpha_init)
        entropy = cfg.loss.get("target_entropy")
        if entropy != "auto" and not isinstance(entropy, (int, float)):
            problems.append(
                f"loss.target_entropy={entropy!r}: must be 'auto' (-dim(A)) or a number."
            )
    _positive_int(problems, "loss.num_qvalue_nets", cfg.loss.num_qvalue_nets)
    if not (isinstance(cfg.loss.gamma, (int, float)) and 0 <= cfg.loss.gamma < 1):
        problems.append(f"loss.gamma={cfg.loss.gamma!r}: must be in [0, 1).")
    if cfg.loss.name not in LOSSES:
        problems.append(f"loss.name={cfg.loss.name!r}: must be one of {LOSSES}.")
    hidden = list(cfg.network.hidden_sizes)
    if not hidden or any(not isinstance(h, int) or h <= 0 for h in hidden):
        problems.append(
            f"network.hidden_sizes={hidden}: must be a non-empty list of positive integers."
        )
    if cfg.network.activation not in ("relu", "tanh", "elu"):
        problems.append(
            f"network.activation={cfg.network.activation!r}: must be relu, tanh or elu."
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
    for key in ("compile", "nan_guard", "checkpoint.save_buffer", "collector.parallel", "progress"):
        if not isinstance(cfg_get(cfg, key), bool):
            problems.append(f"{key}={cfg_get(cfg, key)!r}: must be true or false.")
    _positive_int(problems, "checkpoint.keep", cfg.checkpoint.keep)
    if cfg.threads is not None:
        _positive_int(problems, "threads", cfg.threads)
    if cfg.resume is not None and not Path(str(cfg.resume)).exists():
        problems.append(
            f"resume={cfg.resume!r}: no such file or directory (give a checkpoint file or a run directory)."
        )
    if problems:
        raise ConfigError("Invalid configuration:\n  - " + "\n  - ".join(problems))


def cfg_get(cfg: DictConfig, dotted: str) -> Any:
    """``cfg_get(cfg, "eval.every_frames")``: a nested value by its dotted key."""
    node: Any = cfg
    for part in dotted.split("."):
        node = node[part]
    return node
