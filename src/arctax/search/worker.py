"""A sweep worker: claim a trial, train it, tell the result; until the study is full.

Several workers (Slurm jobs) share one study. Under the claim lock
(:func:`arctax.search.storage.claim_lock`) a worker first fails and requeues the RUNNING trials
whose owner is provably dead (:mod:`arctax.lifecycle.owners`), then counts COMPLETE + PRUNED +
RUNNING trials: at ``n_trials`` with nothing WAITING it stops, else it asks for a trial
(``study.ask()`` takes a WAITING retry first) and signs it with its identity. The training runs
outside the lock. So the study ends with exactly ``n_trials`` finished trials, whatever the
number of workers, and re-running a full study claims nothing.

A failed trial (an exception, a killed or preempted worker) is marked FAIL with its reason and
enqueued again with the same values (``retry_of``), at most ``sweep.max_retries`` times per
value set; a pruned trial counts as finished. On SIGTERM / SIGUSR1 or near the Slurm time limit
the worker fails and requeues its current trial and exits 75, like a training job: Snakemake
retries it, and it loses at most that trial. Its job state (:class:`~arctax.lifecycle.JobState`)
holds the running trial's scratch space; what it resumes is the study itself.
"""

from __future__ import annotations

import json
import math
import socket
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from arctax.io import write_json
from arctax.lifecycle import JobState, StopFlag, Stopped, stop_line
from arctax.lifecycle.owners import dead_reason, owner_record, slurm_states
from arctax.search import SearchError
from arctax.search.space import Param, apply_params, parse_space, suggest
from arctax.search.storage import claim_lock, describe, open_storage, study_name
from arctax.settings import Settings, Sweep

MAX_FAILURES_IN_A_ROW = 3  # then the worker stops: a bug or a broken setup, not a bad value
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
ORPHAN_AGE_S = 120  # a trial with no owner this old: its claimer died inside the claim
Objective = Callable[[optuna.Trial], float]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def study_setup(
    s: Settings, model: str, space: Mapping[str, Param], data_dir: str | Path
) -> dict[str, Any]:
    """What makes trials comparable: a study keeps one setup for its whole life."""
    from arctax.data.dataset import load_manifest  # here: the module imports torch

    base = apply_params(s.raw, {k: None for k in space})  # the searched values do not count
    manifest = load_manifest(data_dir)
    setup = {
        "model": model,
        "space": {k: p.as_dict() for k, p in space.items()},
        "training": s.sweep.trial_training(),
        "recipe": {"trial69": base["trial69"], "model": base["models"][model]},
        "data": manifest["inputs_sha256"] + ":" + manifest["config_sha256"],
    }
    return json.loads(json.dumps(setup))  # as it reads back from the storage


def open_study(run: str, model: str, sweep_dir: Path, setup: dict) -> optuna.Study:
    """Create run ``run``'s study of ``model``, or load it after checking it was made for the
    same setup.

    Call under the claim lock (two workers creating it at once would both record the setup).
    """
    name = study_name(run, model)
    study = optuna.create_study(
        study_name=name, storage=open_storage(sweep_dir), direction="minimize", load_if_exists=True
    )
    stored = study.user_attrs.get("arctax_setup")
    if stored is None:
        study.set_user_attr("arctax_setup", setup)
    elif stored != setup:
        parts = ", ".join(k for k in setup if stored.get(k) != setup.get(k))
        raise SearchError(
            f"study '{name}' in {describe(sweep_dir)} was run with a different {parts}; its "
            "trials would not compare with new ones. Give this search another `run` name, or "
            "delete the study to start over"
        )
    return study


def make_sampler(sweep: Sweep, worker: int, n_existing: int) -> optuna.samplers.TPESampler:
    """TPE, seeded per worker start: ``seed + worker + workers * trials already in the study``.

    Workers started together draw different random start-up trials (the same seed would draw
    the same ones), a restarted worker does not repeat its earlier draws, and one fresh worker
    on an empty study always draws the same first trials.
    """
    seed = sweep.seed + worker + sweep.workers * n_existing
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=sweep.n_startup_trials)


def make_pruner(sweep: Sweep) -> optuna.pruners.BasePruner:
    """``sweep.pruner``: median (after 5 finished trials, never on the first epoch), hyperband
    (epochs as the resource), or none."""
    if sweep.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1)
    if sweep.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=sweep.max_epochs)
    return optuna.pruners.NopPruner()


