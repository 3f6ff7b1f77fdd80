"""Generated ARC task families with a known rule: the test bed of the adaptation and ladder
benchmarks and of the positive control (``make demo-control``).

A *family* is one grid rule; a task of a family is ``n_demos`` demonstration pairs plus one
test pair on small random grids. Three conditions test adaptation (``experiments/bench_adapt_science.py``):

- ``in_distribution``: the rules the models were trained on (``TRAINED``): ``flip`` (mirror
  left-right, geometric), ``gravity`` (every cell falls to the bottom of its column, object)
  and ``swap`` (the grid's two colours swap, colour);
- ``view_reachable``: a dihedral conjugate ``g f g^-1`` of a trained rule (``flip_ud``,
  ``gravity_up``, ``gravity_left``, ``gravity_right``): under the view ``g^-1`` the task *is*
  the trained rule, so voting over dihedral views can reach it without any learning;
- ``new_rule``: ``colour_map``, a per-task colour mapping (each task draws its own mapping of
  three colours to three others): no view turns it into a trained rule, only the
  demonstrations tell it. It is a *near* new rule: a copy that recolours, a cousin of ``swap``;
- ``far_rule``: rules of a kind never trained and that no view reaches: ``transpose`` (a
  reflection across the diagonal: dihedral views conjugate a left-right flip only into flips,
  never into a transpose, and the output changes shape), ``shift`` (every row rotated one cell
  to the right: a translation, no trained rule moves cells), ``copy`` (the output is the
  input: the models only ever saw outputs that differ from their inputs) and ``frame`` (the
  grid's border cells painted in a colour each task draws: a drawing rule, no trained rule
  adds cells).

Everything is seeded: ``make_task(family, rng)`` draws from the generator it is given.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from arctax.io import atomic_write_text

Grid = np.ndarray
Pair = tuple[Grid, Grid]

TRAINED = ("flip", "gravity", "swap")
VIEW_REACHABLE = ("flip_ud", "gravity_up", "gravity_left", "gravity_right")
NEW_RULE = ("colour_map",)
FAR_RULE = ("transpose", "shift", "copy", "frame")
CONDITIONS = {
    "in_distribution": TRAINED,
    "view_reachable": VIEW_REACHABLE,
    "new_rule": NEW_RULE,
    "far_rule": FAR_RULE,
}


def _gravity_down(g: Grid) -> Grid:
    """Every non-zero cell falls to the bottom of its column, keeping the column's order."""
    out = np.zeros_like(g)
    for c in range(g.shape[1]):
        col = g[:, c][g[:, c] != 0]
        if col.size:
            out[-col.size :, c] = col
    return out


def _swap(g: Grid) -> Grid:
    a, b = sorted(set(np.unique(g).tolist()) - {0})
    out = g.copy()
    out[g == a], out[g == b] = b, a
    return out


def _frame(g: Grid, colour: int) -> Grid:
    """The grid with its border cells painted ``colour``."""
    out = g.copy()
    out[0, :], out[-1, :], out[:, 0], out[:, -1] = colour, colour, colour, colour
    return out


def _turned(k: int) -> Callable[[Grid], Grid]:
    """Gravity towards another side: gravity down seen through ``k`` quarter turns."""
    return lambda g: np.rot90(_gravity_down(np.rot90(g, k)), -k)


RULES: dict[str, Callable[[Grid], Grid]] = {
    "flip": np.fliplr,
    "flip_ud": np.flipud,
    "gravity": _gravity_down,
    "gravity_up": _turned(2),
    "gravity_left": _turned(1),
    "gravity_right": _turned(-1),
    "swap": _swap,
    "transpose": np.transpose,
    "shift": lambda g: np.roll(g, 1, axis=1),
    "copy": np.copy,
}


# Each trained rule has its own number of colours per grid (dihedral and colour views keep
# it), so the two ablations that see no demonstrations (encoder_decoder, decoder_only) can
# tell the rule from the test input alone; the shifted rules keep their family's count.
N_COLOURS = {"flip": 1, "flip_ud": 1, "gravity": 3, "gravity_up": 3, "gravity_left": 3,
             "gravity_right": 3, "swap": 2, "transpose": 2, "shift": 2, "copy": 2}  # fmt: skip


def _random_grid(rng: np.random.Generator, colours: list[int], lo: int, hi: int) -> Grid:
    h, w = (int(v) for v in rng.integers(lo, hi + 1, size=2))
    density = rng.uniform(0.3, 0.6)
    cells = rng.choice(colours, size=(h, w))
    return np.where(rng.random((h, w)) < density, cells, 0).astype(np.int64)


