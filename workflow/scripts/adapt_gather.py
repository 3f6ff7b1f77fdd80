"""Snakemake binding: score one adapted run's shards as three rows: the base model's own two
attempts (no voting), +vote and +adapt."""

import sys
from pathlib import Path

sys.stdout = sys.stderr = open(snakemake.log[0], "w", buffering=1)

from arctax.adaptation.run import gather  # noqa: E402
from arctax.settings import Settings  # noqa: E402

tag = snakemake.params.tag
out = gather(
    Settings.of(snakemake.config),
    list(snakemake.input.shards),
    Path(snakemake.input.data[0]).parent,
    Path(snakemake.output.vote).parent,
    Path(snakemake.output.adapt).parent,
    snakemake.params.label,
    int(tag.removeprefix("seed")) if tag.startswith("seed") else None,
    base_dir=Path(snakemake.output.base).parent,
)
for kind, table in out.items():
    print(kind, "grid acc (queries):", table["grid_correct"].mean())
