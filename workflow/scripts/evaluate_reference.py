"""Snakemake binding: evaluate the champion reference, whichever way it is given."""

import json
import sys
from pathlib import Path

sys.stdout = sys.stderr = open(snakemake.log[0], "w", buffering=1)

import torch  # noqa: E402

from arctax.evaluation.reference import evaluate_reference  # noqa: E402
from arctax.settings import Settings  # noqa: E402

torch.set_num_threads(snakemake.threads)

ref = json.loads(snakemake.params.reference)
print(f"reference given by champion.{ref['way']}: {snakemake.input.ref} ({ref['detail']})")
evaluate_reference(
    Settings.of(snakemake.config),
    ref,
    snakemake.input.ref,
    Path(snakemake.input.data[0]).parent,
    Path(snakemake.output.summary).parent,
    snakemake.params.label,
)
