"""Snakemake binding: build the training data (train/val) once for all models."""

import logging
import sys
from pathlib import Path

sys.stdout = sys.stderr = open(snakemake.log[0], "w", buffering=1)
logging.basicConfig(stream=sys.stderr, level=logging.INFO)

from arctax.data.prepare import prepare_training  # noqa: E402
from arctax.settings import Settings  # noqa: E402

s = Settings.of(snakemake.config)
generated = snakemake.input[0] if len(snakemake.input) else None  # data.source: rearc
out = Path(snakemake.output.manifest).parent
manifest = prepare_training(s.data, s.taxonomy, out, generated)
print({split: c["examples"] for split, c in manifest["counts"].items()}, "examples per split")
