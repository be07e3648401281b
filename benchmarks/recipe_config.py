"""The recipe's configuration (``configs/sac_mujoco.yaml``) composed with command-line overrides,
as ``python recipes/sac_mujoco.py <overrides>`` would run it: for the benchmarks that build a run
in their own process."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def recipe_config(overrides: list[str]) -> DictConfig:
    """``configs/sac_mujoco.yaml`` with ``overrides`` (``["env=hopper", "loss=sac_v2"]``)."""
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose(config_name="sac_mujoco", overrides=list(overrides))
