"""The client side of the hostile-input suite: one fork server per session (forkserver.py),
and what each case must show: a non-zero exit, one line naming the file, memory and time
under their bounds, and no file written anywhere under the suite's folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MEM_BOUND_MB = 500  # above the interpreter's own (the server's RSS when it forks)
TIME_BOUND_S = 5.0  # every refusal comes before any real work: milliseconds to a second
LIMIT_AS_MB = 2048  # the address-space rlimit: a runaway case fails instead of the machine
TIMEOUT_S = 30  # a hang ends here (SIGALRM) and fails its case


@dataclass(frozen=True)
class Outcome:
    """What one case did."""

    rc: int
    wall_s: float
    peak_mb: float
    stdout: str
    stderr: str

    def lines(self, stream: str = "stderr") -> list[str]:
        return [x for x in getattr(self, stream).splitlines() if x.strip()]


class ForkServer:
    """A running forkserver.py; :meth:`run` one case at a time."""

    def __init__(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("forkserver.py"))],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=REPO,
        )  # fmt: skip

    def run(self, argv: list[str], cwd: Path) -> Outcome:
        req = {"argv": argv, "cwd": str(cwd), "mem_mb": LIMIT_AS_MB, "timeout_s": TIMEOUT_S}
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the fork server died")
        return Outcome(**json.loads(line))

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.wait(timeout=30)


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under ``root``: path -> (size, mtime_ns); links not followed."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            out[os.path.relpath(p, root)] = (st.st_size, st.st_mtime_ns)
    return out
