"""Snakemake binding: greedy-decode the test split with one checkpoint and score it (as the
job's one writer: a second copy of the job waits, then adopts; arctax.lifecycle)."""

import sys
from pathlib import Path

sys.stdout = sys.stderr = open(snakemake.log[0], "w", buffering=1)

import torch  # noqa: E402

from arctax.evaluation.evaluate import evaluate  # noqa: E402
from arctax.layout import study  # noqa: E402
from arctax.lifecycle import one_writer  # noqa: E402
from arctax.settings import Settings  # noqa: E402

torch.set_num_threads(snakemake.threads)
s = Settings.of(snakemake.config)

one_writer(
    study(s).state("evaluate", **snakemake.wildcards),
    "evaluation",
    snakemake.output,
    lambda: evaluate(
        s,
        snakemake.input.ckpt,
        Path(snakemake.input.data[0]).parent,
        Path(snakemake.output.summary).parent,
        snakemake.params.label,
        int(snakemake.params.seed),
    ),
)
