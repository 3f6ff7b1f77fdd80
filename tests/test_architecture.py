"""The layering of docs/ARCHITECTURE.md, held against every import in src/arctax (function-level
imports too): a module imports only its own layer and the ones below it."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tests.conftest import REPO

SRC = REPO / "src"
# lowest first; a dotted entry is a module that sits apart from its package's layer
LAYERS = [
    "io", "config", "settings", "lifecycle", "plugins",
    "data.tokenize", "data.collate",  # the token formats the models read
    "models", "data", "evaluation", "training", "adaptation", "memory", "search", "status", "cli",
]  # fmt: skip


def layer(module: str) -> str | None:
    """The layer of ``arctax.<...>`` (None: not arctax, or the package's own ``__init__``)."""
    parts = module.split(".")
    if parts[0] != "arctax" or len(parts) < 2 or parts[1] == "__init__":
        return None
    if len(parts) > 2 and f"{parts[1]}.{parts[2]}" in LAYERS:
        return f"{parts[1]}.{parts[2]}"
    return parts[1]


def imports(path: Path) -> list[str]:
    """Every ``arctax`` module ``path`` imports, at any depth of its code."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names]
    return [m for m in found if m.startswith("arctax.")]


def upward_imports() -> list[str]:
    out = []
    for path in sorted((SRC / "arctax").rglob("*.py")):
        me = layer(".".join(path.relative_to(SRC).with_suffix("").parts))
        if me is None:
            continue
        assert me in LAYERS, f"{path}: a module of no layer; add '{me}' to LAYERS and the doc"
        for target in imports(path):
            theirs = layer(target)
            if theirs in LAYERS and LAYERS.index(theirs) > LAYERS.index(me):
                out.append(f"{path.relative_to(REPO)} ({me}) imports {target} ({theirs})")
    return out


def test_no_module_imports_a_layer_above_its_own():
    assert upward_imports() == []


def test_the_check_finds_an_upward_import(tmp_path, monkeypatch):
    """The check can fail: a data module importing training is reported."""
    (tmp_path / "arctax" / "data").mkdir(parents=True)
    (tmp_path / "arctax" / "data" / "bad.py").write_text(
        "def f():\n    from arctax.training.train import train\n"
    )
    monkeypatch.setattr(f"{__name__}.SRC", tmp_path)
    monkeypatch.setattr(f"{__name__}.REPO", tmp_path)
    assert upward_imports() == [
        "arctax/data/bad.py (data) imports arctax.training.train (training)"
    ]


def test_the_documented_diagram_lists_the_layers_in_this_order():
    """docs/ARCHITECTURE.md's diagram (highest first) names the same layers in the same order."""
    doc = (REPO / "docs" / "ARCHITECTURE.md").read_text()
    block = doc.split("```")[1]
    named = []
    for line in block.splitlines():
        m = re.match(r"src/arctax/([\w/]+?)(?:\.py|/)[ ,]", line + " ")
        if m:
            named.append(m.group(1).replace("/", "."))
    expected = [name for name in reversed(LAYERS) if name != "data.collate"]
    assert named == expected
