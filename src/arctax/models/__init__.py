"""The three models and their registry: ``build_model(name, model_cfg)``."""

from __future__ import annotations

from typing import Any

from torch import nn

from arctax.models.champion import Champion
from arctax.models.decoder_only import DecoderOnly
from arctax.models.encoder_decoder import EncoderDecoder
from arctax.models.layers import count_parameters

REGISTRY: dict[str, type[nn.Module]] = {
    "champion": Champion,
    "encoder_decoder": EncoderDecoder,
    "decoder_only": DecoderOnly,
}


def build_model(name: str, model_cfg: dict[str, Any]) -> nn.Module:
    """Build model ``name`` from its ``models.<name>`` config block."""
    if name not in REGISTRY:
        raise ValueError(f"unknown model '{name}'; expected one of {', '.join(REGISTRY)}")
    try:
        return REGISTRY[name](**model_cfg)
    except TypeError as e:
        raise ValueError(f"config block 'models.{name}' does not fit the model: {e}") from e


__all__ = ["REGISTRY", "build_model", "count_parameters"]
