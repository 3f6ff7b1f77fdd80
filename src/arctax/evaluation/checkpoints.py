"""Safe checkpoint loading: ``torch.load(..., weights_only=True)`` only (bug 7 of the original).

Every failure ends in one :class:`CheckpointError` that names the file, says what is wrong
and how to fix it. A checkpoint of the original internal codebase (``core_model.*``,
``cebr_alpha``, OmegaConf hyper-parameters) is recognised and refused, never half-loaded:
its forward code is not public, so its weights cannot run faithfully here.

A checkpoint costs what it weighs: its zip is held to what ``torch.save`` writes before torch
reads it (:func:`arctax.evaluation.inspection.torch_zip`: members stored, apart, one
``data.pkl`` of bounded size), so the storages ``torch.load`` allocates total at most the
file's size; every tensor must hold its own elements (no stride-0 or overlapping view of a
small storage); the hyper-parameters are plain, small values, and ``model_cfg`` is checked
against the schema's block for its model (types, ranges) and sized
(:func:`arctax.models.model_elements`, against ``limits.max_model_elements``) before any
model is built. An error about them names them as the checkpoint's, never the config's.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from arctax.config import model_block_error
from arctax.data.validate import short
from arctax.evaluation.inspection import ORIGINAL_PREFIXES, inspect_checkpoint
from arctax.evaluation.model_code import ModelCodeError, model_code, recorded_sha256
from arctax.io import ReadError, file_sha256, read_json
from arctax.settings import Limits, Model

ORIGINAL_HINT = (
    "The original Trial 69 champion_bootstrap.ckpt ('core_model.*', 'cebr_alpha', 'gauge_alpha', "
    "OmegaConf hyper-parameters) needs its internal codebase, whose forward code "
    "is not public, so arctax cannot run it. Give the reference another way (docs/REFERENCE.md): "
    "`champion.predictions: FILE` (its answers, made with its own code, as an ARC Prize "
    'submission.json), `champion.adapter: "module:function"` (its owner\'s loader behind '
    "arctax's predictor interface), or `champion.bootstrap: true` (train a labelled stand-in "
    "here); or convert the weights into an arctax checkpoint"
)
MAX_DIFF = 5
MAX_CONTEXT_PAIRS = 64  # hyper_parameters.k beyond this is not a checkpoint of ours
MAX_GRID = 30  # a model_cfg's max_grid (ARC grids are at most 30x30)
# hyper-parameters are a few plain values: bounded before anything is built from them
MAX_HP_ITEMS, MAX_HP_DEPTH, MAX_HP_STR = 10_000, 16, 10_000
MAX_INT = 2**63 - 1
# what inspect_checkpoint found -> the end of the message (the fix)
_FIXES = {
    "missing": "check the path or train the model first",
    "not_a_file": "give the path of a .ckpt file",
    "empty": "re-run the training step",
    "truncated": "re-run the training step",
    "corrupt": "re-run the training step, or restore the file",
    "not_torch": "give the path of a .ckpt written by training",
    "unsafe": "save hyper-parameters as plain types (dict, list, str, numbers)",
}


class CheckpointError(RuntimeError):
    """A checkpoint cannot be loaded safely; the message names the file and the fix."""


def _check_container(p: Path) -> None:
    """Refuse, before unpickling anything, a file that cannot be a safe torch checkpoint."""
    found = inspect_checkpoint(p)
    if found.kind == "original":
        raise CheckpointError(f"{p}: {found.detail}. {ORIGINAL_HINT}")
    if found.kind in _FIXES:
        detail = found.detail
        if found.kind == "unsafe":
            detail = f"refuses to load: {detail}; loading it would need code execution"
        raise CheckpointError(f"{p}: {detail}; {_FIXES[found.kind]}")
    with open(p, "rb") as f:
        if f.read(2) != b"PK":  # the pre-1.6 format: torch allocates the sizes it declares
            raise CheckpointError(
                f"{p}: a legacy (pre-1.6) PyTorch file, whose storages torch.load would "
                "allocate at the sizes the file declares before reading them; re-save it with "
                "torch.save (the zip format) or retrain it"
            )


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint dict with ``weights_only=True``; refuse anything else clearly."""
    p = Path(path)
    _check_container(p)
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        msg = str(e)
        if "omegaconf" in msg.lower():
            raise CheckpointError(
                f"{p}: holds OmegaConf objects, which cannot load under weights_only=True "
                f"(loading them would run arbitrary code); {ORIGINAL_HINT}"
            ) from e
        if "Unsupported operand" in msg:  # e.g. LONG4: an integer of over 255 bytes
            op = msg.split("Unsupported operand")[-1].split()[0]
            raise CheckpointError(
                f"{p}: its pickle uses opcode {op}, which torch's weights-only loader does not "
                "read (an integer of over 255 bytes?); not a checkpoint of plain values: give "
                "a .ckpt written by training"
            ) from None
        if "Unsupported global" in msg or "Weights only load failed" in msg:
            what = msg.split("Unsupported global:")[-1].split(" was not")[0].strip()
            raise CheckpointError(
                f"{p}: refuses to load under weights_only=True: it pickles a Python object "
                f"({what[:120]}) that would need code execution; save hyper-parameters as "
                "plain types (dict, list, str, numbers)"
            ) from e
        raise CheckpointError(f"{p}: not a readable PyTorch checkpoint ({msg[:200]})") from e
    except (RuntimeError, EOFError, KeyError, ValueError, OSError) as e:
        raise CheckpointError(
            f"{p}: truncated or corrupt checkpoint ({type(e).__name__}: {str(e)[:160]}); "
            "re-run the training step"
        ) from e
    if not isinstance(ckpt, dict):
        raise CheckpointError(
            f"{p}: not a Lightning checkpoint (it holds a {type(ckpt).__name__}, not a dict with "
            "'state_dict' and 'hyper_parameters'); give the path of a .ckpt written by training"
        )
    sd = ckpt.get("state_dict")
    if not isinstance(sd, dict):
        raise CheckpointError(
            f"{p}: not a Lightning checkpoint (no 'state_dict'; top-level keys: "
            f"{', '.join(map(str, list(ckpt)[:6]))}); give the path of a .ckpt written by training"
        )
    if is_original_codebase(ckpt):
        raise CheckpointError(
            f"{p}: a checkpoint of the original internal codebase. {ORIGINAL_HINT}"
        )
    return ckpt


