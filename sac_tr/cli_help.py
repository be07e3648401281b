"""``python recipes/sac_mujoco.py --help``: the recipe's keys with their comments, and its groups.

Hydra's generic help prints the composed config without its comments and every config group in
``configs/``, including those of other recipes. This module writes hydra's help template
(``configs/hydra/help/sac_mujoco.yaml``) from ``configs/sac_mujoco.yaml`` itself, so the help
shows the file's own comments; a test checks the written file is current. Regenerate with

    python -m sac_tr.cli_help
"""

from __future__ import annotations

import sys
from pathlib import Path

__all__ = ["help_config", "help_text"]

# Groups added with '+' that a user picks (the others in configs/ belong to other recipes or are
# picked by an experiment: evaluate, tabular, fig2_variant, fig3c_target).
ADD_ON_GROUPS = {
    "experiment": "sweeps: the paper's figures (fig1 ...) and the README's suite",
    "sweep": "run a -m sweep's jobs in parallel here or on SLURM (+sweep=local, +sweep=slurm)",
}

EXAMPLES = """\
  python recipes/sac_mujoco.py env=pendulum total_frames=10000 eval.every_frames=1000
  python recipes/sac_mujoco.py env=hopper loss=sac_v2 seed=1
  python recipes/sac_mujoco.py -m +sweep=local env=pendulum seed=0,1
  python recipes/sac_mujoco.py env=hopper resume=runs/hopper/<run>   # continue it (same overrides)
  python recipes/sac_mujoco.py env=hopper --cfg job          # print the full composed config"""


def _options(config_dir: Path, group: str) -> str:
    return ", ".join(p.stem for p in sorted((config_dir / group).glob("*.yaml")))


def help_text(config_dir: str | Path, config_name: str = "sac_mujoco") -> str:
    """The help: usage, the groups with their options, and the primary config's keys with the
    comments written beside them in ``<config_dir>/<config_name>.yaml``."""
    config_dir = Path(config_dir)
    lines = (config_dir / f"{config_name}.yaml").read_text().splitlines()
    header = [line for line in lines[: lines.index("defaults:")] if line.startswith("#")]
    groups, keys, part = [], [], "head"
    for line in lines:
        if line == "defaults:":
            part = "defaults"
        elif part == "defaults" and line.startswith("  - "):
            entry = line[4:]
            if ":" in entry and not entry.startswith("override"):  # "env: halfcheetah  # ..."
                group, rest = entry.split(":", 1)
                default, _, comment = rest.partition("#")
                choices = _options(config_dir, group.strip())
                choice = f"{group.strip()}={default.strip()}"
                groups.append(f"  {choice:<22}  {comment.strip()}")
                groups.append(f"  {'':<22}  options: {choices}")
        elif part == "defaults":
            part = "keys"
        if part == "keys":
            if line.startswith("hydra:"):
                break
            if line or keys:  # no blank line first
                keys.append(line)
    add_ons = [
        f"  {'+' + g + '=...':<22}  {what}\n  {'':<22}  options: {_options(config_dir, g)}"
        for g, what in ADD_ON_GROUPS.items()
        if (config_dir / g).is_dir()
    ]
    text = [
        *[h.lstrip("# ") for h in header],
        "",
        "Usage: python recipes/sac_mujoco.py [group=option ...] [key=value ...]",
        "",
        "Examples:",
        EXAMPLES,
        "",
        "== Groups (group=option; the default first) ==",
        *groups,
        "",
        "== Add-ons (with +) ==",
        *add_ons,
        "",
        f"== Keys (key=value, a.b=value; the defaults in configs/{config_name}.yaml) ==",
        *keys,
    ]
    while text[-1] == "":
        text.pop()
    return "\n".join(text) + "\n"


def help_config(config_dir: str | Path, config_name: str = "sac_mujoco") -> str:
    """hydra's ``hydra/help`` config (yaml) whose template is ``help_text``."""
    # Hydra reads the template through OmegaConf (``\\${`` escapes an interpolation), then
    # string.Template (``$$`` escapes a ``$``).
    body = help_text(config_dir, config_name).replace("$", "$$").replace("$${", "$\\${")
    template = body + (
        "\n== Hydra ==\n  -m / --multirun runs a sweep (key=a,b); --cfg job prints the composed "
        "config;\n  --hydra-help lists hydra's own options."
    )
    indented = "".join(f"  {line}".rstrip() + "\n" for line in template.splitlines())
    return (
        f"# Generated from configs/{config_name}.yaml by `python -m sac_tr.cli_help`: do not edit.\n"
        f"app_name: {config_name}\ntemplate: |\n{indented}"
    )


def main() -> None:
    configs = Path(sys.argv[1] if len(sys.argv) > 1 else "configs")
    out = configs / "hydra" / "help" / "sac_mujoco.yaml"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(help_config(configs))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
