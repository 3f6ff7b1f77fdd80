"""Augmentations: the 8 dihedral transforms and colour permutations that fix 0 (background).

Each :class:`Augmentation` is applied identically to the context and query grids of an
example, and has an exact inverse (used to map a pass@2 answer back).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

N_DIHEDRAL = 8


def dihedral(grid: np.ndarray, k: int) -> np.ndarray:
    """Transform ``k`` in 0..7: ``k % 4`` quarter turns, then a left-right flip if ``k >= 4``."""
    g = np.rot90(grid, k % 4)
    return np.ascontiguousarray(np.fliplr(g) if k >= 4 else g)


def inverse_dihedral(grid: np.ndarray, k: int) -> np.ndarray:
    """Undo :func:`dihedral` ``k``."""
    g = np.fliplr(grid) if k >= 4 else grid
    return np.ascontiguousarray(np.rot90(g, -(k % 4)))


@dataclass(frozen=True)
class Augmentation:
    """A dihedral transform id and a colour permutation (``perm[c]`` is the new colour of ``c``)."""

    dihedral: int = 0
    perm: np.ndarray = field(default_factory=lambda: np.arange(10))

    def apply(self, grid: np.ndarray) -> np.ndarray:
        """Augment one grid."""
        return dihedral(np.asarray(self.perm)[grid], self.dihedral)

    def invert(self, grid: np.ndarray) -> np.ndarray:
        """Map an augmented grid back to the original frame and colours."""
        return np.argsort(self.perm)[inverse_dihedral(grid, self.dihedral)]

    @property
    def is_identity(self) -> bool:
        """True when the augmentation changes nothing."""
        return self.dihedral == 0 and bool(np.all(self.perm == np.arange(10)))


def random_augmentation(
    rng: np.random.Generator, dihedral: bool = True, colours: bool = True
) -> Augmentation:
    """Draw an augmentation: a random dihedral id and a permutation of colours 1..9."""
    k = int(rng.integers(N_DIHEDRAL)) if dihedral else 0
    perm = np.arange(10)
    if colours:
        perm[1:] = 1 + rng.permutation(9)
    return Augmentation(k, perm)
