"""Every Python block of docs/custom_parts.md runs, in order, as the module ``my_parts`` (the
name the guide's config overrides import); other blocks are shell commands or sample output."""

import re
import sys
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^( *)```(\w*)\n(.*?)^\1```", re.S | re.M)


def test_every_python_block_of_the_custom_parts_guide_runs(monkeypatch):
    text = (ROOT / "docs" / "custom_parts.md").read_text()
    blocks = [(lang, code) for _, lang, code in FENCE.findall(text)]
    assert {lang for lang, _ in blocks} <= {"python", "bash", "text"}  # nothing else left unrun
    python = [code for lang, code in blocks if lang == "python"]
    assert len(python) >= 7
    module = types.ModuleType("my_parts")
    monkeypatch.setitem(sys.modules, "my_parts", module)
    monkeypatch.chdir(ROOT)  # the guide reads configs/ from the repository root
    for code in python:
        exec(compile(code, "docs/custom_parts.md", "exec"), module.__dict__)
    assert module.agent.loss.__class__.__name__ == "QMeanLoss"
