"""Snakemake binding: train a stand-in champion reference (never the user's file)."""

import os
from pathlib import Path

import torch

from arctax.settings import Settings
from arctax.training.ranks import process_rank
from arctax.training.train import attach_log, train

attach_log(snakemake.log[0], snakemake.params.state)

torch.set_num_threads(snakemake.threads)

out = Path(snakemake.output.best).parent
train(
    Settings.of(snakemake.config),
    "champion",
    int(snakemake.params.seed),
    Path(snakemake.input.data[0]).parent,
    out,
    snakemake.params.state,
    smoke_report=snakemake.input.smoke,
)
if process_rank() == 0:  # under DDP rank 0 alone wrote the outputs
    os.replace(out / "best.ckpt", snakemake.output.best)
    print("bootstrapped here, not the original Trial 69 weights:", snakemake.output.best)
