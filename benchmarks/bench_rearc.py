"""re-arc end to end on a real checkout: generation figures, then prepare's time and peak memory.

Usage (``make bench-rearc REARC=../re-arc``)::

    python benchmarks/bench_rearc.py --repo ../re-arc [--n 150] [--tasks 400] [--out DIR]

Generates N examples per task with the checkout's generators (one process, as one
``generate_rearc`` job does; ``--out`` keeps them, and a second run resumes every task, so the
generation figures are those recorded when each task was made), then runs the training data's
preparation on them in a child process (its own peak memory) and the ARC-AGI-1 evaluation test
set. Prints one table.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from arctax.data import rearc_generate as rg
from arctax.settings import load_settings

PREPARE = """
import json, resource, sys, time
from arctax.settings import load_settings
from arctax.data.prepare import prepare_training
from arctax.data.prepare_test import prepare_test_set
cfg = load_settings(overrides={"data": {"source": sys.argv[1], "examples_per_task": int(sys.argv[3])}})
t0 = time.perf_counter()
m = prepare_training(cfg.data, cfg.taxonomy, sys.argv[2] + "/train")
t1 = time.perf_counter()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
prepare_test_set(cfg.data, cfg.taxonomy, "arcagi1_eval", sys.argv[2] + "/test",
                 sys.argv[2] + "/train")
print(json.dumps({"train_s": t1 - t0, "test_s": time.perf_counter() - t1, "peak_kb": peak,
                  "counts": m["counts"], "version": m["version"]}))
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repo", required=True, help="a checkout of re-arc")
    ap.add_argument("--n", type=int, default=150, help="examples per task (Trial 69: 150)")
    ap.add_argument("--tasks", type=int, default=None, help="the first N tasks (default: all)")
    ap.add_argument("--out", default=None, help="keep the generation here (resumed next time)")
    args = ap.parse_args(argv)
    out = Path(args.out or tempfile.mkdtemp(prefix="bench-rearc-"))
    ids = rg.task_ids(args.repo)[: args.tasks]
    s = load_settings(overrides={"data": {"rearc": {"n_examples": args.n}}}).data.rearc_generation()
    t0 = time.perf_counter()
    rec = rg.generate_shard(
        args.repo, ids, s, out / ".state", out / ".state/shard.json", log=lambda m: None
    )
    wall = time.perf_counter() - t0
    cpu = resource.getrusage(resource.RUSAGE_SELF).ru_utime
    gen = rg.gather([out / ".state/shard.json"], out / ".state", out / "re_arc")
    p = subprocess.run(
        [sys.executable, "-c", PREPARE, str(out / "re_arc"), str(out / "data"), str(args.n)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    prep = json.loads(p.stdout.strip().splitlines()[-1])
    c = prep["counts"]
    slow = max(rec["stats"].values(), key=lambda x: x["seconds"])
    rows = [
        ("checkout", gen["version"]),
        ("tasks x examples", f"{gen['n_tasks']} x {args.n} = {gen['n_examples']} examples"),
        ("generation (recorded per task)", f"{gen['generation_seconds']:.1f} s, "
         f"{gen['tasks_per_s']:.3f} tasks/s, {gen['n_examples'] / max(gen['generation_seconds'], 1e-3):.1f} examples/s"),
        ("this run", f"{wall:.1f} s wall, {cpu:.1f} s CPU, {len(rec['resumed'])} tasks resumed"),
        ("verified share", f"{gen['verified_share']:.4f} of {gen['calls']} calls"),
        ("outcomes", ", ".join(f"{k} {v}" for k, v in gen["outcomes"].items())),
        ("tasks stopped short", json.dumps(gen["short_tasks"])),
        ("slowest task", f"{slow['task_id']} {slow['seconds']:.1f} s"),
        ("prepare training data", f"{prep['train_s']:.1f} s, peak {prep['peak_kb'] / 1024:.0f} MB, "
         f"{c['train']['tasks']} / {c['val']['tasks']} tasks, "
         f"{c['train']['examples']} / {c['val']['examples']} examples"),
        ("prepare test set arcagi1_eval", f"{prep['test_s']:.1f} s"),
    ]  # fmt: skip
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    print(f"\n(generated data: {out / 're_arc'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
