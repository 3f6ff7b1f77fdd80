#!/usr/bin/env python3
"""chaos: faults injected across a whole study on the local Slurm cluster, and the proof that
the study still ends with the numbers of an undisturbed run (`make chaos`,
docs/results/CHAOS.md, tests/slurm/test_chaos.py).

A small but complete study (config/demo.yaml + an overlay: two seeds, adaptation on, two test
sets; some tens of Slurm jobs) runs twice in the same folder, with the README's command
(`snakemake all --profile profiles/slurm --configfile ...`):

1. undisturbed; its results are kept and reused while the code, config and versions it ran
   with are unchanged (a sha256 over them);
2. with an injector that, at times drawn from a seed it prints, cancels a running job
   (`scancel`: TERM, and KILL), kills a job's process group behind Slurm's back (`kill -9`),
   restarts `slurmd` and `slurmctld`, kills the `snakemake` driver (`kill -9`) and starts it
   again with the same command while its jobs run, drains and resumes the node, and fills
   the file system under a training's output folder (a small tmpfs mounted over it; removed,
   as a user frees space, once the job has failed). A driver that ends with an error is
   started again, as a user would.

Then it checks: every output exists (the same command again has nothing to do); the
numbers equal the undisturbed run's (see `compare_trees`); no partial file anywhere; no lock
left that needs `--unlock`; `arctax status`, polled throughout, never crashed, never called a
finished job unfinished nor a dead one running (see `status_violations`). It also lists what
went wrong on the way (jobs that ran twice at once, finished work done again), which the
per-job owner locks are to remove. Needs root (it restarts daemons and mounts a tmpfs) and
scripts/local-slurm; it takes the Slurm tests' lock. Exit 0 when every check passes.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
from chaos_checks import (  # noqa: E402  (a script beside its checks)
    KINDS,
    TEMP_NAME,
    Poll,
    compare_trees,
    complete,
    orphan_fates,
    overlaps,
    owner_events,
    partial_files,
    report,
    slurm_messages,
    status_violations,
    working_jobs,
    writers_at_once,
)

from arctax.layout import RULES  # noqa: E402
from arctax.lifecycle.owners import proc_start  # noqa: E402

LOCAL_SLURM = REPO / "scripts" / "local-slurm"
LOCK = Path(os.environ.get("LOCAL_SLURM_TEST_LOCK", "/tmp/arctax-slurm-tests.lock"))
LOCKED_BY = "ARCTAX_SLURM_TESTS_LOCKED"  # set by a pytest session that holds the lock
OWNER_VAR = "ARCTAX_SLURM_TEST_OWNER"  # the Slurm tests stop a gone session's processes by it
PREFIX = os.environ.get("LOCAL_SLURM_TEST_PREFIX", "arctaxtest") + "_chaos"
RUN = "chaos"
ONE_WRITER = {name for name, r in RULES.items() if r.done}  # jobs that take an owner
# The study: small, complete. `ci` drops one model to fit CI's budget.
OVERLAY = """\
run: chaos
seeds: [307, 1]
data:
  max_tasks: 12
  test_sets: {arcagi1_eval: arcagi, val: val}
trainer:
  max_epochs: 8           # a training runs long enough (about 10 s of epochs) to be hit
eval:
  bootstrap_samples: 200
adapt:
  models: [champion]
  max_tasks: 4
  tasks_per_job: 2        # 2 shards per adapted run: the champion's 2 seeds and the reference
  steps: 4
  augment_views: 2
  voting_views: 2
"""
CI_OVERLAY = "models:\n  encoder_decoder: null\n"
POLL_S = 6.0
SUBMITTED = re.compile(
    r"submitted with SLURM jobid (\d+) \(log: \S*/rule_(\w+?)/(?:(\S+)/)?\d+\.log\)"
)


# ----------------------------------------------------------------------------- small helpers


def log(msg: str) -> None:
    print(f"chaos {time.strftime('%H:%M:%S')}: {msg}", flush=True)


def sh(*cmd: str, timeout: float = 60, check: bool = True) -> str:
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if check and res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: exit {res.returncode}: {res.stderr.strip()}")
    return res.stdout


def tree_files(root: Path) -> list[Path]:
    """The working tree's files (tracked and untracked-not-ignored), as the Slurm tests copy it."""
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=root, capture_output=True, check=True,
    ).stdout.split(b"\0")  # fmt: skip
    return sorted(root / os.fsdecode(n) for n in out if n and (root / os.fsdecode(n)).is_file())


