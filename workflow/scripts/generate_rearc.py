"""Snakemake binding: generate one shard of re-arc tasks (a retried job resumes per task)."""

import sys

sys.stdout = sys.stderr = open(snakemake.log[0], "a", buffering=1)

from arctax.data import rearc_generate as rg  # noqa: E402
from arctax.settings import Settings  # noqa: E402

s = Settings.of(snakemake.config)
rearc, wc = s.data.rearc_generation(), snakemake.wildcards
mine = rg.shard_ids(rg.task_ids(rearc.repo, rearc.tasks), int(wc.shard), int(wc.n))
record = rg.generate_shard(
    rearc.repo, mine, rearc, snakemake.params.state, snakemake.output[0],
    shard=f"{wc.shard}-of-{wc.n}", margin_s=s.trainer.save_margin_s,
)  # fmt: skip
print(f"{len(mine)} tasks ({len(record['resumed'])} resumed) in {record['seconds']} s")
