"""Which code rebuilds a checkpoint's model: the run's config decides, never the checkpoint.

A checkpoint records the model it holds: ``hyper_parameters.model_name``, and for a model of
one's own (docs/MODELS.md) ``model_class`` (the ``models.<name>.class`` it was trained with)
and ``model_code_sha256`` (the sha256 of the file defining that class; older checkpoints have
it in the ``provenance.json`` beside them). :func:`model_code` treats these records as claims
to check, never as instructions:

- a built-in's name rebuilds the built-in; a checkpoint that names a class for it is refused;
- any other name loads only when the run's config names that model with the same class
  (``models.<name>.class``), and the class is then imported from the config's value;
- when the checkpoint recorded its class file's sha256, the config's class file must still
  have it, unless ``models.<name>.accept_changed_code: true`` accepts other code (recorded in
  the evaluation's ``summary.json``).

Anything else is one :class:`ModelCodeError` naming the checkpoint, the class it asks for and
the config key that would accept it, raised before any import. Standard library only (plus
:mod:`arctax.config` and :mod:`arctax.plugins`, which import nothing they are given): the
workflow runs it while parsing (``snakemake -n``), on what :mod:`.inspection` read.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from arctax.io import read_json
from arctax.plugins import PluginError, parse_spec, source_sha256
from arctax.settings import MODEL_NAMES, Model

ACCEPT = "accept_changed_code"  # models.<name>.accept_changed_code


class ModelCodeError(ValueError):
    """A checkpoint asks for code the config does not name; names the checkpoint, the class
    it asks for and the config key that would accept it."""


@dataclass(frozen=True)
class ModelCode:
    """The code that rebuilds a checkpoint's model, as the config gives it.

    ``class_path`` is the config's ``models.<name>.class`` (None: built-in);
    ``recorded_sha256`` the class file's sha256 the checkpoint recorded, ``sha256`` the config's
    class file's now; ``accepted_change`` whether they differ under ``accept_changed_code``.
    """

    name: str
    class_path: str | None
    recorded_sha256: str | None = None
    sha256: str | None = None
    accepted_change: bool = False

    def as_dict(self) -> dict[str, Any]:
        """Plain types, for ``summary.json``."""
        return asdict(self)


def _same_class(a: str, b: str) -> bool:
    """Whether two class paths name the same class (a file path compared once resolved)."""
    try:
        ma, na = parse_spec(a, "a")
        mb, nb = parse_spec(b, "b")
    except PluginError:
        return False
    if ma.endswith(".py") and mb.endswith(".py"):
        return na == nb and Path(ma).resolve() == Path(mb).resolve()
    return (ma, na) == (mb, nb)


def recorded_sha256(hp: Mapping[str, Any], path: Path) -> str | None:
    """The class file's sha256 the checkpoint recorded: ``hyper_parameters.model_code_sha256``,
    else the ``provenance.json`` beside it (written with it by training) for the same class."""
    sha = hp.get("model_code_sha256")
    if sha is not None:
        return str(sha)
    prov = path.parent / "provenance.json"
    try:
        rec = read_json(prov, "provenance.json", max_bytes=2**24) if prov.exists() else None
    except (OSError, ValueError):  # unreadable, a device, too deep or too big: no sha256
        return None
    if isinstance(rec, dict) and rec.get("model_class") == hp.get("model_class"):
        sha = rec.get("model_code_sha256")
        return str(sha) if isinstance(sha, str) else None
    return None


def model_code(
    models: Mapping[str, Model],
    path: str | Path,
    name: Any,
    asked_class: Any,
    asked_sha256: str | None = None,
) -> ModelCode:
    """The code that may rebuild the model checkpoint ``path`` records (``name``, the class it
    asks for and its file's sha256), as the run's models (``Settings.models``) give it; raise
    :class:`ModelCodeError` otherwise. Nothing is imported."""
    p = str(path)
    if not isinstance(name, str) or not name:
        raise ModelCodeError(
            f"{p}: hyper_parameters.model_name is {name!r}, not a model name; "
            "give a checkpoint written by arctax training"
        )
    if asked_class is not None and not isinstance(asked_class, str):
        raise ModelCodeError(
            f"{p}: hyper_parameters.model_class is a {type(asked_class).__name__}, not a class "
            "path; give a checkpoint written by arctax training"
        )
    if name in MODEL_NAMES:
        if asked_class is not None:
            raise ModelCodeError(
                f"{p}: a checkpoint of the built-in model '{name}' that asks for class "
                f"{asked_class!r}; a built-in is rebuilt from arctax's own code and the config, "
                "never the checkpoint, chooses code to import: retrain it, or re-save it "
                "without hyper_parameters.model_class"
            )
        return ModelCode(name, None)
    key = f"models.{name}.class"
    model = models.get(name)  # None: not a model of the config
    configured = model.cls if model is not None else None
    if asked_class is None or configured is None or not _same_class(asked_class, configured):
        asks = f"class {asked_class!r}" if asked_class else "no class"
        has = f"names class {configured!r} for it" if configured else f"has no model '{name}'"
        fix = (
            f"set config key '{key}: {asked_class}' if you trust that code"
            if asked_class
            else "retrain it with arctax"
        )
        raise ModelCodeError(
            f"{p}: refused before importing anything: the checkpoint is of model '{name}' and "
            f"asks for {asks}, but the config {has}; the config, never a checkpoint, chooses "
            f"the code that runs (docs/REFERENCE.md): {fix}"
        )
    now = source_sha256(configured)
    accept = model.accept_changed_code
    if asked_sha256 is not None and now != asked_sha256:
        if not accept:
            raise ModelCodeError(
                f"{p}: model '{name}' was trained with class {asked_class!r} whose file had "
                f"sha256 {asked_sha256[:16]}..., but the config's {configured!r} now has "
                f"{(now or 'no readable file')[:16]}...; restore that code, retrain, or accept "
                f"the changed code with config key 'models.{name}.{ACCEPT}: true' (recorded in "
                "summary.json)"
            )
        return ModelCode(name, configured, asked_sha256, now, accepted_change=True)
    return ModelCode(name, configured, asked_sha256, now)