def is_original_codebase(ckpt: dict[str, Any]) -> bool:
    """True for a checkpoint with the original internal codebase's structure."""
    keys = [str(k) for k in ckpt.get("state_dict", {})]
    return any(k.startswith(ORIGINAL_PREFIXES) for k in keys)


def _hparams(ckpt: dict[str, Any], p: Path) -> dict[str, Any]:
    hp = ckpt.get("hyper_parameters")
    need = ("model_name", "model_cfg")
    if not isinstance(hp, dict) or any(k not in hp for k in need):
        have = ", ".join(map(str, hp)) if isinstance(hp, dict) else type(hp).__name__
        raise CheckpointError(
            f"{p}: hyper_parameters lack {' and '.join(need)} (found: {have or 'none'}); "
            "this checkpoint was not written by arctax training: retrain it with the workflow"
        )
    return hp


def state_dict_diff(expected: dict[str, torch.Tensor], actual: dict[str, torch.Tensor]) -> str:
    """Short description of missing / unexpected / shape-mismatched keys (first few of each)."""
    missing = sorted(set(expected) - set(actual))
    unexpected = sorted(set(actual) - set(expected))
    shapes = [
        f"{k} checkpoint {tuple(actual[k].shape)} != model {tuple(expected[k].shape)}"
        for k in sorted(set(expected) & set(actual))
        if tuple(expected[k].shape) != tuple(actual[k].shape)
    ]
    parts = []
    for name, items in (("missing", missing), ("unexpected", unexpected), ("shape", shapes)):
        if items:
            more = f" (+{len(items) - MAX_DIFF} more)" if len(items) > MAX_DIFF else ""
            parts.append(f"{name} {len(items)}: {', '.join(items[:MAX_DIFF])}{more}")
    return "; ".join(parts)


def trained_here_flag(path: Path, sha256: str | None = None) -> bool:
    """Whether the weights were trained by an arctax training rather than supplied by the
    user: the ``provenance.json`` beside the checkpoint (every arctax training writes one, a
    trained model and a bootstrapped reference alike) records THIS file's sha256 among the
    checkpoints it wrote (``checkpoints_sha256``; by bytes, so a renamed ``best.ckpt``, the
    bootstrapped ``champion_bootstrap.ckpt``, still counts). A provenance of any other
    content, or one that names other bytes, is no proof. (A claim bound to these bytes, not a
    signature: who writes both files can write both.) The original Trial 69 weights cannot
    load at all (see :data:`ORIGINAL_HINT`), so a loadable champion without one was converted
    by the user.
    """
    try:
        rec = read_json(path.parent / "provenance.json", "provenance.json", max_bytes=2**24)
    except (OSError, ReadError):
        return False
    recorded = rec.get("checkpoints_sha256") if isinstance(rec, dict) else None
    if not isinstance(recorded, dict):
        return False
    return (sha256 or file_sha256(path)) in [v for v in recorded.values() if isinstance(v, str)]