def _colours(rng: np.random.Generator, n: int) -> list[int]:
    return [int(c) for c in rng.choice(np.arange(1, 10), size=n, replace=False)]


def make_task(family: str, rng: np.random.Generator, n_demos: int = 3, lo: int = 3,
              hi: int = 5) -> dict[str, list[Pair]]:  # fmt: skip
    """One task of ``family``: ``n_demos`` demonstrations and one test pair (never trivial:
    every output differs from its input, but for ``copy``, whose output is its input)."""
    if family == "frame":
        paint, *pal = _colours(rng, 3)
        rule = lambda g: _frame(g, paint)  # noqa: E731
        per_grid = lambda: pal  # noqa: E731
    elif family == "colour_map":
        src = _colours(rng, 3)
        dst = [int(c) for c in rng.permutation([c for c in range(1, 10) if c not in src])[:3]]
        lut = np.arange(10)
        lut[src] = dst
        rule: Callable[[Grid], Grid] = lambda g: lut[g]  # noqa: E731
        per_grid = lambda: src  # noqa: E731
    else:
        rule = RULES[family]
        n = N_COLOURS[family]
        fixed = _colours(rng, n) if family == "swap" else None
        per_grid = lambda: fixed or _colours(rng, n)  # noqa: E731
    pairs: list[Pair] = []
    while len(pairs) < n_demos + 1:
        colours = per_grid()
        g = _random_grid(rng, colours, lo, hi)
        if not set(np.unique(g).tolist()) >= set(colours):
            continue  # every colour drawn shows in the grid
        y = np.ascontiguousarray(rule(g))
        if (family != "copy" and np.array_equal(y, g)) or not (g != 0).any():
            continue
        pairs.append((g, y))
    return {"train": pairs[:n_demos], "test": pairs[n_demos:]}


def write_task(path: Path, task: dict[str, list[Pair]]) -> None:
    """The task as ARC task JSON (``{"train": [{"input", "output"}], "test": [...]}``)."""
    obj = {k: [{"input": a.tolist(), "output": b.tolist()} for a, b in v] for k, v in task.items()}
    atomic_write_text(path, json.dumps(obj))


def test_rows(trained: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    """The test rows of a study trained on ``trained``: each trained rule alone, the dihedral
    conjugates of the trained ones (``view_reachable``) and the untrained rules only the
    demonstrations tell (``new_rule``)."""
    unknown = set(trained) - set(RULES) - set(NEW_RULE)
    if unknown:
        raise ValueError(f"unknown rules {sorted(unknown)}: known {', '.join([*RULES, *NEW_RULE])}")
    conj = tuple(f for f in VIEW_REACHABLE if f.split("_")[0] in trained)
    new = tuple(f for f in NEW_RULE if f not in trained)
    return {**{f: (f,) for f in trained}, **({"view_reachable": conj} if conj else {}),
            **({"new_rule": new} if new else {})}  # fmt: skip


def write_families(
    out: Path,
    train: dict[str, int],
    rows: dict[str, tuple[str, ...]],
    per_row: int,
    seed: int = 1,
    hi: int = 5,
) -> dict[str, int]:
    """Write a study's tasks as ARC task JSON: ``out/train/train-<rule>-<i>.json`` (``train``:
    tasks per rule, drawn with ``seed``), ``out/test/test-<row>-<i>.json`` (``per_row`` per row,
    cycling the row's rules, drawn with ``seed + 1``) on grids of 3..``hi`` a side, and
    ``out/labels.json`` (``{task_id: rule or row}``, a ``taxonomy.labels`` file). Returns the
    number of tasks written per split."""
    labels: dict[str, str] = {}
    plan = (("train", seed, {f: (f,) for f in train}, train),
            ("test", seed + 1, rows, dict.fromkeys(rows, per_row)))  # fmt: skip
    for split, s, groups, counts in plan:
        folder = Path(out) / split
        folder.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(s)
        for name, fams in groups.items():
            for i in range(counts[name]):
                tid = f"{split}-{name}-{i:03d}"
                write_task(folder / f"{tid}.json", make_task(fams[i % len(fams)], rng, hi=hi))
                labels[tid] = name
    atomic_write_text(Path(out) / "labels.json", json.dumps(labels, sort_keys=True))
    return {split: sum(v.startswith(split) for v in labels) for split in ("train", "test")}
