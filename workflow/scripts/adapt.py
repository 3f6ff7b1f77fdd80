"""Snakemake binding: adapt and answer one shard of test tasks (resumes after a retry)."""

import sys

sys.stdout = sys.stderr = open(snakemake.log[0], "a", buffering=1)

from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from arctax.adaptation.run import adapt_shard  # noqa: E402
from arctax.settings import Settings  # noqa: E402

torch.set_num_threads(snakemake.threads)

adapt_shard(
    Settings.of(snakemake.config),
    snakemake.input.ckpt,
    Path(snakemake.input.data[0]).parent,
    int(snakemake.wildcards.shard),
    int(snakemake.wildcards.n),
    snakemake.output[0],
    snakemake.params.state,
)