def _check_plain(value: Any, where: str, p: Path, budget: list[int], depth: int = 0) -> None:
    """``value`` (a hyper-parameter) is a plain, small value: ``None``, a bool, an int that fits
    64 bits, a float, a short string, or lists / tuples / string-keyed dicts of them, nested at
    most :data:`MAX_HP_DEPTH` deep and :data:`MAX_HP_ITEMS` in all."""
    budget[0] -= 1
    if budget[0] < 0 or depth > MAX_HP_DEPTH:
        raise CheckpointError(
            f"{p}: its hyper_parameters hold over {MAX_HP_ITEMS} values or nest deeper than "
            f"{MAX_HP_DEPTH} levels (at {where}); not a checkpoint of arctax training"
        )
    bad = None
    if isinstance(value, bool) or value is None or isinstance(value, float):
        return
    if isinstance(value, int):
        bad = None if -MAX_INT <= value <= MAX_INT else "an integer over 64 bits"
    elif isinstance(value, str):
        bad = None if len(value) <= MAX_HP_STR else f"a string of {len(value)} characters"
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            _check_plain(v, f"{where}[{i}]", p, budget, depth + 1)
    elif isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                bad = f"a dict with a {type(k).__name__} key"
                break
            _check_plain(v, f"{where}.{k[:40]}", p, budget, depth + 1)
    else:
        bad = f"a {type(value).__name__}"
    if bad:
        raise CheckpointError(
            f"{p}: its {where} is {bad}, not a plain value (hyper-parameters are numbers, "
            "strings, lists and dicts); not a checkpoint of arctax training"
        )


def _dense(t: torch.Tensor) -> bool:
    """Every element of ``t`` has a place of its own in its storage (no stride 0, no two
    elements on one place) and the storage holds them all."""
    if t.numel() == 0:
        return True
    dims = sorted((st, n) for st, n in zip(t.stride(), t.shape, strict=True) if n > 1)
    want = 1
    for st, n in dims:
        if st != want:
            return False
        want *= n
    last = t.storage_offset() + t.numel()
    return t.storage_offset() >= 0 and last * t.element_size() <= t.untyped_storage().nbytes()


