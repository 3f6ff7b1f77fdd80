"""Snakemake binding: build one test set, checked against the training data."""

import logging
import sys
from pathlib import Path

sys.stdout = sys.stderr = open(snakemake.log[0], "w", buffering=1)
logging.basicConfig(stream=sys.stderr, level=logging.INFO)

from arctax.data.prepare_test import prepare_test_set  # noqa: E402
from arctax.settings import Settings  # noqa: E402

s = Settings.of(snakemake.config)
manifest = prepare_test_set(
    s.data,
    s.taxonomy,
    snakemake.wildcards.test_set,
    Path(snakemake.output.manifest).parent,
    Path(snakemake.input.training).parent,
)
print(
    f"test set {snakemake.wildcards.test_set}: {manifest['counts']['test']} ({manifest['source']})"
)
print(f"left out whole: {len(manifest['test_left_out'])} task(s)")
