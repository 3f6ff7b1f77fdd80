"""Snakemake binding: evaluate the champion reference, whichever way it is given (as the
job's one writer: a second copy of the job waits, then adopts; arctax.lifecycle)."""

import json
import sys
from pathlib import Path

sys.stdout = sys.stderr = open(snakemake.log[0], "w", buffering=1)

import torch  # noqa: E402

from arctax.evaluation.reference import evaluate_reference  # noqa: E402
from arctax.layout import study  # noqa: E402
from arctax.lifecycle import one_writer  # noqa: E402
from arctax.settings import Settings  # noqa: E402

torch.set_num_threads(snakemake.threads)
s = Settings.of(snakemake.config)

ref = json.loads(snakemake.params.reference)
print(f"reference given by champion.{ref['way']}: {snakemake.input.ref} ({ref['detail']})")
one_writer(
    study(s).state("evaluate_reference", **snakemake.wildcards),
    "evaluation",
    snakemake.output,
    lambda: evaluate_reference(
        s,
        ref,
        snakemake.input.ref,
        Path(snakemake.input.data[0]).parent,
        Path(snakemake.output.summary).parent,
        snakemake.params.label,
    ),
)
