"""Command line: ``arctax check | generate-rearc | families | prepare | smoke | memory | train |
evaluate | score | compare | inspect | status``.

The Snakemake workflow calls the same library functions; the CLI is for running one step by
hand. ``--config`` may repeat (merged in order, like Snakemake's ``--configfile``) and
``--set key.sub=value`` overrides single keys (values parsed as YAML). A bad input (config,
checkpoint, task file, predictions, model name) prints one line naming it and exits 1 (2 for
config and usage errors); ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from arctax.config import ConfigError
from arctax.settings import Settings, load_settings


def _overrides(pairs: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ConfigError(f"--set {pair!r}: expected key.sub=value")
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = yaml.safe_load(value)
    return out


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``arctax`` command."""
    ap = argparse.ArgumentParser(prog="arctax", description=__doc__)
    ap.add_argument(
        "--config",
        action="append",
        default=[],
        help="config YAML merged over config/config.yaml, as Snakemake's --configfile "
        "(repeatable, in order)",
    )
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser(
        "check", help="check the config as the workflow does when it starts (arctax.check)"
    )
    p = sub.add_parser(
        "generate-rearc", help="generate re-arc examples from a checkout (data.rearc settings)"
    )
    p.add_argument("--repo", default=None, help="re-arc checkout (default: data.rearc.repo)")
    p.add_argument("--out", required=True, help="OUT/re_arc (re-arc's layout) and OUT/.state")
    p = sub.add_parser(
        "families", help="write generated task families with known rules (a data.source folder)"
    )
    p.add_argument("--out", required=True, help="OUT/train, OUT/test (task JSON), OUT/labels.json")
    p.add_argument("--rules", default="flip,gravity,swap", help="trained rules, comma-separated")
    p.add_argument("--per-rule", type=int, default=300, help="training tasks per rule")
    p.add_argument("--per-row", type=int, default=40, help="test tasks per row")
    p.add_argument("--max-side", type=int, default=5, help="largest grid side (3..5)")
    p.add_argument("--seed", type=int, default=1, help="training tasks' seed; test tasks: seed + 1")
    p = sub.add_parser("prepare", help="build the data cache (training data and one test set)")
    p.add_argument("--out", required=True)
    p.add_argument("--test-set", default=None, help="name in data.test_sets (default: the first)")
    p = sub.add_parser("smoke", help="smoke-test the three models")
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p = sub.add_parser(
        "memory",
        help="peak GPU memory of every job at its largest batch, estimated on the meta device "
        "(no GPU needed): run it before queueing",
    )
    p.add_argument(
        "--gpu-memory", type=float, default=None, metavar="GIB",
        help="the card's memory in GiB: exit 1 when a job does not fit it "
        "(default: this machine's GPU, if it has one)",
    )  # fmt: skip
    p.add_argument("--jobs", default="train,evaluate,adapt,sweep", help="comma-separated")
    p.add_argument(
        "--precision", default=None, help="the training precision (default: trial69.precision)"
    )
    p = sub.add_parser("train", help="train one model")
    p.add_argument("--model", required=True)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--data", required=True)
    p.add_argument(
        "--out", required=True, help="best.ckpt, last.ckpt, metrics.csv, provenance.json"
    )
    p.add_argument(
        "--state",
        default=None,
        help="resumable state (default: OUT/.state); run the same command again to resume",
    )
    p.add_argument(
        "--trackers", default=None, help="logs of trainer.loggers' trackers (default: OUT/trackers)"
    )
    p = sub.add_parser("evaluate", help="evaluate a checkpoint on the test split")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--label", required=True)
    p.add_argument("--seed", type=int, default=None)
    p = sub.add_parser("score", help="score an ARC Prize submission.json on the test split")
    p.add_argument("--predictions", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--label", required=True)
    p = sub.add_parser("inspect", help="what a checkpoint file is (without unpickling it)")
    p.add_argument("path")
    p = sub.add_parser("compare", help="compare evaluated models with the reference")
    p.add_argument("--eval", action="append", required=True, metavar="LABEL=DIR", help="repeatable")
    p.add_argument("--train", action="append", default=[], metavar="DIR", help="repeatable")
    p.add_argument("--out", required=True)
    p.add_argument("--reference", default="champion")
    p = sub.add_parser(
        "status",
        help="every job of a study: state, epochs, best val_loss, time left, attempts (read-only)",
    )
    p.add_argument("run_dir", nargs="?", default=None, help="results/<run> (default: the config's)")
    p.add_argument(
        "--watch", nargs="?", type=float, const=30.0, default=None, metavar="SECONDS",
        help="refresh every SECONDS (default 30) until Ctrl-C",
    )  # fmt: skip
    p.add_argument("--workdir", default=None, help="where Snakemake ran (its .snakemake)")
    p.add_argument("--no-squeue", action="store_true", help="do not ask squeue")
    p.add_argument("--json", action="store_true", help="print the rows as JSON (for scripts)")
    args = ap.parse_args(argv)
    try:
        cfg = load_settings(*args.config, overrides=_overrides(args.set))
    except ConfigError as e:
        if args.debug:
            raise
        print(f"arctax: {e}", file=sys.stderr)
        return 2
    try:
        return _run(args, cfg)
    except _user_errors() as e:
        if args.debug:
            raise
        print(f"arctax {args.cmd}: {e}", file=sys.stderr)
        return 2 if isinstance(e, ConfigError) else 1


def _user_errors() -> tuple[type[BaseException], ...]:
    """Errors about the user's input (one line each); anything else is a bug: traceback."""
    from arctax.data.dataset import CacheError
    from arctax.evaluation.adapters import AdapterError
    from arctax.evaluation.checkpoints import CheckpointError

    return (ValueError, CheckpointError, CacheError, AdapterError, FileNotFoundError)


def _run(args: argparse.Namespace, s: Settings) -> int:
    if args.cmd == "check":
        from arctax.check import check

        plan = check(s)
        runs = ", ".join(f"{label}/{tag}" for label, tag in plan.adapted) or "none"
        print(f"config OK: run {s.run}; models {', '.join(s.models)}; seeds "
              f"{', '.join(map(str, s.seeds))}; test sets {', '.join(plan.test_sets)}; "
              f"reference: {plan.reference_way}; adapted: {runs}")  # fmt: skip
        return 0
    if args.cmd == "families":
        from arctax.data import families

        rules = tuple(r for r in args.rules.split(",") if r)
        counts = families.write_families(
            Path(args.out), dict.fromkeys(rules, args.per_rule), families.test_rows(rules),
            args.per_row, seed=args.seed, hi=args.max_side,
        )  # fmt: skip
        print(json.dumps({"out": args.out, **counts}))
        return 0
    if args.cmd == "generate-rearc":
        from arctax.data import rearc_generate as rg

        rearc = s.data.rearc_generation()
        repo = args.repo or rearc.repo
        if not repo:
            raise ConfigError(f"generate-rearc: give --repo or data.rearc.repo ({rg.CLONE})")
        ids = rg.task_ids(repo, rearc.tasks)
        out = Path(args.out)
        rec = rg.generate_shard(
            repo, ids, rearc, out / ".state", out / ".state" / "shard.json",
            log=lambda m: print(m, file=sys.stderr, flush=True),
            margin_s=s.trainer.save_margin_s,
        )  # fmt: skip
        gen = rg.gather([out / ".state" / "shard.json"], out / ".state", out / "re_arc")
        print(json.dumps({k: gen[k] for k in ("version", "n_tasks", "n_examples",
                          "verified_share", "tasks_per_s", "short_tasks")}, indent=2))  # fmt: skip
        print(f"{len(rec['resumed'])} tasks resumed; data.source: {out / 're_arc'}")
    elif args.cmd == "prepare":
        from arctax.data.prepare import prepare

        m = prepare(s.data, s.taxonomy, args.out, args.test_set)
        print(json.dumps(m["counts"], indent=2))
    elif args.cmd == "smoke":
        from arctax.training.smoke import format_table, smoke_test

        report = smoke_test(s, args.data, args.out)
        print(format_table(report))
        return 0 if report["ok"] else 1
    elif args.cmd == "memory":
        return _memory(args, s)
    elif args.cmd == "train":
        from arctax.training.train import train

        seed = args.seed if args.seed is not None else s.trial69.seed
        state = args.state or str(Path(args.out) / ".state")
        trackers = args.trackers or str(Path(args.out) / "trackers")
        result = train(s, args.model, seed, args.data, args.out, state, trackers)
        print(json.dumps(result, indent=2))
    elif args.cmd == "evaluate":
        from arctax.evaluation.evaluate import evaluate

        evaluate(s, args.checkpoint, args.data, args.out, args.label, args.seed)
        print(Path(args.out) / "per_task.csv")
    elif args.cmd == "score":
        from arctax.evaluation.reference import evaluate_reference

        way = {"way": "predictions", "detail": "scored with arctax score"}
        evaluate_reference(s, way, args.predictions, args.data, args.out, args.label)
        print(Path(args.out) / "per_task.csv")
    elif args.cmd == "inspect":
        from arctax.evaluation.inspection import inspect_checkpoint

        found = inspect_checkpoint(args.path)
        print(f"{found.path}: {found.kind}: {found.detail}")
        return 0 if found.is_arctax else 1
    elif args.cmd == "status":
        from arctax import status as st

        run_dir = args.run_dir or f"results/{s.run}"
        if not Path(run_dir).is_dir():
            raise FileNotFoundError(f"{run_dir}: no such results folder (give results/<run>)")

        def render() -> str:
            study = st.study_status(s, run_dir, args.workdir, use_squeue=not args.no_squeue)
            return json.dumps(study.as_dict()) if args.json else st.format_status(study)

        if args.watch is not None:
            st.watch(render, max(1.0, args.watch))
        else:
            print(render())
    elif args.cmd == "compare":
        from arctax.evaluation.compare import compare

        eval_dirs: dict[str, list[str]] = {}
        for pair in args.eval:
            label, sep, folder = pair.partition("=")
            if not sep or not label or not folder:
                print(f"arctax: --eval {pair!r}: expected LABEL=DIR", file=sys.stderr)
                return 2
            eval_dirs.setdefault(label, []).append(folder)  # one folder per seed
        compare(s.eval, eval_dirs, args.train, args.out, args.reference)
        print(Path(args.out) / "summary.md")
    return 0


def _memory(args: argparse.Namespace, s: Settings) -> int:
    """``arctax memory``: the table of every job's estimated peak; 1 if one does not fit."""
    import torch

    from arctax.memory import HEADROOM, JOBS, estimate_jobs, fits, format_table
    from arctax.search.space import largest_point

    jobs = tuple(j for j in args.jobs.split(",") if j)
    if unknown := sorted(set(jobs) - set(JOBS)):
        raise ValueError(f"--jobs: unknown {unknown}; choose from {', '.join(JOBS)}")
    card = None
    if args.gpu_memory:
        card = int(args.gpu_memory * 2**30)
    elif torch.cuda.is_available():
        card = torch.cuda.get_device_properties(0).total_memory
    sweep = {m: largest_point(s, m) for m in s.sweep.models} if "sweep" in jobs else None
    rows = estimate_jobs(s, args.precision or s.trial69.precision, sweep, jobs)
    print(format_table(rows, card))
    print(
        f"\nEstimated on the meta device (arctax.memory): every grid at the largest size, "
        f"peak allocated bytes; plan at most {HEADROOM:.0%} of a card (CUDA context, "
        "fragmentation)."
    )
    bad = [r for r in rows if card and not fits(r.peak_bytes, card)]
    for r in bad:
        print(f"DOES NOT FIT {card / 2**30:.0f} GiB: {r.model} {r.job} ({r.peak_gib:.2f} GiB); "
              "fix: a card with more memory (ARCTAX_GPU_MODEL), trainer.devices: 2 (train), "
              "a smaller eval.batch_size (evaluate, adapt) or adapt.tasks_per_batch (adapt)")  # fmt: skip
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