def _check_tensors(sd: Mapping[Any, Any], p: Path) -> None:
    """The state_dict has string keys and plain dense tensors (not sparse, not quantized, not
    a view that makes a few stored bytes look like many)."""
    odd = [repr(k)[:40] for k in sd if not isinstance(k, str)]
    if odd:
        raise CheckpointError(
            f"{p}: state_dict keys that are not names ({', '.join(odd[:MAX_DIFF])}); "
            "give a .ckpt written by training"
        )
    odd = [str(k) for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    if odd:
        raise CheckpointError(
            f"{p}: state_dict entries that are not tensors ({', '.join(odd[:MAX_DIFF])}); "
            "give a .ckpt written by training"
        )
    for k, t in sd.items():
        why = None
        if t.layout != torch.strided or t.is_quantized or t.device.type != "cpu":
            why = f"a {t.layout} {'quantized ' if t.is_quantized else ''}tensor on {t.device}"
        elif not _dense(t):
            why = (
                f"a view of shape {tuple(t.shape)} over {t.untyped_storage().nbytes()} stored "
                "bytes (stride 0 or overlapping elements: a small file posing as a large model)"
            )
        if why:
            raise CheckpointError(
                f"{p}: its state_dict entry {k[:80]!r} is {why}; training writes plain dense "
                "tensors: give a .ckpt written by training"
            )


def _model_cfg(hp: Mapping[str, Any], name: str, p: Path) -> dict[str, Any]:
    """The checkpoint's ``model_cfg``, checked against the schema's block for model ``name``
    (a built-in's keys, types and ranges; any block for a model of one's own) and with a
    ``max_grid`` of at most :data:`MAX_GRID`."""
    cfg = hp["model_cfg"]
    if not isinstance(cfg, dict):
        raise CheckpointError(
            f"{p}: hyper_parameters.model_cfg is a {type(cfg).__name__}, not a "
            "dict of constructor arguments; retrain it with the workflow"
        )
    why = model_block_error(name, cfg)
    mg = cfg.get("max_grid", MAX_GRID)
    if why is None and (type(mg) is not int or not 1 <= mg <= MAX_GRID):
        why = f"max_grid: {mg!r} is not a grid side 1..{MAX_GRID}"
    if why:
        raise CheckpointError(
            f"{p}: its hyper_parameters.model_cfg (the checkpoint's own hyper-parameters, not "
            f"your config's) {why}; give a checkpoint written by arctax training"
        )
    return dict(cfg)


def load_model(
    path: str | Path, models: Mapping[str, Model], limits: Limits
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the arctax model of a checkpoint: ``(model in eval mode, info)``.

    ``models`` are the run's (``Settings.models``): they, never the checkpoint, choose the code
    that rebuilds the model (:mod:`arctax.evaluation.model_code`: a built-in, or the class ``models.<name>.class``
    names when the checkpoint asks for that same class). The model is first built on the meta
    device, so sizes in a checkpoint's hyper-parameters that do not fit its weights allocate
    nothing. ``info`` holds ``model_name``, ``model_cfg``, ``model_class``, ``model_code``,
    ``k``, ``trial69``, ``epoch``, ``global_step``, ``path``, ``sha256`` and ``trained_here``.
    """
    from arctax.models import ModelError, build_model, model_elements

    p = Path(path)
    ckpt = load_checkpoint(p)
    hp = _hparams(ckpt, p)
    _check_plain(hp, "hyper_parameters", p, [MAX_HP_ITEMS])
    for key in ("epoch", "global_step"):  # written into summary.json: a count or nothing
        n = ckpt.get(key)
        if n is not None and (type(n) is not int or not 0 <= n <= MAX_INT):
            raise CheckpointError(
                f"{p}: its {key} is {short(n)}, not a count of 64 bits; not a checkpoint of "
                "arctax training"
            )
    try:
        code = model_code(
            models, p, hp["model_name"], hp.get("model_class"), recorded_sha256(hp, p)
        )
    except ModelCodeError as e:
        raise CheckpointError(str(e)) from None
    model_cfg = _model_cfg(hp, code.name, p)
    k = hp.get("k", 2)
    if not isinstance(k, int) or isinstance(k, bool) or not 0 <= k <= MAX_CONTEXT_PAIRS:
        raise CheckpointError(
            f"{p}: hyper_parameters.k is {k!r}, not a number of context pairs "
            f"(0..{MAX_CONTEXT_PAIRS}); retrain it with the workflow"
        )
    # Lightning prefixes the wrapped nn.Module's parameters with its attribute name.
    # Other keys stay as they are, so they show up as unexpected in the diff.
    _check_tensors(ckpt["state_dict"], p)
    sd = {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items()}
    where = f"{p}: its hyper_parameters.model_cfg (the checkpoint's own, not your config's)"
    budget = limits.max_model_elements
    model = None
    try:
        size = model_elements(code.name, model_cfg, code.class_path, where)
        _check_size(size, budget, hp["model_name"], p)
        with torch.device("meta"):  # shapes only: nothing allocated before they fit
            shapes = build_model(code.name, model_cfg, code.class_path, where).state_dict()
    except ModelError as e:
        raise CheckpointError(str(e)) from None
    except CheckpointError:
        raise
    except Exception:  # a class of one's own that cannot be built on the meta device
        model = build_model(code.name, model_cfg, code.class_path, where)
        _check_size(_elements(model), budget, hp["model_name"], p)
        shapes = model.state_dict()
    diff = state_dict_diff(shapes, sd)
    if diff:
        raise CheckpointError(
            f"{p}: weights do not fit the {hp['model_name']} architecture of its own "
            f"hyper-parameters ({diff}); the checkpoint and model code disagree: retrain it"
        )
    if model is None:
        model = build_model(code.name, model_cfg, code.class_path, where)
    model.load_state_dict(sd, strict=True)
    model.eval()
    sha256 = file_sha256(p)
    info = {
        "model_name": hp["model_name"],
        "model_cfg": hp["model_cfg"],
        "model_class": code.class_path,  # the config's; None: built in
        "model_code": code.as_dict(),
        "k": k,
        "trial69": hp.get("trial69"),
        "epoch": ckpt.get("epoch"),
        "global_step": ckpt.get("global_step"),
        "path": str(p),
        "sha256": sha256,
        "trained_here": trained_here_flag(p, sha256),
    }
    return model, info


def _elements(model: nn.Module) -> int:
    from arctax.models import MODULE_ELEMENTS

    tensors = [*model.parameters(), *model.buffers()]
    return sum(t.numel() for t in tensors) + MODULE_ELEMENTS * sum(1 for _ in model.modules())


def _check_size(size: int, budget: int, name: str, p: Path) -> None:
    if size > budget:
        raise CheckpointError(
            f"{p}: its hyper_parameters.model_cfg (the checkpoint's own) asks for a {name} of "
            f"{size:,} elements (parameters + buffers + modules), over config key "
            f"'limits.max_model_elements' ({budget:,}); raise that key if you trust this "
            "checkpoint's size, or give another checkpoint"
        )
