"""User code named in the config: ``"package.module:name"`` or ``"path/to/file.py:name"``.

One loader for every such key (a reference adapter, ``champion.adapter``; a model class,
``models.<name>.class``), so both accept the same two forms and fail the same way: one
:class:`PluginError` naming the config key, what is wrong and the fix. :func:`check_spec` is
cheap (it imports only a module's parent packages) for the workflow's start-up checks;
:func:`load_object` imports the code. A file path is read relative to the current directory
(the workflow's directory for Snakemake and its Slurm jobs); a file is imported once per
process, under a module name derived from its absolute path.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import re
import sys
from pathlib import Path
from typing import Any

SPEC = re.compile(r"^(?P<module>[A-Za-z_][\w.]*|[^:]+\.py):(?P<name>[A-Za-z_]\w*)$")


class PluginError(ValueError):
    """A ``module:name`` config value cannot be found or imported; names the key and the fix."""


def parse_spec(spec: str, key: str) -> tuple[str, str]:
    """``(module or file, attribute)`` of ``spec``; a malformed value names ``key``."""
    m = SPEC.match(spec) if isinstance(spec, str) else None
    if not m:
        raise PluginError(
            f"config key '{key}' {spec!r}: expected 'package.module:Name' or 'path/to/file.py:Name'"
        )
    return m["module"], m["name"]


def check_spec(spec: str, key: str) -> tuple[str, str]:
    """Like :func:`parse_spec`, and the file exists or the module can be found (not imported)."""
    module, name = parse_spec(spec, key)
    if module.endswith(".py"):
        if not Path(module).is_file():
            raise PluginError(f"config key '{key}' {spec!r}: file {module} not found")
        return module, name
    try:
        found = importlib.util.find_spec(module)
    except (ImportError, ValueError) as e:
        found, why = None, f" ({e})"
    else:
        why = ""
    if found is None:
        raise PluginError(
            f"config key '{key}' {spec!r}: module {module} is not importable{why}; install it, "
            "put its folder on PYTHONPATH, or give 'path/to/file.py:Name'"
        )
    return module, name


def _import_file(path: str) -> Any:
    p = Path(path).resolve()
    name = f"arctax_plugin_{p.stem}_{hashlib.sha256(str(p).encode()).hexdigest()[:12]}"
    if name in sys.modules:
        return sys.modules[name]
    loc = importlib.util.spec_from_file_location(name, p)
    if loc is None or loc.loader is None:
        raise ImportError(f"cannot import {p}")
    mod = importlib.util.module_from_spec(loc)
    sys.modules[name] = mod
    try:
        loc.loader.exec_module(mod)
    except BaseException:
        del sys.modules[name]
        raise
    return mod


def load_object(spec: str, key: str) -> Any:
    """Import the object ``spec`` names; any failure is one :class:`PluginError` naming ``key``."""
    module, name = check_spec(spec, key)
    try:
        mod = _import_file(module) if module.endswith(".py") else importlib.import_module(module)
    except Exception as e:  # the user's module failed to import: say which and why
        raise PluginError(
            f"config key '{key}' {spec!r}: importing {module} failed: {type(e).__name__}: {e}"
        ) from e
    if not hasattr(mod, name):
        raise PluginError(f"config key '{key}' {spec!r}: {module} has no {name}")
    return getattr(mod, name)


def source_file(spec: str) -> Path | None:
    """The file that defines ``spec``'s module (for a checksum of the user's code), if any."""
    module, _ = parse_spec(spec, "spec")
    if module.endswith(".py"):
        return Path(module).resolve()
    try:
        found = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    return Path(found.origin) if found is not None and found.origin else None


def source_sha256(spec: str | None) -> str | None:
    """sha256 of the file defining ``spec`` (None for none): a changed model file re-runs its
    model's jobs and never resumes another version's training state."""
    f = source_file(spec) if spec else None
    if f is None or not f.is_file():
        return None
    return hashlib.sha256(f.read_bytes()).hexdigest()
