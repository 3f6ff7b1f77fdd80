"""Snakemake binding: compare every model with the champion reference on one test set."""

import json
import sys
from pathlib import Path

sys.stdout = sys.stderr = open(snakemake.log[0], "w", buffering=1)

from arctax.evaluation.compare import compare  # noqa: E402
from arctax.settings import Eval  # noqa: E402

result = compare(
    Eval.of(snakemake.config),
    json.loads(snakemake.params.eval_dirs),
    snakemake.params.train_dirs,
    Path(snakemake.output.summary_md).parent,
    snakemake.params.reference,
    adaptation=snakemake.params.adaptation,
    test_source=snakemake.params.test_source,
)
print(Path(snakemake.output.summary_md).read_text())
