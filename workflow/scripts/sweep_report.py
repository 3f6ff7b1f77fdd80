"""Snakemake binding: a study's trials.csv, best.yaml and plots."""

import sys

sys.stdout = sys.stderr = open(snakemake.log[0], "w", buffering=1)

from arctax.search.report import write_report  # noqa: E402
from arctax.settings import Settings  # noqa: E402

out = snakemake.output
result = write_report(
    Settings.of(snakemake.config),
    snakemake.wildcards.model,
    snakemake.params.sweep_dir,
    out.trials,
    out.best,
    out.history,
    out.importances,
    out.parallel,
)
print(f"{result['finished']} finished trials; best: {result['best']}")
