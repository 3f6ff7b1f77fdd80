"""Augmentations: 8 distinct dihedral transforms, colour 0 fixed, exact inverses."""

import numpy as np

from arctax.data.augment import Augmentation, dihedral, random_augmentation


def test_eight_distinct_dihedral_transforms():
    g = np.arange(6).reshape(2, 3)
    outs = {dihedral(g, k).tobytes() + bytes(dihedral(g, k).shape) for k in range(8)}
    assert len(outs) == 8


def test_inverse_of_every_transform_and_random_perms(arc1):
    rng = np.random.default_rng(0)
    for task in list(arc1[0])[:40]:
        g = np.array(task.train[0][0])
        for k in range(8):
            aug = Augmentation(k, random_augmentation(rng).perm)
            assert np.array_equal(aug.invert(aug.apply(g)), g)


def test_colour_permutation_fixes_background():
    rng = np.random.default_rng(1)
    for _ in range(50):
        a = random_augmentation(rng)
        assert a.perm[0] == 0 and sorted(a.perm) == list(range(10))


def test_deterministic_under_seed():
    a = [random_augmentation(np.random.default_rng(7)) for _ in range(2)]
    assert a[0].dihedral == a[1].dihedral and np.array_equal(a[0].perm, a[1].perm)
