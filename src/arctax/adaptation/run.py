"""The adaptation stage as Slurm-friendly shards: contiguous groups of test tasks, one job each.

:func:`adapt_shard` adapts the tasks of one shard (``adapt.tasks_per_job`` of them), keeping
every finished task's record in the shard's :class:`~arctax.lifecycle.JobState`, so a retried
job (preempted, timed out) skips the tasks already answered. :func:`gather` turns the shards of one model into two
evaluations in the usual format (``submission.json``, ``per_task.csv``, ``summary.json``):
``vote/`` (voting alone) and ``adapt/`` (adaptation + voting), scored by the one scorer.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from arctax.adaptation.shards import shard_task_ids
from arctax.adaptation.ttt import TaskData, adapt_tasks, adapter_slots
from arctax.data.dataset import load_manifest, load_split
from arctax.io import file_sha256, read_json, write_json
from arctax.lifecycle import JobState, fingerprint, stop_line
from arctax.settings import Settings

Grid = np.ndarray
KINDS = ("base", "vote", "adapt")  # the answers a shard records per task


def task_data(ds: Any, task_id: str) -> TaskData:
    """A test task's demonstrations and test inputs with their context; no test output."""
    t = ds.task_ids.index(task_id)
    queries = []
    for i in np.flatnonzero((ds.ex_task == t) & (ds.ex_aug == 0)):
        ex = ds[int(i)]
        queries.append((ds.meta(int(i))["pair"], ex["query_in"], tuple(ex["context"])))
    return TaskData(task_id, tuple(ds.demos(t)), tuple(sorted(queries, key=lambda q: q[0])))


def _grids_out(answers: Mapping[int, list[Grid | None]]) -> dict[str, list]:
    return {str(q): [[] if g is None else g.tolist() for g in a] for q, a in answers.items()}


def _grids_in(answers: Mapping[str, list]) -> dict[int, list[Grid | None]]:
    return {
        int(q): [np.array(g, dtype=np.int64) if g else None for g in a] for q, a in answers.items()
    }


def task_fingerprint(ckpt_sha: str, s: Settings, data_dir: str | Path) -> str:
    """What a task's saved record must match to be reused by a retried job: the checkpoint,
    the test data and what the settings' roles say an adapted task's answers depend on
    (:meth:`arctax.settings.Settings.adaptation`: the method, not which runs and tasks are
    adapted nor how they are cut in jobs)."""
    m = load_manifest(data_dir)
    data = [m["inputs_sha256"], m["config_sha256"]]
    return fingerprint({"ckpt": ckpt_sha, **s.adaptation(), "data": data})


