"""Snakemake binding: train a stand-in champion reference (never the user's file)."""

import os
import sys
from pathlib import Path

sys.stdout = sys.stderr = open(snakemake.log[0], "a", buffering=1)

import torch  # noqa: E402

from arctax.training.train import train  # noqa: E402

torch.set_num_threads(snakemake.threads)

out = Path(snakemake.output.best).parent
train(
    snakemake.config,
    "champion",
    int(snakemake.params.seed),
    Path(snakemake.input.data[0]).parent,
    out,
    snakemake.params.state,
)
os.replace(out / "best.ckpt", snakemake.output.best)
print("bootstrapped here, not the original Trial 69 weights:", snakemake.output.best)
