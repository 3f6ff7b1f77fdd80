"""Snakemake binding: train one model x seed (resumes from params.state after a stop)."""

from pathlib import Path

import torch

from arctax.training.train import attach_log, train

attach_log(snakemake.log[0], snakemake.params.state)

torch.set_num_threads(snakemake.threads)

train(
    snakemake.config,
    snakemake.wildcards.model,
    int(snakemake.wildcards.seed),
    Path(snakemake.input.data[0]).parent,
    Path(snakemake.output.best).parent,
    snakemake.params.state,
)
