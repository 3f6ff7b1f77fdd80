"""re-arc's utils interface: `rng` records every difficulty draw of an example."""

import random

rng = []


def unifint(diff_lb, diff_ub, bounds):
    """An integer in ``bounds`` at a random difficulty between ``diff_lb`` and ``diff_ub``."""
    a, b = bounds
    d = random.uniform(diff_lb, diff_ub)
    rng.append(d)
    return min(max(a, round(a + (b - a) * d)), b)


def grid(h, w):
    """A random grid as re-arc makes them: a tuple of tuples of colours."""
    return tuple(tuple(random.randint(0, 9) for _ in range(w)) for _ in range(h))