def slurm_time(s: str) -> float | None:
    try:
        return time.mktime(time.strptime(s, "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return None


# ----------------------------------------------------------------------------- the study


@dataclass
class Study:
    """The study's folder (a copy of the working tree) and its command."""

    root: Path
    scale: str

    @property
    def dir(self) -> Path:
        return self.root / "study"

    @property
    def out(self) -> Path:
        return self.dir / "results" / RUN

    def overlay(self) -> str:
        return OVERLAY + (CI_OVERLAY if self.scale == "ci" else "")

    def command(self) -> list[str]:
        """The README's command, plus the test suite's manners: its job names (so a stopped
        session's jobs are cancelled by the next) and a status poll every few seconds."""
        return [
            str(REPO / ".venv" / "bin" / "snakemake"), "all", "--profile", "profiles/slurm",
            "--configfile", "config/demo.yaml", "chaos.yaml",
            "--slurm-init-seconds-before-status-checks", "2", "--slurm-jobname-prefix", PREFIX,
        ]  # fmt: skip

    def env(self) -> dict[str, str]:
        e = {k: v for k, v in os.environ.items() if not k.startswith("ARCTAX_")}
        owner = os.environ.get(OWNER_VAR) or f"{os.getpid()}:{proc_start(os.getpid())}"
        return {**e, "ARCTAX_SLURM_ACCOUNT": "arctax", OWNER_VAR: owner}

    def fresh_copy(self) -> None:
        """The working tree copied to the study folder (always the same path: checkpoints
        record their folder, so both runs must run in the same one)."""
        for line in Path("/proc/mounts").read_text().splitlines():
            where = line.split()[1]
            if where.startswith(str(self.dir) + "/"):  # a full file system left by a stopped run
                subprocess.run(["umount", "-l", where], capture_output=True, check=False)
        if self.dir.exists():
            shutil.rmtree(self.dir)
        for f in tree_files(REPO):
            dst = self.dir / f.relative_to(REPO)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, dst)
        (self.dir / "chaos.yaml").write_text(self.overlay())

    def key(self) -> str:
        """What the undisturbed run's results depend on: the code and config copied, the
        overlay, the versions of Python and of the packages that compute."""
        h = hashlib.sha256(self.overlay().encode())
        for f in tree_files(REPO):
            rel = f.relative_to(REPO).as_posix()
            if rel.startswith(("docs/", "tests/", "scripts/")) or rel.endswith(".md"):
                continue  # cannot change a number
            h.update(rel.encode() + b"\0" + f.read_bytes())
        versions = sh(str(REPO / ".venv" / "bin" / "python"), "-c",
                      "import torch, pytorch_lightning as lightning, snakemake, numpy, sys; "
                      "print(sys.version, torch.__version__, lightning.__version__, "
                      "snakemake.__version__, numpy.__version__)")  # fmt: skip
        h.update(versions.encode() + str(self.dir).encode())
        return h.hexdigest()


# ----------------------------------------------------------------------------- the driver


@dataclass
class DriverRun:
    n: int
    log: str
    start: float
    end: float | None = None
    rc: int | None = None
    why: str = ""  # "killed" (by the injector), "restart" (after an error), "" (first)


class Driver:
    """The `snakemake` process(es) of a run: started, killed and started again."""

    def __init__(self, study: Study, logs: Path) -> None:
        self.study, self.logs = study, logs
        self.runs: list[DriverRun] = []
        self.proc: subprocess.Popen[bytes] | None = None
        self.lock = threading.Lock()
        logs.mkdir(parents=True, exist_ok=True)

    def start(self, why: str = "") -> None:
        with self.lock:
            run = DriverRun(len(self.runs), str(self.logs / f"driver{len(self.runs)}.log"),
                            time.time(), why=why)  # fmt: skip
            with open(run.log, "w") as f:
                self.proc = subprocess.Popen(
                    self.study.command(), cwd=self.study.dir, stdout=f,
                    stderr=subprocess.STDOUT, env=self.study.env(), start_new_session=True,
                )  # fmt: skip
            self.runs.append(run)
            log(f"driver {run.n} started (pid {self.proc.pid}){' : ' + why if why else ''}")

    def kill9(self) -> int | None:
        """SIGKILL the driver process alone (its Slurm jobs run on), as a lost login node."""
        with self.lock:
            if self.proc is None or self.proc.poll() is not None:
                return None
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            self._ended()
            self.runs[-1].why += " (killed by the injector)"
            return self.proc.pid

    def _ended(self) -> None:
        run = self.runs[-1]
        if run.end is None and self.proc is not None and self.proc.poll() is not None:
            run.end, run.rc = time.time(), self.proc.returncode

    def wait_current(self) -> DriverRun:
        while True:
            with self.lock:
                proc, run = self.proc, self.runs[-1]
            assert proc is not None
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=1)
            with self.lock:
                if self.proc is proc and proc.poll() is not None:
                    self._ended()
                    return run

    def stop(self) -> None:
        """SIGTERM (Snakemake cancels its jobs), then SIGKILL."""
        with self.lock:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    self.proc.kill()

    def submissions(self) -> dict[str, tuple[str, str]]:
        """Slurm job id -> (rule, wildcards folder), from every driver's output."""
        found = {}
        for run in self.runs:
            with contextlib.suppress(OSError):
                for m in SUBMITTED.finditer(Path(run.log).read_text(errors="replace")):
                    found[m[1]] = (m[2], m[3] or "")
        return found


