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
    "models", "data", "params", "evaluation", "training", "adaptation", "memory", "search", "check",
    "layout", "status", "orphans", "cli",
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


# Below the entry points the library takes typed settings (arctax.settings), never the raw
# config: no parameter that is the config dict, no key read from it, no block rebuilt from it.
TYPED = ("training", "evaluation", "adaptation", "data")
SETTINGS_CLASSES = {"Settings", "Data", "Rearc", "Augment", "Taxonomy", "Trial69", "Optimizer",
                    "Scheduler", "EarlyStopping", "Trainer", "Tracking", "Limits", "Champion",
                    "Eval", "Adapt", "Sweep", "Block"}  # fmt: skip
# the one exception, with its reason: the adapter protocol a user implements hands the
# config over as a plain dict (docs/REFERENCE.md); arctax's own adapter types it at once
PROTOCOL = {"arctax/evaluation/adapters.py:arctax_checkpoint"}


def raw_config_reads(root: Path = SRC) -> list[str]:
    """Every place in ``TYPED`` packages that takes or reads the raw config dict."""
    out = []
    for pkg in TYPED:
        for path in sorted((root / "arctax" / pkg).rglob("*.py")):
            rel = path.relative_to(root).as_posix()
            tree = ast.parse(path.read_text())
            for fn in [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]:
                if f"{rel}:{fn.name}" in PROTOCOL:
                    continue
                args = [*fn.args.posonlyargs, *fn.args.args, *fn.args.kwonlyargs]
                for a in args:
                    ann = ast.unparse(a.annotation) if a.annotation else ""
                    if a.arg in ("cfg", "config") and (
                        not ann or ann.startswith(("Mapping", "dict"))
                    ):
                        out.append(f"{rel}:{fn.lineno} {fn.name}({a.arg}: {ann or '?'})")
                for node in ast.walk(fn):
                    if isinstance(node, ast.Subscript) and _raw(node.value):
                        out.append(f"{rel}:{node.lineno} reads {ast.unparse(node)[:40]}")
                    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                            and node.func.attr == "of"
                            and ast.unparse(node.func.value) in SETTINGS_CLASSES):  # fmt: skip
                        out.append(f"{rel}:{node.lineno} rebuilds {ast.unparse(node.func)}")
    return out


def _raw(node: ast.AST) -> bool:
    """``cfg[...]``, ``config[...]`` or ``<settings>.raw[...]``."""
    if isinstance(node, ast.Name):
        return node.id in ("cfg", "config")
    return isinstance(node, ast.Attribute) and node.attr == "raw"


def test_below_the_entry_points_no_function_reads_the_raw_config():
    assert raw_config_reads() == []


def test_a_planted_raw_config_read_in_training_fails(tmp_path, monkeypatch):
    """The check can fail: a training module taking the config dict, rebuilding a block from
    it and reading a key of it is reported three times."""
    for pkg in TYPED:
        (tmp_path / "arctax" / pkg).mkdir(parents=True)
    (tmp_path / "arctax" / "training" / "bad.py").write_text(
        "from collections.abc import Mapping\n"
        "from typing import Any\n"
        "from arctax.settings import Trainer\n\n\n"
        "def epochs(cfg: Mapping[str, Any]) -> int:\n"
        "    Trainer.of(cfg)\n"
        "    return cfg['trainer']['max_epochs']\n"
    )
    assert raw_config_reads(tmp_path) == [
        "arctax/training/bad.py:6 epochs(cfg: Mapping[str, Any])",
        "arctax/training/bad.py:7 rebuilds Trainer.of",
        "arctax/training/bad.py:8 reads cfg['trainer']",
    ]
