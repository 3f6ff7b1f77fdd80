"""Snakemake binding: train one model x seed (resumes from params.state after a stop)."""

import sys
from pathlib import Path

sys.stdout = sys.stderr = open(snakemake.log[0], "a", buffering=1)  # append: keep earlier attempts

import torch  # noqa: E402

from arctax.training.train import train  # noqa: E402

torch.set_num_threads(snakemake.threads)

train(
    snakemake.config,
    snakemake.wildcards.model,
    int(snakemake.wildcards.seed),
    Path(snakemake.input.data[0]).parent,
    Path(snakemake.output.best).parent,
    snakemake.params.state,
)