def live_jobs() -> list[tuple[str, str, str]]:
    """(id, state, comment) of the study's queued or running Slurm jobs."""
    out = subprocess.run(["squeue", "-h", "-o", "%i|%T|%j|%k"], capture_output=True, text=True,
                         timeout=30, check=False).stdout  # fmt: skip
    jobs = []
    for line in out.splitlines():
        parts = line.split("|")
        if len(parts) == 4 and parts[2].startswith(PREFIX):
            jobs.append((parts[0], parts[1], parts[3]))
    return jobs


def step_groups(job: str) -> set[int]:
    """The process groups of a job's step tasks with a python process (`scontrol listpids`:
    the step, not the batch script; empty while the step has not started)."""
    res = subprocess.run(["scontrol", "listpids", job], capture_output=True, text=True,
                         timeout=30, check=False)  # fmt: skip
    groups = set()
    for line in res.stdout.splitlines()[1:]:
        fields = line.split()  # PID JOBID STEPID LOCALID GLOBALID
        if len(fields) >= 3 and fields[0].isdigit() and fields[2] != "batch":
            with contextlib.suppress(OSError):
                if b"python" in Path(f"/proc/{fields[0]}/cmdline").read_bytes():
                    groups.add(os.getpgid(int(fields[0])))
    return groups


def daemon(name: str, down: float) -> None:
    """Restart a Slurm daemon (scripts/local-slurm restart), ``down`` seconds after stopping
    it. Started without our environment: a daemon carrying the test session's owner tag would
    be stopped as a leftover test process when the session cleans up."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARCTAX_")}
    res = subprocess.run([str(LOCAL_SLURM), "restart", name, str(down)], capture_output=True,
                         text=True, timeout=120, env=env, check=False)  # fmt: skip
    if res.returncode != 0:
        raise RuntimeError(f"local-slurm restart {name}: {res.stderr.strip()}")


def node() -> str:
    return socket.gethostname().split(".")[0]


# ----------------------------------------------------------------------------- the faults


@dataclass
class Fault:
    kind: str
    at_s: float  # planned, from the injected run's start
    done_s: float | None = None
    target: str = ""
    note: str = ""


def plan(rng: random.Random, wall_s: float, kinds: list[str]) -> list[Fault]:
    """When each fault strikes: uniform over 8-70 % of the undisturbed run's wall time."""
    faults = [Fault(k, round(rng.uniform(0.08, 0.7) * wall_s, 1)) for k in kinds]
    return sorted(faults, key=lambda f: f.at_s)


