"""Made-up generators with re-arc's interface (see README.md)."""

import random

from utils import grid, unifint


def generate_007bbfb7(diff_lb, diff_ub):
    """Mirror left-right: always verified."""
    g = grid(unifint(diff_lb, diff_ub, (1, 8)), unifint(diff_lb, diff_ub, (2, 8)))
    return {"input": g, "output": tuple(r[::-1] for r in g)}


def generate_00d62c1b(diff_lb, diff_ub):
    """Shift every colour by one; one call in ten returns a wrong output (unverified)."""
    g = grid(unifint(diff_lb, diff_ub, (2, 6)), unifint(diff_lb, diff_ub, (2, 6)))
    out = tuple(tuple((v + 1) % 10 for v in r) for r in g)
    if random.random() < 0.1:
        out = g[::-1]
    return {"input": g, "output": out}


def generate_017c7c7b(diff_lb, diff_ub):
    """Transpose; one call in ten raises, one in ten is square-symmetric (degenerate)."""
    u = random.random()
    if u < 0.1:
        raise ValueError("no room for the pattern")
    n = unifint(diff_lb, diff_ub, (2, 5))
    g = grid(n, unifint(diff_lb, diff_ub, (2, 5)))
    if u < 0.2:
        g = tuple(tuple(g[min(i, j)][max(i, j)] for j in range(n)) for i in range(n))
    return {"input": g, "output": tuple(zip(*g, strict=True))}


def generate_025d127b(diff_lb, diff_ub):
    """Flip upside down; one call in twenty returns a list, not a grid (invalid)."""
    g = grid(unifint(diff_lb, diff_ub, (2, 7)), unifint(diff_lb, diff_ub, (1, 7)))
    if random.random() < 0.05:
        return {"input": [list(r) for r in g], "output": "oops"}
    return {"input": g, "output": g[::-1]}


def generate_045e512c(diff_lb, diff_ub):
    """Colour a 1x1 grid: 9 distinct inputs, one degenerate (5 -> 5): 9 or more run out."""
    v = random.randint(1, 9)
    return {"input": ((v,),), "output": ((10 - v,),)}
