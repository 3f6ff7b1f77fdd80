"""Snakemake binding: smoke-test one model; fail the job if any check fails."""

import sys
from pathlib import Path

sys.stdout = sys.stderr = open(snakemake.log[0], "w", buffering=1)

from arctax.training.smoke import format_table, smoke_test  # noqa: E402

data_dir = Path(snakemake.input[0]).parent
report = smoke_test(snakemake.config, data_dir, snakemake.output[0], [snakemake.wildcards.model])
print(format_table(report))
if not report["ok"]:
    Path(snakemake.output[0]).unlink()  # a failed smoke test leaves no output behind
    sys.exit(f"smoke test failed; see the table above ({snakemake.log[0]})")
