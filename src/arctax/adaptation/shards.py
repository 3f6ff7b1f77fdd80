"""Which test tasks the adaptation stage covers and how they split into jobs (no torch: the
workflow uses this when it plans the shards)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any


def adapted_task_ids(task_ids: Sequence[str], acfg: Mapping[str, Any]) -> list[str]:
    """The test tasks the stage adapts: all, or the first ``adapt.max_tasks`` by id."""
    ids = sorted(task_ids)
    n = acfg.get("max_tasks")
    return ids[:n] if n else ids


def n_shards(n_tasks: int, acfg: Mapping[str, Any]) -> int:
    """How many jobs (shards) the adapted tasks make: ``ceil(n / adapt.tasks_per_job)``."""
    n = min(n_tasks, acfg.get("max_tasks") or n_tasks)
    return max(1, math.ceil(n / int(acfg["tasks_per_job"])))


def shard_task_ids(
    task_ids: Sequence[str], acfg: Mapping[str, Any], shard: int, n: int
) -> list[str]:
    """The contiguous block of adapted tasks that shard ``shard`` of ``n`` handles."""
    ids = adapted_task_ids(task_ids, acfg)
    per = math.ceil(len(ids) / n)
    return ids[shard * per : (shard + 1) * per]
