"""Snakemake binding: one smoke table for the three models."""

import sys

sys.stdout = sys.stderr = open(snakemake.log[0], "w", buffering=1)

from arctax.training.smoke import format_table, merge_reports  # noqa: E402

print(format_table(merge_reports(list(snakemake.input), snakemake.output[0])))
