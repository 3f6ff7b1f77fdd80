"""Snakemake binding: one model through its training path; fail the job if any check fails.

With trainer.devices N > 1, Lightning re-runs this script for ranks 1..N-1 (as for train):
rank r > 0 logs to <log>.rank<r> and writes nothing.
"""

import sys
from pathlib import Path

from arctax.training.ranks import process_rank

rank = process_rank()
log = snakemake.log[0] + (f".rank{rank}" if rank else "")
sys.stdout = sys.stderr = open(log, "w", buffering=1)

from arctax.settings import Settings  # noqa: E402
from arctax.training.smoke import format_table, smoke_test  # noqa: E402

data_dir = Path(snakemake.input[0]).parent
report = smoke_test(
    Settings.of(snakemake.config), data_dir, snakemake.output[0], [snakemake.wildcards.model]
)
print(format_table(report))
if rank == 0 and not report["ok"]:
    Path(snakemake.output[0]).unlink()  # a failed smoke test leaves no output behind
    sys.exit(f"smoke test failed; see the table above ({snakemake.log[0]})")
