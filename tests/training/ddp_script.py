"""train() run as a script, the way Snakemake's ``script:`` runs workflow/scripts/train.py.

Lightning's subprocess launcher starts ranks > 0 by running ``sys.argv`` again, so a DDP run
needs a script (a test function cannot be re-run). Used by tests/training/test_ddp.py:

    python ddp_script.py OVERRIDES_JSON MODEL DATA_DIR OUT_DIR STATE_DIR LOG

Each process also records every file it creates, changes, renames or removes, through Python
audit hooks (the real calls of every library, Lightning's and torch's included), in
``LOG.writes.<pid>.json`` at exit: how the test checks that only rank 0 writes outputs.
"""

from __future__ import annotations

import atexit
import json
import os
import sys
from pathlib import Path

WRITING = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
EVENTS = ("os.rename", "os.remove", "os.rmdir", "os.mkdir", "shutil.rmtree", "os.truncate")


def record_writes(path: str) -> None:
    """Append every writing file operation of this process to a list saved at exit."""
    writes: list[list[str]] = []

    def name(p: object) -> str | None:
        return os.path.abspath(os.fsdecode(p)) if isinstance(p, (str, bytes, os.PathLike)) else None

    def hook(event: str, args: tuple) -> None:
        if event == "open" and name(args[0]):
            mode, flags = args[1], args[2] or 0
            if (mode and any(c in mode for c in "wax+")) or (not mode and flags & WRITING):
                writes.append(["open", name(args[0])])
        elif event in EVENTS:
            writes.append([event, *filter(None, (name(a) for a in args[:2]))])

    sys.addaudithook(hook)
    env = {k: os.environ.get(k) for k in ("LOCAL_RANK", "RANK", "SLURM_PROCID")}
    atexit.register(
        lambda: Path(path).write_text(
            json.dumps({"pid": os.getpid(), "env": env, "writes": writes})
        )
    )


if __name__ == "__main__":
    overrides, model, data, out, state, log = sys.argv[1:]
    record_writes(f"{log}.writes.{os.getpid()}.json")

    from arctax.settings import load_settings
    from arctax.training.train import attach_log, train

    attach_log(log, state)
    cfg = load_settings(overrides=json.loads(Path(overrides).read_text()))
    train(cfg, model, 307, data, out, state)
