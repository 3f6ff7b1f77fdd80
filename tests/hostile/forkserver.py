"""A fork server for the hostile-input suite: imports arctax (and torch) once, then runs each
case in a forked child under an address-space rlimit and an alarm, and reports its exit code,
output, wall time and peak memory above the server's own (``wait4``'s ``ru_maxrss``).

Protocol: one JSON request a line on stdin (``argv``, ``cwd``, ``mem_mb``, ``timeout_s``), one
JSON answer a line on stdout. Nothing of torch runs in the server before a fork, so a child
never inherits a thread pool it cannot use.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sys
import tempfile
import time
import traceback

import torch  # imported once, here: a child's memory excludes it

import arctax.cli as cli
import arctax.data.prepare
import arctax.evaluation.compare
import arctax.evaluation.evaluate
import arctax.evaluation.reference  # noqa: F401


def _status(field: str) -> int:
    """``VmRSS`` / ``VmSize`` of this process, in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(field)


def _read(path: str) -> str:
    with open(path, errors="replace") as f:
        return f.read()


def _child(req: dict, out: str, err: str) -> None:
    os.chdir(req["cwd"])
    for fd, path in ((1, out), (2, err)):
        f = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(f, fd)
        os.close(f)
    limit = _status("VmSize") + req["mem_mb"] * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    signal.alarm(req["timeout_s"])  # the default action ends the child: a hang is a timeout
    torch.set_num_threads(1)
    try:
        rc = cli.main(req["argv"])
    except SystemExit as e:
        rc = e.code if isinstance(e.code, int) else 1
    except BaseException:  # a traceback is what the suite looks for
        traceback.print_exc()
        rc = 70
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(rc)


def serve() -> None:
    for line in sys.stdin:
        req = json.loads(line)
        with tempfile.TemporaryDirectory() as tmp:
            out, err = os.path.join(tmp, "out"), os.path.join(tmp, "err")
            rss = _status("VmRSS")
            sys.stdout.flush()
            t0 = time.perf_counter()
            pid = os.fork()
            if pid == 0:
                _child(req, out, err)
            _, status, usage = os.wait4(pid, 0)
            wall = time.perf_counter() - t0
            answer = {
                "rc": os.waitstatus_to_exitcode(status),
                "wall_s": wall,
                "peak_mb": (usage.ru_maxrss * 1024 - rss) / 2**20,
                "stdout": _read(out),
                "stderr": _read(err),
            }
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    serve()