class Injector(threading.Thread):
    """Injects the planned faults at their times, each on a target it picks with the seed."""

    PREFER: ClassVar[dict[str, tuple[str, ...]]] = {
        "scancel_term": ("train",), "scancel_kill": ("train", "bootstrap_champion"),
        "kill_pgrp": ("adapt", "evaluate", "evaluate_reference"),
        "kill_driver": ("train", "bootstrap_champion", "adapt"),
    }  # fmt: skip

    def __init__(self, study: Study, driver: Driver, faults: list[Fault], rng: random.Random,
                 t0: float, avoid: set[tuple[str, str]]) -> None:  # fmt: skip
        super().__init__(daemon=True)
        self.study, self.driver, self.faults, self.rng, self.t0 = study, driver, faults, rng, t0
        self.avoid = avoid  # the disk_full target: its failure must be the full disk's
        # the jobs queued or running when the driver was killed: left alone by the other
        # faults, so what becomes of them is the lost driver's doing
        self.orphans: list[str] = []
        self.stopping = threading.Event()
        self.errors: list[str] = []

    def run(self) -> None:
        for f in self.faults:
            if f.kind == "disk_full":
                continue  # set up before the run (DiskFull)
            while time.time() - self.t0 < f.at_s and not self.stopping.is_set():
                time.sleep(0.2)
            if self.stopping.is_set():
                f.note = "not injected: the study had ended"
                continue
            try:
                getattr(self, f.kind)(f)
                f.done_s = round(time.time() - self.t0, 1)
                log(f"{f.kind} at {f.done_s}s: {f.target} {f.note}")
            except Exception as e:  # a fault that could not be injected is a finding, not a crash
                f.note = f"could not inject: {e}"
                self.errors.append(f"{f.kind}: {e}")
                log(f"{f.kind}: {f.note}")

    def pick(self, kind: str, wait_s: float = 90) -> tuple[str, str]:
        """A running job of the study (a preferred rule if one runs soon), its id and rule."""
        prefer = self.PREFER.get(kind, ())
        deadline = time.time() + wait_s
        while not self.stopping.is_set():
            subs = self.driver.submissions()
            running = sorted((j, subs.get(j, ("?", ""))[0]) for j, s, _ in live_jobs()
                             if s == "RUNNING" and subs.get(j) not in self.avoid
                             and j not in self.orphans)  # fmt: skip
            good = [(j, r) for j, r in running if r in prefer] or (
                running if time.time() > deadline or not prefer else []
            )
            if good:
                return self.rng.choice(good)
            time.sleep(0.5)
        raise RuntimeError("the study ended before a job ran")

    def scancel_term(self, f: Fault) -> None:
        job, rule = self.pick(f.kind)
        sh("scancel", job)
        f.target, f.note = f"job {job} ({rule})", "scancel (TERM, then KILL after KillWait)"

    def scancel_kill(self, f: Fault) -> None:
        job, rule = self.pick(f.kind)
        sh("scancel", "--signal=KILL", job)
        f.target, f.note = f"job {job} ({rule})", "scancel --signal=KILL (the steps)"

    def kill_pgrp(self, f: Fault) -> None:
        """SIGKILL to the process group of a running job's step (its `python -m snakemake` and
        the script under it), as the OOM killer or a dying node would: Slurm is not told."""
        deadline = time.time() + 240
        while time.time() < deadline and not self.stopping.is_set():
            job, rule = self.pick(f.kind, wait_s=30)
            for _ in range(15):  # a job just begun has no step yet
                groups = step_groups(job)
                if groups:
                    for g in sorted(groups):
                        with contextlib.suppress(ProcessLookupError):
                            os.killpg(g, signal.SIGKILL)
                    f.target = f"job {job} ({rule})"
                    f.note = (
                        f"kill -9 of its step's process group(s) {sorted(groups)} (Slurm not told)"
                    )
                    return
                time.sleep(1)
        raise RuntimeError("no running job had a step with a python process for 240 s")

    def restart_slurmd(self, f: Fault) -> None:
        self.pick(f.kind)
        down = round(self.rng.uniform(1, 8), 1)
        daemon("slurmd", down)
        f.target, f.note = "slurmd", f"stopped, started again {down}s later"

    def restart_slurmctld(self, f: Fault) -> None:
        self.pick(f.kind)
        down = round(self.rng.uniform(2, 12), 1)
        daemon("slurmctld", down)
        f.target, f.note = "slurmctld", f"stopped, started again {down}s later (state kept)"

    def kill_driver(self, f: Fault) -> None:
        self.pick(f.kind)
        live = live_jobs()
        pid = self.driver.kill9()
        self.orphans = [j for j, _, _ in live]
        running = [j for j, s, _ in live if s == "RUNNING"]
        if pid is None:
            raise RuntimeError("no driver running")
        later = round(self.rng.uniform(3, 15), 1)
        time.sleep(later)
        self.driver.start(why=f"the same command again, {later}s after kill -9")
        f.target = f"snakemake pid {pid}"
        f.note = (f"kill -9 with {len(running)} job(s) running ({', '.join(running)}) and "
                  f"{len(live) - len(running)} queued; started again")  # fmt: skip

    def drain_node(self, f: Fault) -> None:
        down = round(self.rng.uniform(10, 30), 1)
        sh("scontrol", "update", f"nodename={node()}", "state=drain", "reason=chaos")
        time.sleep(down)
        sh("scontrol", "update", f"nodename={node()}", "state=resume")
        f.target, f.note = f"node {node()}", f"drained {down}s, resumed"


