"""Which test tasks the adaptation stage covers and how they split into jobs (no torch: the
workflow uses this when it plans the shards)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from arctax.settings import Adapt


def adapted_task_ids(task_ids: Sequence[str], acfg: Adapt) -> list[str]:
    """The test tasks the stage adapts: all, or the first ``adapt.max_tasks`` by id."""
    ids = sorted(task_ids)
    n = acfg.max_tasks
    return ids[:n] if n else ids


def n_shards(n_tasks: int, acfg: Adapt) -> int:
    """How many jobs (shards) the adapted tasks make: ``ceil(n / adapt.tasks_per_job)``."""
    n = min(n_tasks, acfg.max_tasks or n_tasks)
    return max(1, math.ceil(n / acfg.tasks_per_job))


def shard_task_ids(task_ids: Sequence[str], acfg: Adapt, shard: int, n: int) -> list[str]:
    """The contiguous block of adapted tasks that shard ``shard`` of ``n`` handles."""
    ids = adapted_task_ids(task_ids, acfg)
    per = math.ceil(len(ids) / n)
    return ids[shard * per : (shard + 1) * per]
