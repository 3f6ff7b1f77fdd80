"""Issue 36: a hostile file costs nothing. Every crafted file of tests/hostile/cases.py is
read by the ``arctax`` command that would meet it, in a forked child under an address-space
rlimit and an alarm (tests/hostile/forkserver.py): it must exit non-zero with ONE line naming
the file (no traceback), stay under 500 MB above the interpreter and a few seconds, and write
nothing at all (no partial output, nothing outside results/<run>/)."""

from __future__ import annotations

import pytest

from tests.hostile import cases as table
from tests.hostile.harness import MEM_BOUND_MB, TIME_BOUND_S, ForkServer, snapshot


@pytest.fixture(scope="session")
def hostile(tmp_path_factory, tiny_data):
    """The crafted files (built once) and the fork server that runs every case."""
    root = tmp_path_factory.mktemp("hostile")
    cases = {c.name: c for c in table.build(root, tiny_data)}
    server = ForkServer()
    yield root, cases, server
    server.close()


def _names() -> list[str]:
    import ast
    import inspect

    src = inspect.getsource(table.build)  # the case names, without building the files
    return [
        n.args[0].value
        for n in ast.walk(ast.parse(src))
        if isinstance(n, ast.Call) and n.args and isinstance(n.args[0], ast.Constant)
        and isinstance(n.args[0].value, str)
        and getattr(n.func, "id", getattr(n.func, "attr", "")) in ("evaluate", "score", "prepare", "Case")
    ]  # fmt: skip


@pytest.mark.parametrize("name", _names())
def test_a_hostile_file_costs_nothing(hostile, name):
    root, cases, server = hostile
    case = cases[name]
    before = snapshot(root)
    got = server.run(case.argv, root / "work")
    lines = got.lines(case.stream)
    assert got.rc == case.rc, f"exit {got.rc}: {got.stderr[-2000:]}"
    assert len(lines) == 1 and "Traceback" not in got.stderr, got.stderr[-2000:]
    assert case.says in lines[0], lines[0]
    paths = [a.split("=", 1)[-1] for a in case.argv if "/" in a]
    path_named = any(p in lines[0] for p in paths) or "config key" in lines[0]
    assert path_named, lines[0]  # the line names the file (or the config key)
    assert got.peak_mb < MEM_BOUND_MB, f"{got.peak_mb:.0f} MB above the interpreter"
    assert got.wall_s < TIME_BOUND_S, f"{got.wall_s:.1f} s"
    assert snapshot(root) == before  # nothing written: no partial output, nowhere


def test_every_case_of_the_table_is_run(hostile):
    """The parametrization reads the case names from cases.build's source: it sees them all."""
    _, cases, _ = hostile
    assert sorted(_names()) == sorted(cases) and len(cases) >= 40