class DiskFull(threading.Thread):
    """A full file system under one training's output folder: a tmpfs of 1 MB (the demo's
    checkpoints are 1.3-2.1 MB: the first copied there fails mid-file) mounted there before the
    run, and
    unmounted once the job's first attempt has ended (a user frees space); its content is
    checked before that: nothing partial."""

    SIZE = "1m"

    def __init__(self, study: Study, driver: Driver, fault: Fault, rng: random.Random,
                 models: list[str], t0: float) -> None:  # fmt: skip
        super().__init__(daemon=True)
        self.driver, self.fault, self.t0 = driver, fault, t0
        self.model, self.seed = rng.choice(models), rng.choice([307, 1])
        self.dir = study.out / "train" / self.model / f"seed{self.seed}"
        self.key = ("train", f"{self.model}_{self.seed}")
        self.enospc = ""
        self.stopping = threading.Event()
        self.mounted = False
        self.partial: list[str] = []
        self.seen: list[str] = []

    def mount(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        sh("mount", "-t", "tmpfs", "-o", f"size={self.SIZE}", "chaosfull", str(self.dir))
        self.mounted = True
        self.fault.target = (
            f"{self.dir.relative_to(self.dir.parents[3])} (train {self.model} seed{self.seed})"
        )

    def unmount(self) -> None:
        if self.mounted:
            res = subprocess.run(["umount", str(self.dir)], capture_output=True, check=False)
            if res.returncode != 0:
                subprocess.run(["umount", "-l", str(self.dir)], capture_output=True, check=False)
            self.mounted = False

    def why_failed(self, job: str) -> str:
        """The line of the job's output that names the full disk (its Slurm log, its log)."""
        logs = [
            self.driver.study.dir / "logs" / "slurm" / "rule_train" / self.key[1] / f"{job}.log",
            self.driver.study.out / "logs" / "train" / self.model / f"seed{self.seed}.log",
        ]
        for path in logs:
            with contextlib.suppress(OSError):
                for line in path.read_text(errors="replace").splitlines():
                    if "No space left on device" in line:
                        return line.replace(f"{self.driver.study.dir}/", "").strip()[:200]
        return ""

    def run(self) -> None:
        wc = self.key[1]
        job = None
        while not self.stopping.is_set():
            subs = self.driver.submissions()
            mine = sorted((j for j, (r, w) in subs.items() if r == "train" and w == wc), key=int)
            live = {j for j, _, _ in live_jobs()}
            if mine and job is None:
                job = mine[0]
            if job is not None and job not in live:
                state = sh("sacct", "-j", job, "-X", "-n", "-P", "-o", "State", check=False).strip()
                self.seen = sorted(p.name for p in self.dir.iterdir())
                self.enospc = self.why_failed(job)
                self.partial = [
                    n for n in self.seen if TEMP_NAME.search(n) or not complete(self.dir / n)
                ]
                self.unmount()
                self.fault.done_s = round(time.time() - self.t0, 1)
                self.fault.note = (
                    f"job {job} ended {state or '?'} ({self.enospc or 'no ENOSPC in its log'}) "
                    "on the full file system; left there: "
                    f"{', '.join(self.seen) or 'nothing'}; partial: {', '.join(self.partial) or 'none'}; "
                    "unmounted (space freed)"
                )
                log(f"disk_full: {self.fault.note}")
                return
            time.sleep(0.3)
        self.fault.note = self.fault.note or "the job never ran"


# ----------------------------------------------------------------------------- status polls


class Poller(threading.Thread):
    """`arctax status --json` every POLL_S seconds during the run, and what was on disk."""

    def __init__(self, study: Study) -> None:
        super().__init__(daemon=True)
        self.study = study
        self.stopping = threading.Event()
        self.polls: list[Poll] = []

    def outputs(self) -> dict[str, bool]:
        from arctax import status as st

        return {
            j.label: all(p.exists() for p in j.outputs)
            for j in st.study_jobs(study_settings(self.study), self.study.out)
        }

    def run(self) -> None:
        cmd = [str(REPO / ".venv" / "bin" / "arctax"), "--config", "config/demo.yaml",
               "--config", "chaos.yaml", "status", f"results/{RUN}", "--json"]  # fmt: skip
        while not self.stopping.wait(POLL_S):
            if not self.study.out.is_dir():
                continue
            before = self.outputs()
            t0 = time.time()
            res = subprocess.run(cmd, cwd=self.study.dir, capture_output=True, text=True,
                                 timeout=120, check=False)  # fmt: skip
            poll = Poll(t0, time.time(), res.returncode, exists_before=before)
            poll.exists_after = self.outputs()
            listed = ""
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                listed = sh("squeue", "-h", "-o", "%i|%T", timeout=30, check=False)
            poll.listed = {
                i for i, _, t in (ln.partition("|") for ln in listed.splitlines())
                if t in ("RUNNING", "PENDING", "CONFIGURING", "COMPLETING", "SUSPENDED")
            }  # fmt: skip
            try:
                data = json.loads(res.stdout)
                poll.rows = {r["job"]: r["state"] for r in data["rows"]}
                poll.slurm = {r["job"]: r["slurm"] for r in data["rows"]}
            except (ValueError, KeyError) as e:
                poll.error = f"{e}: {res.stderr.strip()[-500:]}"
            if res.returncode != 0:
                poll.error = res.stderr.strip()[-500:]
            self.polls.append(poll)


def sacct_jobs(ids: list[str]) -> dict[str, dict[str, Any]]:
    """id -> state, start, end (epoch s) of the study's Slurm jobs."""
    out: dict[str, dict[str, Any]] = {}
    for i in range(0, len(ids), 200):
        text = sh("sacct", "-X", "-n", "-P", "-o", "JobID,State,Submit,Start,End,ExitCode",
                  "-j", ",".join(ids[i : i + 200]), timeout=60, check=False)  # fmt: skip
        for line in text.splitlines():
            p = line.split("|")
            if len(p) == 6 and p[0].isdigit():
                out[p[0]] = {"state": p[1].split()[0], "submit": slurm_time(p[2]),
                             "start": slurm_time(p[3]), "end": slurm_time(p[4]), "exit": p[5]}  # fmt: skip
    return out


def job_keys(study: Study) -> dict[str, tuple[str, str]]:
    """Status label -> (rule, wildcards folder), as the Slurm executor names its log folders."""
    from arctax import status as st

    def folder(j: Any) -> str:  # the values, in the rule's wildcard order (status.slurm_logs)
        return "_".join(j.wildcards[w] for w in RULES[j.rule].wildcards).replace("/", "_")

    return {j.label: (j.rule, folder(j)) for j in st.study_jobs(study_settings(study), study.out)}


def study_settings(study: Study) -> Any:
    """The study's typed settings (config/demo.yaml + the chaos overlay), as its driver has."""
    from arctax.settings import load_settings

    return load_settings(study.dir / "config" / "demo.yaml", study.dir / "chaos.yaml")


# ----------------------------------------------------------------------------- the runs


def run_undisturbed(study: Study, logs: Path) -> dict[str, Any]:
    study.fresh_copy()
    driver = Driver(study, logs)
    t0 = time.time()
    driver.start()
    run = driver.wait_current()
    if run.rc != 0:
        raise SystemExit(f"chaos: the undisturbed run failed (exit {run.rc}); see {run.log}")
    wall = time.time() - t0
    subs = driver.submissions()
    return {"wall_s": round(wall, 1), "slurm_jobs": len(subs), "key": study.key()}


def baseline(study: Study, reuse: bool) -> tuple[dict[str, Any], bool]:
    """The undisturbed run's results in ``root/baseline`` (reused when its key matches)."""
    base = study.root / "baseline"
    key = study.key()
    meta_path = base / "baseline.json"
    if reuse and meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if meta.get("key") == key and (base / "results" / RUN).is_dir():
            log(
                f"undisturbed run reused from {base} ({meta['wall_s']}s, {meta['slurm_jobs']} jobs)"
            )
            return meta, True
    log("undisturbed run: starting")
    if base.exists():
        shutil.rmtree(base)
    base.mkdir(parents=True)
    meta = run_undisturbed(study, base / "drivers")
    meta["key"] = key
    shutil.move(str(study.dir / "results"), str(base / "results"))
    (meta_path).write_text(json.dumps(meta, indent=2) + "\n")
    log(f"undisturbed run: {meta['wall_s']}s, {meta['slurm_jobs']} Slurm jobs")
    return meta, False


def run_injected(
    study: Study, seed: int, wall_s: float, kinds: list[str], logs: Path
) -> dict[str, Any]:
    rng = random.Random(seed)
    study.fresh_copy()
    faults = plan(rng, wall_s, kinds)
    models = [m for m in ("champion", "encoder_decoder", "decoder_only")
              if not (study.scale == "ci" and m == "encoder_decoder")]  # fmt: skip
    driver = Driver(study, logs)
    t0 = time.time()
    disk = None
    if "disk_full" in kinds:
        disk = DiskFull(
            study, driver, next(f for f in faults if f.kind == "disk_full"), rng, models, t0
        )
        disk.mount()
    injector = Injector(study, driver, faults, rng, t0, {disk.key} if disk else set())
    poller = Poller(study)
    restarts = 0
    try:
        driver.start()
        injector.start()
        poller.start()
        if disk:
            disk.start()
        while True:
            run = driver.wait_current()
            if "killed" in run.why:
                while driver.runs[-1] is run:
                    time.sleep(0.5)  # the injector starts the next one
                continue
            if run.rc == 0 and not injector.is_alive():
                break
            if run.rc == 0:
                injector.stopping.set()  # the study ended before every fault struck
                injector.join()
                if driver.runs[-1] is run:
                    break
                continue
            if restarts >= 4:
                raise SystemExit(f"chaos: the driver failed {restarts + 1} times; see {run.log}")
            restarts += 1
            if disk and disk.mounted:
                disk.join(timeout=120)  # the user frees space first
            driver.start(why=f"the same command again after exit {run.rc}")
    finally:
        injector.stopping.set()
        poller.stopping.set()
        if disk:
            disk.stopping.set()
            disk.unmount()
        driver.stop()
        with contextlib.suppress(Exception):
            sh("scontrol", "update", f"nodename={node()}", "state=resume", check=False)
    injector.join(timeout=60)
    poller.join(timeout=150)
    wall = time.time() - t0
    return {
        "wall_s": round(wall, 1), "faults": [asdict(f) for f in faults], "driver": driver,
        "polls": poller.polls, "restarts": restarts, "injector_errors": injector.errors,
        "orphans": injector.orphans, "t0": t0,
        "disk": None if disk is None else {"dir": str(disk.dir), "seen": disk.seen,
                                           "partial": disk.partial, "enospc": disk.enospc},
    }  # fmt: skip


def final_command(study: Study, logs: Path) -> dict[str, Any]:
    """The same command once more: it must find nothing to do, and no lock in its way."""
    driver = Driver(study, logs)
    driver.start(why="final: nothing must be left to do")
    run = driver.wait_current()
    text = Path(run.log).read_text(errors="replace")
    return {
        "rc": run.rc, "nothing_to_do": "Nothing to be done" in text,
        "lock_error": "LockException" in text or "cannot be locked" in text,
        "log": run.log,
    }  # fmt: skip


def machine() -> str:
    cpus = os.cpu_count()
    slurm = sh("sinfo", "--version", check=False).strip()
    import torch

    return (f"{platform.node()}: {cpus} CPU cores, Linux {platform.release()}, {slurm}, "
            f"Python {platform.python_version()}, torch {torch.__version__}")  # fmt: skip


# ----------------------------------------------------------------------------- main


@contextlib.contextmanager
def cluster_lock():
    """The Slurm tests' lock (one user of the local cluster at a time), unless our parent
    pytest session holds it."""
    if os.environ.get(LOCKED_BY):
        yield
        return
    with LOCK.open("a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"waiting for another session's lock on {LOCK}")
            fcntl.flock(f, fcntl.LOCK_EX)
        yield


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--seed", type=int, default=None, help="the plan's seed (default: drawn, printed)"
    )
    ap.add_argument("--scale", choices=("ci", "full"), default="full",
                    help="full: 3 models; ci: 2 (fits CI's budget)")  # fmt: skip
    ap.add_argument("--faults", default=",".join(KINDS), help="comma-separated kinds")
    ap.add_argument("--root", default=str(REPO / "results" / "chaos"), help="work folders")
    ap.add_argument("--report", default=None, help="write the Markdown report here")
    ap.add_argument("--no-reuse", action="store_true", help="run the undisturbed study again")
    ap.add_argument("--strict", action="store_true",
                    help="also fail when a job ran twice at once or finished work was done again")  # fmt: skip
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("chaos: needs root (it restarts Slurm's daemons and mounts a tmpfs)", file=sys.stderr)
        return 77
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 10**6)
    kinds = [k for k in args.faults.split(",") if k]
    unknown = set(kinds) - set(KINDS)
    if unknown:
        print(
            f"chaos: unknown fault kinds {sorted(unknown)} (known: {', '.join(KINDS)})",
            file=sys.stderr,
        )
        return 2
    log(f"seed {seed} (repeat: --seed {seed}), scale {args.scale}, faults {', '.join(kinds)}")
    study = Study(Path(args.root).resolve(), args.scale)
    study.root.mkdir(parents=True, exist_ok=True)
    with cluster_lock():
        up = subprocess.run([str(LOCAL_SLURM), "status"], capture_output=True, check=False)
        started = up.returncode != 0
        if started:
            env = {k: v for k, v in os.environ.items() if not k.startswith("ARCTAX_")}
            res = subprocess.run([str(LOCAL_SLURM), "up"], capture_output=True, text=True,
                                 timeout=600, env=env, check=False)  # fmt: skip
            if res.returncode != 0:
                print(f"chaos: scripts/local-slurm up failed:\n{res.stderr}", file=sys.stderr)
                return res.returncode
        try:
            return _study(args, study, seed, kinds)
        finally:
            for j, _, _ in live_jobs():
                subprocess.run(["scancel", j], capture_output=True, check=False)
            if started:
                subprocess.run([str(LOCAL_SLURM), "down"], capture_output=True, check=False)