def fail_and_requeue(study: optuna.Study, number: int, reason: str, max_retries: int) -> None:
    """Mark RUNNING trial ``number`` FAIL with ``reason``; enqueue its values again unless they
    have been retried ``max_retries`` times or already are. Call under the claim lock."""
    trials = study.get_trials(deepcopy=False)
    t = next(o for o in trials if o.number == number)
    if t.state != TrialState.RUNNING:
        return  # told or failed meanwhile
    # FrozenTrial has no public id; optuna.trial.Trial(study, id) is how Optuna itself
    # addresses a running trial
    optuna.trial.Trial(study, t._trial_id).set_user_attr("fail_reason", reason)
    study.tell(number, state=TrialState.FAIL, skip_if_finished=True)
    retries = t.user_attrs.get("retries", 0)
    if retries >= max_retries:
        log(
            f"trial {number} failed ({reason}); its values were tried {retries + 1} times: not retried"
        )
    elif not any(o.user_attrs.get("retry_of") == number for o in trials):
        study.enqueue_trial(t.params, user_attrs={"retry_of": number, "retries": retries + 1})
        log(f"trial {number} failed ({reason}); enqueued again with the same values")


def trial_dead_reason(
    owner: Mapping[str, Any] | None,
    me: Mapping[str, Any],
    states: Mapping[str, str] | None,
    started: float | None,
) -> str | None:
    """Why the worker of a RUNNING trial is dead (:func:`arctax.lifecycle.owners.dead_reason`),
    or None if it may be alive. A trial with no owner recorded after ``ORPHAN_AGE_S`` lost its
    claimer inside the claim, which takes milliseconds under the lock."""
    if not (owner or {}).get("host"):
        age = time.time() - (started or time.time())
        if age > ORPHAN_AGE_S:
            return f"no owner recorded after {age:.0f} s (its worker died while claiming it)"
        return None
    return dead_reason(owner, me, states, role="worker")


def reap(study: optuna.Study, me: Mapping[str, Any], max_retries: int) -> list[int]:
    """Fail and requeue the RUNNING trials whose owner is provably dead; their numbers."""
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    owners = {t.number: t.user_attrs.get("owner") or {} for t in running}
    jobs = [o["slurm_job_id"] for o in owners.values() if o.get("slurm_job_id")]
    states = slurm_states(jobs) if jobs else {}
    reaped = []
    for t in running:
        started = t.datetime_start.timestamp() if t.datetime_start else None
        reason = trial_dead_reason(owners[t.number], me, states, started)
        if reason:
            fail_and_requeue(study, t.number, reason, max_retries)
            reaped.append(t.number)
    return reaped


def claim(
    study: optuna.Study, n_trials: int, me: Mapping[str, Any], max_retries: int
) -> optuna.Trial | None:
    """The next trial for this worker, or None when the study has its ``n_trials``.

    Call under the claim lock: the count and the ask must not interleave with another worker's.
    """
    reap(study, me, max_retries)
    count = Counter(t.state for t in study.get_trials(deepcopy=False))
    taken = count[TrialState.COMPLETE] + count[TrialState.PRUNED] + count[TrialState.RUNNING]
    if count[TrialState.WAITING] == 0 and taken >= n_trials:
        return None
    trial = study.ask()
    trial.set_user_attr("owner", dict(me))
    return trial


def training_objective(
    s: Settings,
    model: str,
    data_dir: str | Path,
    state_dir: str | Path,
    space: Mapping[str, Param],
    should_stop: Callable[[], str | None],
) -> Objective:
    """The real objective: the trial's values -> a short training -> best val_loss."""
    from arctax.search.objective import train_trial, trial_config  # torch, Lightning

    def objective(trial: optuna.Trial) -> float:
        params = suggest(trial, space)
        log(f"trial {trial.number}: {json.dumps(params)}")
        work = Path(state_dir) / f"trial{trial.number}"
        return train_trial(trial_config(s, params), model, data_dir, work, trial, should_stop)

    return objective


