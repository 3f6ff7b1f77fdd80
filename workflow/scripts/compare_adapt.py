"""Snakemake binding: base vs voting vs adapted, per model, and the gap per category."""

import sys
from pathlib import Path

sys.stdout = sys.stderr = open(snakemake.log[0], "w", buffering=1)

from arctax.evaluation.adaptation_report import compare_adaptation  # noqa: E402
from arctax.settings import Eval  # noqa: E402

compare_adaptation(
    Eval.of(snakemake.config),
    snakemake.params.eval_dirs,
    snakemake.params.adapt_dirs,
    Path(snakemake.output.md).parent,
    snakemake.params.reference,
)
print(Path(snakemake.output.md).read_text())
