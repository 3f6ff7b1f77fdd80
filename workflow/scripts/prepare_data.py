"""Snakemake binding: build the data cache once for all models."""

import logging
import sys
from pathlib import Path

sys.stdout = sys.stderr = open(snakemake.log[0], "w", buffering=1)
logging.basicConfig(stream=sys.stderr, level=logging.INFO)

from arctax.data.prepare import prepare  # noqa: E402

manifest = prepare(snakemake.config, Path(snakemake.output.manifest).parent)
print({split: c["examples"] for split, c in manifest["counts"].items()}, "examples per split")
