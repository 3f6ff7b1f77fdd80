"""Snakemake binding: the shards' tasks as one folder in re-arc's layout, with statistics."""

import json
import sys

sys.stdout = sys.stderr = open(snakemake.log[0], "w", buffering=1)

from arctax.data.rearc_generate import gather  # noqa: E402

generation = gather(list(snakemake.input), snakemake.params.state, snakemake.output[0])
print(json.dumps({k: v for k, v in generation.items() if k != "outcomes"}, indent=2))
