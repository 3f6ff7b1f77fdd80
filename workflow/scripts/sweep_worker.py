"""Snakemake binding: one worker of a model's study (exit 75 when stopped: retry goes on)."""

from pathlib import Path

import torch

from arctax.search.worker import run_worker
from arctax.settings import Settings
from arctax.training.logs import attach_log

state = Path(snakemake.params.state)
attach_log(snakemake.log[0], state / f"worker{snakemake.wildcards.worker}")

torch.set_num_threads(snakemake.threads)

run_worker(
    Settings.of(snakemake.config),
    snakemake.wildcards.model,
    Path(snakemake.input.data[0]).parent,
    Path(snakemake.params.sweep_dir),
    int(snakemake.wildcards.worker),
    record_path=snakemake.output.record,
    state_dir=state,
)
