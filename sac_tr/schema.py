"""The recipe's full set of keys, read from its config files, to refuse keys it does not know.

Hydra refuses ``batchsize=512`` (no such key) but accepts ``+batchsize=512``, which adds the key;
nothing reads it and the run trains silently with batch 256. The schema is the primary config's
keys plus, for every config group in its defaults list, the keys of all that group's options, so
a key added to a config file is known without touching this module. Anything under a ``kwargs``
mapping (keyword arguments of a user's own class) is the user's and always allowed.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

__all__ = ["config_schema", "default_config_dir", "unknown_keys"]

FREE_KEYS = ("kwargs",)  # mappings whose keys are a user's class's arguments
IGNORED_TOP = ("hydra", "defaults")


def default_config_dir() -> tuple[Path, str] | None:
    """The running hydra app's config directory and primary config name; outside an app, this
    repository's ``configs/sac_mujoco.yaml``; None when neither is found."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        hydra_cfg = HydraConfig.get()
        for source in hydra_cfg.runtime.config_sources:
            if source.provider == "main" and source.schema == "file":
                return Path(source.path), str(hydra_cfg.job.config_name)
        return None
    configs = Path(__file__).resolve().parents[1] / "configs"
    return (configs, "sac_mujoco") if (configs / "sac_mujoco.yaml").is_file() else None


def _keys(node: Any) -> Any:
    """A nested dict of the keys of a plain container (leaves: None)."""
    if isinstance(node, dict):
        return {k: _keys(v) for k, v in node.items() if k not in IGNORED_TOP}
    return None


def _union(a: Any, b: Any) -> Any:
    if isinstance(a, dict) and isinstance(b, dict):
        return {k: _union(a[k], b[k]) if k in a and k in b else {**b, **a}[k] for k in {**a, **b}}
    return a if isinstance(a, dict) else b


def config_schema(config_dir: str | Path, config_name: str) -> dict[str, Any]:
    """Every key the primary config ``config_name`` and its groups' options can hold."""
    config_dir = Path(config_dir)
    primary = OmegaConf.to_container(OmegaConf.load(config_dir / f"{config_name}.yaml"))
    schema = _keys(primary)
    for entry in primary.get("defaults", []):
        if not isinstance(entry, dict):
            continue  # _self_
        for group in entry:
            name = group.replace("override ", "").replace("optional ", "").strip()
            name, _, package = name.partition("@")
            if name.startswith("hydra/"):
                continue  # hydra's own settings, not the recipe's
            group_keys: Any = {}
            for option in sorted((config_dir / name).glob("*.yaml")):
                group_keys = _union(
                    group_keys, _keys(OmegaConf.to_container(OmegaConf.load(option)))
                )
            *parents, last = (package or name).replace("/", ".").split(".")
            node = schema
            for part in parents:
                node = node.setdefault(part, {})
            node[last] = _union(node.get(last) or {}, group_keys)
    return schema


def unknown_keys(cfg: DictConfig, schema: dict[str, Any]) -> list[str]:
    """One problem per key of ``cfg`` that ``schema`` does not have, with the nearest known key."""
    problems: list[str] = []

    def walk(node: Any, known: dict[str, Any], prefix: str) -> None:
        for key, value in node.items():
            dotted = f"{prefix}{key}"
            if prefix == "" and key in IGNORED_TOP:
                continue
            if key not in known:
                close = difflib.get_close_matches(str(key), [str(k) for k in known], n=1)
                hint = f"did you mean {prefix}{close[0]}?" if close else "no such key here"
                problems.append(
                    f"{dotted}: not a key of this recipe ({hint}); a key added with '+' is never "
                    "read. `python recipes/sac_mujoco.py --help` lists the keys."
                )
            elif key in FREE_KEYS or not known[key]:
                continue  # a user's kwargs, or a value that may be any mapping
            elif isinstance(value, dict):
                walk(value, known[key], f"{dotted}.")

    walk(OmegaConf.to_container(cfg, resolve=False), schema, "")
    return problems