def tmpfs_refused() -> str:
    """Why this machine refuses a tmpfs mount (a container without the right); empty if not."""
    probe = Path(tempfile.mkdtemp(prefix="chaos-probe-"))
    try:
        sh("mount", "-t", "tmpfs", "-o", "size=64k", "chaosprobe", str(probe))
        sh("umount", str(probe), check=False)
        return ""
    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
        return str(e)[:200]
    finally:
        with contextlib.suppress(OSError):
            probe.rmdir()


def _study(args: argparse.Namespace, study: Study, seed: int, kinds: list[str]) -> int:
    not_injected = {}
    if "disk_full" in kinds and (why := tmpfs_refused()):
        not_injected["disk_full"] = f"this machine refuses a tmpfs mount: {why}"
        kinds = [k for k in kinds if k != "disk_full"]
        log(f"disk_full: not injected ({not_injected['disk_full']})")
    base, reused = baseline(study, reuse=not args.no_reuse)
    logs = study.root / "injected"
    if logs.exists():
        shutil.rmtree(logs)
    log(f"injected run: {len(kinds)} faults over about {base['wall_s']:.0f}s")
    inj = run_injected(study, seed, base["wall_s"], kinds, logs / "drivers")
    final = final_command(study, logs / "final")
    driver: Driver = inj["driver"]
    subs = driver.submissions()
    jobs = sacct_jobs(sorted(subs, key=int))
    keys = job_keys(study)
    compare = compare_trees(study.root / "baseline" / "results" / RUN, study.out)
    partial = partial_files(study.out)
    locks = study.dir / ".snakemake" / "locks"
    left_locks = sorted(p.name for p in locks.iterdir()) if locks.is_dir() else []
    lock_errors = [
        r.n for r in driver.runs if "LockException" in Path(r.log).read_text(errors="replace")
    ]
    incomplete = study.dir / ".snakemake" / "incomplete"
    markers = [p.name for p in incomplete.rglob("*") if p.is_file()] if incomplete.is_dir() else []
    violations = status_violations(inj["polls"], keys, subs, jobs)
    events = owner_events(study.out)
    worked, adopted = working_jobs(events)
    over = overlaps(subs, jobs, ONE_WRITER, worked)
    over["orphans"] = orphan_fates(inj["orphans"], subs, jobs, inj["t0"])
    over["writers_at_once"] = writers_at_once(events)
    over["adopted_by_a_waiting_copy"] = sorted(adopted, key=int)
    over["adopted_by_the_driver"] = [
        line.split("arctax: ", 1)[1]
        for r in driver.runs
        for line in Path(r.log).read_text(errors="replace").splitlines()
        if line.startswith("arctax: adopted ")
    ]
    same = not compare["different"] and not compare["missing"] and not compare["extra"]
    disk = inj["disk"]
    checks = [
        (
            "every output exists",
            final["rc"] == 0 and final["nothing_to_do"] and not compare["missing"],
            "the same command again had nothing to do"
            if final["nothing_to_do"]
            else f"see {final['log']}",
        ),
        (
            "the undisturbed numbers",
            same,
            f"{len(compare['identical'])} files bit for bit, {len(compare['equal_but_timing'])} "
            f"equal but for timings, {len(compare['different'])} different",
        ),
        ("no partial file", not partial, "none" if not partial else "; ".join(partial[:5])),
        (
            "no lock needing --unlock",
            not left_locks and not lock_errors and not final["lock_error"],
            "no LockException in any driver run; .snakemake/locks empty at the end"
            if not (left_locks or lock_errors)
            else f"left: {left_locks}; LockException in runs {lock_errors}",
        ),
        ("no incomplete marker left", not markers, f"{len(markers)} left"),
        (
            "`arctax status` right throughout",
            not violations,
            f"{len(inj['polls'])} polls, {len(violations)} violations",
        ),
    ]
    if disk is not None:
        checks.append(
            (
                "a full disk fails the job and leaves nothing partial",
                bool(disk["enospc"]) and not disk["partial"],
                f"{disk['enospc'] or 'the job did not fail on ENOSPC'}; partial there: "
                f"{', '.join(disk['partial']) or 'none'}",
            )
        )
    checks.append(
        (
            "one writer per job",
            not over["writers_at_once"],
            f"{sum(len(v) for v in events.values())} ownership events of {len(events)} jobs; "
            f"{len(over['writers_at_once'])} times two copies wrote at once",
        )
    )
    redone = [x for x in over["completed_more_than_once"] if x.split()[0] in ONE_WRITER]
    if args.strict:
        checks.append(
            (
                "finished work of a one-writer job never redone",
                not redone,
                f"{len(redone)} such jobs completed their work more than once",
            )
        )
    res = {
        "seed": seed, "scale": args.scale, "kinds": kinds, "not_injected": not_injected,
        "date": dt.date.today().isoformat(),
        "machine": machine(), "command": study.command(), "base": base, "base_reused": reused,
        "wall_s": inj["wall_s"], "faults": inj["faults"], "slurm_jobs": len(subs),
        "restarts": inj["restarts"], "drivers": [asdict(r) for r in driver.runs],
        "polls": len(inj["polls"]), "compare": compare, "partial": partial,
        "status_violations": violations, "overlaps": over, "jobs": {j: {**jobs.get(j, {}),
        "rule": subs[j][0], "wildcards": subs[j][1]} for j in subs},
        "injector_errors": inj["injector_errors"], "checks": checks, "final": final,
        "slurm_messages": slurm_messages(study.dir / "logs" / "slurm"),
    }  # fmt: skip
    (study.root / "result.json").write_text(json.dumps(res, indent=2, default=str) + "\n")
    text = report(res)
    (study.root / "CHAOS.md").write_text(text)
    if args.report:
        Path(args.report).write_text(text)
    print(text)
    ok = all(c[1] for c in checks) and not inj["injector_errors"]
    log(f"{'every check passed' if ok else 'FAILED'}; seed {seed}; {study.root / 'result.json'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