def _num(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def _mean(values: Sequence[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def adapt_shard(
    s: Settings,
    ckpt_path: str | Path,
    data_dir: str | Path,
    shard: int,
    shards: int,
    out_path: str | Path,
    state_dir: str | Path,
) -> dict[str, Any]:
    """Adapt and answer the tasks of shard ``shard`` of ``shards``; write ``out_path``.

    Each finished task is saved in the shard's job state (``state_dir``, shared by the shards
    of one run: ``<task_id>.json``) at once; a retry reuses the records whose fingerprint
    matches. A shard that had finished (its done marker is there) and runs again, e.g.
    ``--forcerun``, starts over. The base checkpoint is only read: its sha256 is checked
    before and after.
    """
    acfg = s.adapt
    ds = load_split(data_dir, "test")
    mine = shard_task_ids(ds.task_ids, acfg, shard, shards)
    sha_before = file_sha256(ckpt_path)
    name = f"shard{shard}-of-{shards}"
    job = JobState(state_dir, task_fingerprint(sha_before, s, data_dir), s.trainer.save_margin_s,
                   job=f"shard {shard}", owner=f"{name}.owner")  # fmt: skip
    done = f"{name}.done"
    return job.run(  # one writer per shard: a copy waits, then adopts the answers
        lambda: _adapt(s, ckpt_path, ds, mine, shard, shards, out_path, job, done, sha_before),
        done, [out_path], adopt=lambda _: read_json(out_path),
    )  # fmt: skip


def _adapt(
    s: Settings,
    ckpt_path: str | Path,
    ds: Any,
    mine: list[str],
    shard: int,
    shards: int,
    out_path: str | Path,
    job: JobState,
    done: str,
    sha_before: str,
) -> dict[str, Any]:
    """:func:`adapt_shard`'s work, by the shard's one writer."""
    import torch

    from arctax.adaptation.lora import inject_lora
    from arctax.evaluation.checkpoints import load_model

    acfg, state_dir = s.adapt, job.folder
    if job.done(done):
        _log(f"{state_dir}: shard {shard} had finished: adapting its tasks again")
        job.forget(mine)
        job.unmark_done(done)
    records = {t: rec for t in mine if (rec := job.record(t)) is not None}
    resumed = sorted(records)
    if resumed:
        _log(f"resuming shard {shard}: {len(resumed)} of {len(mine)} tasks already answered")
    todo = [t for t in mine if t not in records]
    # As training does: on CUDA the adapters' gradients (index_add, attention backward) use
    # atomics otherwise, and a task's answers would depend on the run (docs/CUDA.md).
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(bool(s.trial69.deterministic))
    model, info = load_model(ckpt_path, s.models, s.limits)
    accel = s.trainer.accelerator
    dev = torch.device("cuda" if torch.cuda.is_available() and accel != "cpu" else "cpu")
    model.to(dev)
    per_batch = acfg.tasks_per_batch
    slot, layers = inject_lora(
        model, list(acfg.targets), acfg.rank, float(acfg.alpha), adapter_slots(acfg, per_batch)
    )
    ev = s.eval
    t0 = time.perf_counter()
    with job:  # SIGTERM/SIGUSR1 or the job's end: stop between task groups
        for start in range(0, len(todo), per_batch):
            if job.stop():  # every task answered so far is saved
                saved = f"{len(records)} of {len(mine)} tasks saved; run again to go on"
                job.stopped(stop_line(f"shard {shard}", job.stop(), saved))
            group = [task_data(ds, t) for t in todo[start : start + per_batch]]
            recs = adapt_tasks(
                model, info["k"], slot, layers, group, acfg, ev.max_new_tokens, ev.batch_size
            )
            for i, rec in enumerate(recs):
                if acfg.save_adapters:
                    meta = {"task_id": rec["task_id"], "checkpoint_sha256": sha_before,
                            "rank": acfg.rank, "alpha": acfg.alpha, "targets": list(acfg.targets)}  # fmt: skip
                    save_adapter(Path(out_path).parent.parent / "adapters" / f"{rec['task_id']}.pt",
                                 layers, i, meta)  # fmt: skip
                rec = {**rec, **{kind: _grids_out(rec[kind]) for kind in KINDS}}
                records[rec["task_id"]] = job.save(rec["task_id"], rec)
                _log(
                    f"adapted {rec['task_id']}: {rec['steps']} steps, loss {_num(rec['loss_first'])}"
                    f" -> {_num(rec['loss_last'])}, {rec['seconds']:.2f} s "
                    f"({len(records)}/{len(mine)})"
                )
    if file_sha256(ckpt_path) != sha_before:  # never: the base is loaded read-only
        raise RuntimeError(f"{ckpt_path} changed during adaptation")
    result = {
        "shard": shard,
        "shards": shards,
        "model_name": info["model_name"],
        "model_code": info["model_code"],
        "checkpoint": str(ckpt_path),
        "checkpoint_sha256": sha_before,
        "device": str(dev),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "host": socket.gethostname(),
        "tasks": mine,
        "resumed": resumed,
        "seconds": round(time.perf_counter() - t0, 3),
        "records": [records[t] for t in mine],
    }
    write_json(out_path, result)
    job.mark_done(done, {"finished": time.time()}, [out_path])
    return result


def gather(
    s: Settings,
    shard_paths: Sequence[str | Path],
    data_dir: str | Path,
    vote_dir: str | Path,
    adapt_dir: str | Path,
    label: str,
    seed: int | None,
    base_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Score one model's shards: ``vote_dir`` (voting alone), ``adapt_dir`` (adapted) and
    ``base_dir`` (the base model's own two attempts, no voting: the like-for-like base row)."""
    from arctax.evaluation.checkpoints import trained_here_flag
    from arctax.evaluation.evaluate import write_evaluation

    ds = load_split(data_dir, "test")
    index = {
        (ds.meta(int(i))["task_id"], ds.meta(int(i))["pair"]): int(i)
        for i in np.flatnonzero(ds.ex_aug == 0)
    }
    shards = [json.loads(Path(p).read_text()) for p in shard_paths]
    records = [r for s in shards for r in s["records"]]
    tasks = {r["task_id"] for r in records}
    acfg = s.adapt
    seconds = sum(r["seconds"] for r in records)
    first = shards[0]
    out = {}
    folders = [("base", base_dir), ("vote", vote_dir), ("adapt", adapt_dir)]
    for kind, folder in [(k, f) for k, f in folders if f is not None]:
        answers = {
            index[(r["task_id"], q)]: a for r in records for q, a in _grids_in(r[kind]).items()
        }
        extra = {
            "adaptation": {
                "kind": kind,
                "tasks": len(tasks),
                "shards": len(shards),
                "voting_views": acfg.voting_views if kind != "base" else 2,
                **(
                    {
                        **acfg.method(), "seconds": round(seconds, 3),
                        "tasks_per_s": len(tasks) / seconds if seconds else None,
                        "loss_first_mean": _mean([r["loss_first"] for r in records]),
                        "loss_last_mean": _mean([r["loss_last"] for r in records]),
                        "steps_mean": float(np.mean([r["steps"] for r in records])),
                    }
                    if kind == "adapt" else {}
                ),
            }
        }  # fmt: skip
        identity = {
            "model_name": first["model_name"],
            "checkpoint": first["checkpoint"],
            "checkpoint_sha256": first["checkpoint_sha256"],
            "trained_here": trained_here_flag(Path(first["checkpoint"])),  # the base's weights
            "model_code": first.get("model_code"),
            "source": {"way": kind, "path": first["checkpoint"]},
        }
        name = f"{label}+{kind}"
        out[kind] = write_evaluation(
            s.eval, ds, answers, folder, name, seed, identity=identity, device=first["device"],
            attempts=acfg.attempts, tasks=tasks, extra=extra,
        )  # fmt: skip
    return out


def save_adapter(path: Path, layers: Sequence[Any], slot: int, meta: Mapping[str, Any]) -> None:
    """One task's adapter (``A``, ``B`` of every LoRA layer) as plain tensors (weights_only)."""
    from arctax.io import atomic_torch_save

    tensors = {f"{layer.name}.{w}": getattr(layer, w)[slot].detach().cpu().clone()
               for layer in layers for w in ("A", "B")}  # fmt: skip
    atomic_torch_save(path, {"adapter": tensors, "meta": dict(meta)})
