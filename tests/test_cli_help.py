"""The recipe's command line: --help lists its keys with their comments and only its own groups;
an unknown key added with '+' is refused with a message."""

import subprocess
from pathlib import Path

from sac_tr.cli_help import help_config
from tests.helpers import ROOT, run_script


def run_recipe(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return run_script("recipes/sac_mujoco.py", *args, cwd=cwd)


def test_help_lists_the_keys_with_their_comments_and_only_the_users_groups(tmp_path):
    out = run_recipe("--help", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    config = (ROOT / "configs" / "sac_mujoco.yaml").read_text().splitlines()
    keys = config[: config.index("hydra:")]
    commented = [line for line in keys if "#" in line and not line.startswith(("#", "  - "))]
    assert len(commented) > 20
    for line in commented:  # every key line of the file, with its comment, verbatim
        assert line.rstrip() in text, line
    # The groups are the defaults list's (its options under each), then the two add-ons.
    defaults = [line[4:].split(":")[0] for line in keys if line.startswith("  - ")]
    groups = text[text.index("== Groups") : text.index("== Keys")]
    listed = [line.split()[0] for line in groups.splitlines()[1:] if line[2:3].strip()]
    listed = [g.split("=")[0] for g in listed]
    assert listed == [g for g in defaults if g != "_self_" and "hydra" not in g] + [
        "+experiment",
        "+sweep",
    ]
    for internal in ("evaluate", "tabular", "fig2_variant", "fig3c_target"):
        assert f"{internal}=" not in text and f"{internal}," not in text, internal
    assert "Powered by Hydra" not in text and "== Configuration groups ==" not in text


def test_the_help_template_is_generated_from_the_current_config():
    written = (ROOT / "configs" / "hydra" / "help" / "sac_mujoco.yaml").read_text()
    assert written == help_config(ROOT / "configs"), "run: python -m sac_tr.cli_help"


def test_command_line_refuses_an_added_unknown_key(tmp_path):
    out = run_recipe(
        "env=pendulum", "+batchsize=512", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path
    )
    assert out.returncode == 2
    assert "batchsize: not a key of this recipe (did you mean batch_size?)" in out.stderr
