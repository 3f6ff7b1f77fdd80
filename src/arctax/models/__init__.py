"""The models: the three built-ins, and any class a config names (docs/MODELS.md).

``build_model(name, model_cfg, class_path=None)`` builds a built-in by its name, or the class
``class_path`` names (``"package.module:Class"`` or ``"path/to/file.py:Class"``, the
``models.<name>.class`` config key) with the block's keys as constructor arguments.
:func:`resolve_model` checks, without building anything, that a config block gives a working
model: the class imports, the block fits its constructor, the class has the protocol
(:func:`protocol_problems`). The workflow runs it while the Snakefile is parsed.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from arctax.data.collate import FORMATS  # the batch formats (as models use data.tokenize)
from arctax.models.champion import Champion
from arctax.models.decoder_only import DecoderOnly
from arctax.models.encoder_decoder import EncoderDecoder
from arctax.models.layers import count_parameters
from arctax.plugins import PluginError, load_object

REGISTRY: dict[str, type[nn.Module]] = {
    "champion": Champion,
    "encoder_decoder": EncoderDecoder,
    "decoder_only": DecoderOnly,
}


class ModelError(ValueError):
    """A model config block does not give a working model; one line naming the key and fix."""


@dataclass(frozen=True)
class ModelSpec:
    """A resolved model: its class, constructor arguments and where the class came from."""

    name: str
    cls: type[nn.Module]
    kwargs: dict[str, Any]
    class_path: str | None  # None: built-in

    @property
    def fmt(self) -> str:
        """The batch format the model consumes."""
        return self.cls.fmt

    def build(self) -> nn.Module:
        return self.cls(**self.kwargs)


def protocol_problems(cls: Any) -> list[str]:
    """What ``cls`` lacks of the model protocol (docs/MODELS.md); empty when it has it all."""
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        return [f"{cls!r} is not a torch.nn.Module subclass"]
    problems = []
    fmt = getattr(cls, "fmt", None)
    if fmt not in FORMATS:
        problems.append(f"class attribute fmt = {fmt!r}, expected one of {', '.join(FORMATS)}")
    if cls.forward is nn.Module.forward:
        problems.append("no forward(batch) -> logits")
    cached = getattr(cls, "supports_cache", True)
    missing = [m for m in ("start", "step") if not callable(getattr(cls, m, None))]
    if cached and missing:
        problems.append(
            f"no {' / '.join(missing)} for cached decoding: define start(batch) and "
            "step(cache, token, pos), or set supports_cache = False (full re-decoding, slower)"
        )
    return problems


def _class(name: str, class_path: str | None) -> type[nn.Module]:
    key = f"models.{name}.class"
    if class_path is None:
        if name not in REGISTRY:
            raise ModelError(
                f"model '{name}' is not built in ({', '.join(REGISTRY)}): give its class, "
                f'config key \'{key}\': "package.module:Class" or "path/to/file.py:Class"'
            )
        return REGISTRY[name]
    if name in REGISTRY:
        raise ModelError(
            f"config key '{key}': '{name}' is a built-in model; give your class another name"
        )
    try:
        cls = load_object(class_path, key)
    except PluginError as e:
        raise ModelError(str(e)) from None
    problems = protocol_problems(cls)
    if problems:
        raise ModelError(
            f"config key '{key}' {class_path!r} lacks the model protocol (docs/MODELS.md): "
            + "; ".join(problems)
        )
    return cls


def resolve_model(
    name: str, model_cfg: dict[str, Any], class_path: str | None = None, where: str | None = None
) -> ModelSpec:
    """Check that ``model_cfg`` (the block's constructor arguments) gives a working model;
    ``where`` names the block in errors (default: the config's ``models.<name>``)."""
    cls = _class(name, class_path)
    where = where or f"config block 'models.{name}'"
    try:
        inspect.signature(cls).bind(**model_cfg)
    except TypeError as e:
        params = ", ".join(
            p.name for p in inspect.signature(cls).parameters.values() if p.kind != p.VAR_KEYWORD
        )
        raise ModelError(f"{where} does not fit {cls.__name__}({params}): {e}") from None
    return ModelSpec(name, cls, dict(model_cfg), class_path)


SIZE_TOLERANCE = 0.05  # the paper matched its models to ~1.7M parameters; beyond +-5%: flagged


def size_flags(
    counts: Mapping[str, int], reference: str = "champion", tolerance: float = SIZE_TOLERANCE
) -> dict[str, str]:
    """``{model: line}`` for each model whose parameter count is more than ``tolerance`` off
    ``counts[reference]`` (nothing when the reference is absent: no size to match)."""
    base = counts.get(reference)
    if not base:
        return {}
    flags = {}
    for name, n in counts.items():
        ratio = n / base - 1.0
        if abs(ratio) > tolerance:
            flags[name] = (
                f"{name} is not size-matched: {n:,} parameters, {ratio:+.1%} of the "
                f"{reference}'s {base:,} (more than +-{tolerance:.0%}); part of any difference "
                "may be capacity, not architecture"
            )
    return flags


# The rung options (docs/MODELS.md, "The paper's ablation ladder"): a label for each value that
# is not the constructor's default, shown wherever the model appears (reports, the audit)
OPTION_LABELS: dict[str, dict[Any, str]] = {
    "positions": {"grid2d": "Grid2D positions from each token's real (row, col)",
                  "grid2d_flat": "Grid2D positions from the flat index against a 30-wide table "
                                 "(bug 3 of the original, on purpose)"},
    "init": {"xavier": "Xavier-uniform init of every >= 2-D parameter (the original's)"},
    "embed_scale": {True: "token embedding x sqrt(d_model)"},
    "embedding": {"perminv_table": "the original's PermInv lookup table (not colour-invariant)"},
    "table_init": {"kaiming_a0": "its table Kaiming-uniform a=0 (not the original's a=sqrt(5))"},
    "loss_over": {"sequence": "loss and accuracy over the whole [input] SEP [output] sequence "
                              "(the original's other decoder-only measurement)"},
}  # fmt: skip


def option_labels(model_cfg: Mapping[str, Any]) -> list[str]:
    """What the rung options of a model block change from the defaults, one label each."""
    return [
        labels[model_cfg[key]]
        for key, labels in OPTION_LABELS.items()
        if key in model_cfg and model_cfg[key] in labels
    ]


def rung_options(
    name: str, model_cfg: dict[str, Any], class_path: str | None = None
) -> dict[str, Any]:
    """The rung options (:data:`OPTION_LABELS`' keys and ``dropout``) a model block runs with,
    its constructor's defaults filled in: what the provenance audit lists."""
    spec = resolve_model(name, model_cfg, class_path)
    bound = inspect.signature(spec.cls).bind(**spec.kwargs)
    bound.apply_defaults()
    out = {k: v for k, v in bound.arguments.items() if k in OPTION_LABELS or k == "dropout"}
    if out.get("embedding") != "perminv_table":
        out.pop("table_init", None)  # the table's init: nothing without the table
    return out


def build_model(
    name: str, model_cfg: dict[str, Any], class_path: str | None = None, where: str | None = None
) -> nn.Module:
    """Build model ``name`` from its ``models.<name>`` block (constructor arguments); ``where``
    names the block in errors (default: the config's ``models.<name>``)."""
    where = where or f"config block 'models.{name}'"
    spec = resolve_model(name, model_cfg, class_path, where)
    try:
        return spec.build()
    except (TypeError, ValueError, AssertionError, RuntimeError) as e:
        raise ModelError(f"{where} does not build: {e}") from e


LAYER_COUNT = re.compile(r"^n_(?:\w+_)?layers$")  # n_layers, n_encoder_layers, ...
MODULE_ELEMENTS = 1024  # a module's own memory (Python objects, ~4 KB measured) in elements


def model_elements(
    name: str, model_cfg: dict[str, Any], class_path: str | None = None, where: str | None = None
) -> int:
    """What building the model costs, from its block alone: parameters + buffers (the
    non-persistent position tables too) + :data:`MODULE_ELEMENTS` per module, counted on the
    meta device (nothing allocated). A layer count over 3 (``n_layers``, ``n_encoder_layers``,
    ...) is sized at 1, 2 and 3 layers and extrapolated when the cost is linear in it (every
    built-in's), so 20000 layers are sized in milliseconds; otherwise it is counted whole."""
    import torch

    def cost(cfg: dict[str, Any]) -> int:
        with torch.device("meta"):
            m = build_model(name, cfg, class_path, where)
        tensors = [*m.parameters(), *m.buffers()]
        return sum(t.numel() for t in tensors) + MODULE_ELEMENTS * sum(1 for _ in m.modules())

    big = {
        k: v for k, v in model_cfg.items()
        if LAYER_COUNT.match(k) and type(v) is int and v > 3
    }  # fmt: skip
    base = {**model_cfg, **dict.fromkeys(big, 1)}
    one = cost(base)
    total = one
    for k, n in big.items():
        two, three = cost({**base, k: 2}), cost({**base, k: 3})
        if three - two != two - one:  # not linear in this count: size it whole
            return cost(model_cfg)
        total += (two - one) * (n - 1)
    return total


__all__ = [
    "FORMATS",
    "OPTION_LABELS",
    "REGISTRY",
    "SIZE_TOLERANCE",
    "ModelError",
    "ModelSpec",
    "build_model",
    "count_parameters",
    "model_elements",
    "option_labels",
    "protocol_problems",
    "resolve_model",
    "rung_options",
    "size_flags",
]
