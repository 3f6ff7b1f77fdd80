"""Print the hostile-input table (case, issue case, bound, observed memory and time, the one
line), as the suite runs it: ``python -m tests.hostile.table`` (``make hostile-table``).

Each case runs in a forked child of one server that has imported arctax and torch (its memory
is the child's peak RSS above the server's); the figures are one run's, on this machine.
"""

from __future__ import annotations

import platform
import tempfile
import time
from pathlib import Path

from arctax.settings import load_settings
from tests.conftest import prepared, tiny_overrides
from tests.hostile import cases as table
from tests.hostile.harness import ForkServer


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        prepared(load_settings(overrides=tiny_overrides()), root / "data")
        t0 = time.perf_counter()
        cases = table.build(root / "h", root / "data")
        built = time.perf_counter() - t0
        server = ForkServer()
        print(f"machine: {platform.machine()}, {platform.python_implementation()} "
              f"{platform.python_version()}; crafted files built in {built:.1f} s\n")  # fmt: skip
        print("| case | issue | bound | peak above interpreter | time | exit | the one line |")
        print("|---|---|---|---|---|---|---|")
        for case in cases:
            got = server.run(case.argv, root / "h" / "work")
            line = (got.lines(case.stream) or [""])[0].replace(str(root / "h" / "in"), "…")
            line = line.replace("|", "\\|")
            if len(line) > 160:
                line = line[:157] + "..."
            print(f"| {case.name} | {case.issue} | {case.bound} | {max(got.peak_mb, 0):.0f} MB | "
                  f"{got.wall_s * 1000:.0f} ms | {got.rc} | {line} |")  # fmt: skip
        server.close()


if __name__ == "__main__":
    main()
