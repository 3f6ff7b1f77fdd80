"""Snakemake binding: generate one shard of re-arc tasks (a retried job resumes per task)."""

import sys

sys.stdout = sys.stderr = open(snakemake.log[0], "a", buffering=1)

from arctax.data import rearc_generate as rg  # noqa: E402

rearc = snakemake.config["data"]["rearc"]
ids = rg.task_ids(rearc["repo"], rearc["tasks"])
mine = rg.shard_ids(ids, int(snakemake.wildcards.shard), int(snakemake.wildcards.n))
record = rg.generate_shard(
    rearc["repo"], mine, rg.settings(snakemake.config), snakemake.params.state, snakemake.output[0]
)
print(f"{len(mine)} tasks ({len(record['resumed'])} resumed) in {record['seconds']} s")
