"""Answering under augmented views and voting: how the strongest ARC systems pick two attempts.

A task is seen through N *views*: view 0 is the task itself, the others apply one dihedral
transform and one colour permutation (0 fixed) to every grid of the task alike (or, without
colours, the dihedral transforms alone: at most 8 views). Each view's
answer is mapped back through the view's exact inverse; identical answers pool their votes;
attempt 1 and 2 are the two most voted answers (ARC's pass@2). Ties go to the answer first
produced in view order (view 0 first), so the result never depends on anything but the votes.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np

from arctax.data.augment import N_DIHEDRAL, Augmentation, random_augmentation

Grid = np.ndarray


def task_views(n: int, seed: int, task_id: str, colours: bool = True) -> list[Augmentation]:
    """``n`` views of a task: the identity, then distinct seeded augmentations (per task).

    ``colours=False``: dihedral transforms only (colours kept), at most the 8 there are.
    """
    rng = np.random.default_rng([seed, zlib.crc32(task_id.encode())])
    views = [Augmentation()]
    if not colours:
        rest = [int(d) for d in rng.permutation(np.arange(1, N_DIHEDRAL))]
        return views + [Augmentation(d) for d in rest[: max(0, n - 1)]]
    seen = {(0, tuple(range(10)))}
    while len(views) < n:
        aug = random_augmentation(rng)
        key = (aug.dihedral, tuple(int(c) for c in aug.perm))
        if key not in seen:
            seen.add(key)
            views.append(aug)
    return views


def vote(answers: Sequence[Grid | None], top: int = 2) -> list[Grid]:
    """The ``top`` most frequent answers (``None`` abstains), ties broken by first appearance."""
    counts: dict[tuple, list] = {}
    for g in answers:
        if g is None:
            continue
        g = np.asarray(g)
        key = (g.shape, g.tobytes())
        if key not in counts:
            counts[key] = [0, len(counts), g]
        counts[key][0] += 1
    ranked = sorted(counts.values(), key=lambda c: (-c[0], c[1]))
    return [c[2] for c in ranked[:top]]


def voted_attempts(answers: Sequence[Grid | None], attempts: int) -> list[Grid | None]:
    """Attempts for a submission: the top ``attempts`` voted answers (``None`` if none)."""
    best = vote(answers, attempts)
    return best + [None] * (attempts - len(best)) if best else [None] * attempts
