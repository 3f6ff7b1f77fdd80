"""Made-up verifiers with re-arc's interface: the program that solves each task."""


def verify_007bbfb7(grid):
    return tuple(r[::-1] for r in grid)


def verify_00d62c1b(grid):
    return tuple(tuple((v + 1) % 10 for v in r) for r in grid)


def verify_017c7c7b(grid):
    return tuple(zip(*grid, strict=True))


def verify_025d127b(grid):
    return grid[::-1]


def verify_045e512c(grid):
    return tuple(tuple(10 - v for v in r) for r in grid)
