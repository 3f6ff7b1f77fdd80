"""Snakemake binding: train one model x seed (resumes from params.state after a stop).

With trainer.devices N > 1, Lightning re-runs this script (Snakemake's temp copy of it) for
ranks 1..N-1; each rank logs to its own files (attach_log) and only rank 0 writes outputs.
"""

from pathlib import Path

import torch

from arctax.settings import Settings
from arctax.training.train import attach_log, train

attach_log(snakemake.log[0], snakemake.params.state)

torch.set_num_threads(snakemake.threads)

train(
    Settings.of(snakemake.config),
    snakemake.wildcards.model,
    int(snakemake.wildcards.seed),
    Path(snakemake.input.data[0]).parent,
    Path(snakemake.output.best).parent,
    snakemake.params.state,
    smoke_report=snakemake.input.smoke,
)