def run_worker(
    s: Settings,
    model: str,
    data_dir: str | Path,
    sweep_dir: str | Path,
    worker: int,
    record_path: str | Path | None = None,
    state_dir: str | Path | None = None,
    objective: Objective | None = None,
) -> dict[str, Any]:
    """Draw trials from ``model``'s study until it has ``sweep.n_trials`` finished ones.

    ``sweep_dir``: ``results/<run>/sweep/<model>`` (journal and claim lock); ``state_dir``:
    scratch space of the running trial; ``objective``: the training objective unless given.
    Writes and returns this worker's record (the trials it ran). Exits 75
    (``SystemExit``) when stopped by a signal or the Slurm time limit.
    """
    sw = s.sweep
    sweep_dir = Path(sweep_dir)
    job = JobState(state_dir or sweep_dir / ".trials", margin_s=s.trainer.save_margin_s)
    space = parse_space(s, model)
    setup = study_setup(s, model, space, data_dir)
    me = owner_record(worker=worker)
    started = _now()
    with claim_lock(sweep_dir):
        study = open_study(s.run, model, sweep_dir, setup)
        n_existing = len(study.get_trials(deepcopy=False))
    study.sampler = make_sampler(sw, worker, n_existing)
    study.pruner = make_pruner(sw)
    ran: list[dict[str, Any]] = []
    failures = 0
    log(f"worker {worker} of study {study.study_name} ({describe(sweep_dir)})")
    log(f"{n_existing} trials so far, n_trials {sw.n_trials}")
    with job:  # the signals and the Slurm deadline for the worker's whole life
        stop = job.stop
        objective = objective or training_objective(s, model, data_dir, job.folder, space, stop)
        while True:
            if stop():
                job.stopped(stop_line("worker", stop(), "between trials; run again to go on"))
            with claim_lock(sweep_dir):
                trial = claim(study, sw.n_trials, me, sw.max_retries)
            if trial is None:
                break
            t0 = time.time()
            state, value, reason = _run_one(
                study, trial, objective, stop, sweep_dir, sw.max_retries
            )
            seconds = round(time.time() - t0, 1)
            ran.append(
                {
                    "number": trial.number,
                    "state": state,
                    "value": value,
                    "seconds": seconds,
                    "retry_of": trial.user_attrs.get("retry_of"),
                }
            )
            log(f"trial {trial.number}: {state} {reason or value} ({seconds} s)")
            if state == "PREEMPTED":
                job.stopped(stop_line("worker", reason, "the trial was requeued; run again"))
            failures = failures + 1 if state == "FAIL" else 0
            if failures >= MAX_FAILURES_IN_A_ROW:
                raise SearchError(
                    f"{failures} trials in a row failed in this worker, the last with: {reason} "
                    f"(see {sweep_dir}/trials.csv after `snakemake sweep`, or the worker log)"
                )
    finished = len(study.get_trials(deepcopy=False, states=FINISHED))
    record = {
        "study": study.study_name,
        "storage": describe(sweep_dir),
        "model": model,
        "worker": worker,
        "host": socket.gethostname(),
        "slurm_job_id": me["slurm_job_id"],
        "started": started,
        "finished": _now(),
        "trials": ran,
        "study_finished_trials": finished,
        "n_trials": sw.n_trials,
    }
    log(f"study {study.study_name}: {finished} finished trials; this worker ran {len(ran)}")
    if record_path:
        write_json(record_path, record)
    return record


def _run_one(
    study: optuna.Study,
    trial: optuna.Trial,
    objective: Objective,
    stop: StopFlag,
    sweep_dir: Path,
    max_retries: int,
) -> tuple[str, float | None, str]:
    """Run and tell one trial: (state, value, reason); PREEMPTED means requeued, stop now."""
    try:
        if stop():  # a signal while claiming: do not start
            raise Stopped(stop())
        value = objective(trial)
    except optuna.TrialPruned as e:
        study.tell(trial, state=TrialState.PRUNED, skip_if_finished=True)
        return "PRUNED", None, str(e)
    except Stopped as e:
        with claim_lock(sweep_dir):
            fail_and_requeue(study, trial.number, f"worker stopped: {e}", max_retries)
        return "PREEMPTED", None, str(e)
    except Exception as e:  # a bad value (out of memory, diverged) or a bug: fail, retry
        reason = f"{type(e).__name__}: {e}"
        with claim_lock(sweep_dir):
            fail_and_requeue(study, trial.number, reason, max_retries)
        return "FAIL", None, reason
    if not math.isfinite(value):
        trial.set_user_attr("fail_reason", f"val_loss is {value} (diverged)")
        study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
        return "FAIL", None, f"val_loss is {value}"
    study.tell(trial, value, skip_if_finished=True)
    return "COMPLETE", value, ""
