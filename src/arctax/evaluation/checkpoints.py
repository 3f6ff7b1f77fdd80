"""Safe checkpoint loading: ``torch.load(..., weights_only=True)`` only (bug 7 of the original).

Every failure ends in one :class:`CheckpointError` that names the file, says what is wrong
and how to fix it. A checkpoint of the original internal codebase (``core_model.*``,
``cebr_alpha``, OmegaConf hyper-parameters) is recognised and refused, never half-loaded:
its forward code is not public, so its weights cannot run faithfully here.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from arctax.evaluation.inspection import ORIGINAL_PREFIXES, inspect_checkpoint
from arctax.evaluation.model_code import ModelCodeError, model_code, recorded_sha256
from arctax.io import file_sha256

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


def trained_here_flag(path: Path) -> bool:
    """Whether the weights were trained by this workflow rather than supplied by the user: a
    ``provenance.json`` beside the checkpoint (every arctax training writes one; a trained
    model and a bootstrapped reference alike). The original Trial 69 weights cannot load at all
    (see :data:`ORIGINAL_HINT`), so a loadable champion without one was converted by the user.
    """
    return (path.parent / "provenance.json").is_file()


def load_model(path: str | Path, cfg: Mapping[str, Any]) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the arctax model of a checkpoint: ``(model in eval mode, info)``.

    ``cfg`` is the run's config: it, never the checkpoint, chooses the code that rebuilds the
    model (:mod:`arctax.evaluation.model_code`: a built-in, or the class ``models.<name>.class``
    names when the checkpoint asks for that same class). The model is first built on the meta
    device, so sizes in a checkpoint's hyper-parameters that do not fit its weights allocate
    nothing. ``info`` holds ``model_name``, ``model_cfg``, ``model_class``, ``model_code``,
    ``k``, ``trial69``, ``epoch``, ``global_step``, ``path``, ``sha256`` and ``trained_here``.
    """
    from arctax.models import build_model

    p = Path(path)
    ckpt = load_checkpoint(p)
    hp = _hparams(ckpt, p)
    try:
        code = model_code(cfg, p, hp["model_name"], hp.get("model_class"), recorded_sha256(hp, p))
    except ModelCodeError as e:
        raise CheckpointError(str(e)) from None
    if not isinstance(hp["model_cfg"], dict):
        raise CheckpointError(
            f"{p}: hyper_parameters.model_cfg is a {type(hp['model_cfg']).__name__}, not a "
            "dict of constructor arguments; retrain it with the workflow"
        )
    k = hp.get("k", 2)
    if not isinstance(k, int) or isinstance(k, bool) or not 0 <= k <= MAX_CONTEXT_PAIRS:
        raise CheckpointError(
            f"{p}: hyper_parameters.k is {k!r}, not a number of context pairs "
            f"(0..{MAX_CONTEXT_PAIRS}); retrain it with the workflow"
        )
    model = None
    try:
        with torch.device("meta"):  # shapes only: nothing allocated before they fit
            shapes = build_model(code.name, dict(hp["model_cfg"]), code.class_path).state_dict()
    except ValueError as e:
        raise CheckpointError(f"{p}: cannot rebuild the model: {e}") from e
    except Exception:  # a class of one's own that cannot be built on the meta device
        model = build_model(code.name, dict(hp["model_cfg"]), code.class_path)
        shapes = model.state_dict()
    # Lightning prefixes the wrapped nn.Module's parameters with its attribute name.
    # Other keys stay as they are, so they show up as unexpected in the diff.
    sd = {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items()}
    odd = [str(k) for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    if odd:
        raise CheckpointError(
            f"{p}: state_dict entries that are not tensors ({', '.join(odd[:MAX_DIFF])}); "
            "give a .ckpt written by training"
        )
    diff = state_dict_diff(shapes, sd)
    if diff:
        raise CheckpointError(
            f"{p}: weights do not fit the {hp['model_name']} architecture of its own "
            f"hyper-parameters ({diff}); the checkpoint and model code disagree: retrain it"
        )
    if model is None:
        model = build_model(code.name, dict(hp["model_cfg"]), code.class_path)
    model.load_state_dict(sd, strict=True)
    model.eval()
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
        "sha256": file_sha256(p),
        "trained_here": trained_here_flag(p),
    }
    return model, info
