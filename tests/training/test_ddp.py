"""Multi-process training: DDP on CPU over gloo, started by Lightning's own launcher.

The runs go through ``ddp_script.py`` (train() as a script, as Snakemake runs it), so rank 1
is started the production way: Lightning re-runs the script. Checked: two processes really
run (ranks and PIDs in their own logs), only rank 0 writes outputs and state (every file
operation of every process, recorded by audit hooks), one process and two give the same
per-epoch losses and optimizer steps with the global batch (Trial 69's 32, split 16 + 16),
SIGTERM to one rank stops both at the same batch boundary (a timeout turns a hang into a
failure), and a run stopped mid-epoch resumes to exactly the uninterrupted result.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from arctax.data.dataset import load_split
from arctax.lifecycle import STOPPED_EXIT
from arctax.settings import load_settings
from arctax.training.module import SUMS, answer_metrics, answer_sums
from arctax.training.ranks import process_rank
from arctax.training.train import train
from arctax.training.trainer import resolve_launch
from tests.conftest import REPO, prepared, tiny_overrides

SCRIPT = Path(__file__).with_name("ddp_script.py")
MODEL = "encoder_decoder"
# 1 vs 2 processes, per-epoch train/val loss, 3 epochs of the tiny model without dropout.
# Measured max |diff| 4.8e-7 (avx512, avx2, default kernels; all three models): float
# summation order (two half batches, the gradient all-reduce): 1-2 float32 ulps. 10x margin.
LOSS_TOL = 5e-6
RUN_TIMEOUT_S = 180
RANK_LINE = re.compile(r"^rank (\d+)/(\d+) pid (\d+) ", re.M)


def overrides(dropout: bool = True, **trainer) -> dict:
    """The tiny config on 38 tasks: 161 training examples = 5 x 32 + 1, so the last global
    batch leaves rank 1 without a sample (the padding path runs)."""
    o = tiny_overrides(**trainer)
    o["data"]["max_tasks"] = 38
    if not dropout:
        o["models"] = {
            m: {k: (0.0 if "dropout" in k else v) for k, v in c.items()}
            for m, c in o["models"].items()
        }
    return o


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ddp_data")
    prepared(load_settings(overrides=overrides()), out)
    assert len(load_split(out, "train")) % 32 == 1, "the padding path would not run"
    return out


@dataclass
class Run:
    """One training started through ddp_script.py in ``root``."""

    root: Path
    proc: subprocess.Popen

    @property
    def out(self) -> Path:
        return self.root / "out"

    @property
    def state(self) -> Path:
        return self.root / "state"

    def log(self, rank: int = 0) -> str:
        path = self.root / ("log" if rank == 0 else f"log.rank{rank}")
        return path.read_text() if path.exists() else ""

    def pids(self) -> dict[int, int]:
        """rank -> pid, from the line each process prints once its rank is set up."""
        found = {}
        for rank in (0, 1):
            for r, world, pid in RANK_LINE.findall(self.log(rank)):
                assert int(world) == 2 and int(r) == rank, (rank, r, world)
                found[rank] = int(pid)
        return found

    def wait(self, timeout: float = RUN_TIMEOUT_S) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            for pid in self.pids().values():  # our own processes, by pid
                _kill(pid, signal.SIGKILL)
            self.proc.kill()
            pytest.fail(f"run in {self.root} hung:\n{self.log(0)[-3000:]}\n{self.log(1)[-3000:]}")


def _kill(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def start(root: Path, data: Path, o: dict, own_group: bool = False) -> Run:
    """Start a training; rank 1 (if devices: 2) is started by Lightning from rank 0.
    ``own_group``: in a process group of its own, as a Slurm job step is."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "overrides.json").write_text(json.dumps(o))
    args = [root / "overrides.json", MODEL, data, root / "out", root / "state", root / "log"]
    proc = subprocess.Popen(
        [sys.executable, SCRIPT, *map(str, args)],
        cwd=REPO,
        env=dict(
            os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=own_group,
    )
    return Run(root, proc)


def metrics(path: Path) -> list[dict[str, float | None]]:
    """metrics.csv's rows without the wall clock; a NaN (no grad scaler on CPU) reads as None,
    so two runs' rows compare equal (NaN != NaN)."""

    def value(v: str) -> float | None:
        return None if math.isnan(x := float(v)) else x

    with path.open() as f:
        return [{k: value(v) for k, v in r.items() if k != "seconds"} for r in csv.DictReader(f)]


@pytest.fixture(scope="module")
def two(data, tmp_path_factory) -> Run:
    """3 epochs, 2 processes, no dropout."""
    run = start(tmp_path_factory.mktemp("two"), data, overrides(False, max_epochs=3, devices=2))
    assert run.wait() == 0, run.log(0)[-3000:] + run.log(1)[-3000:]
    return run


# --- the pieces, without processes ------------------------------------------------------


def launch_of(overrides):
    s = load_settings(overrides=overrides)
    return resolve_launch(s.trainer, s.trial69)


def test_launch_devices_never_silently_one(monkeypatch):
    monkeypatch.delenv("SLURM_NTASKS", raising=False)
    cfg = load_settings(overrides=tiny_overrides(devices=2))
    launch = resolve_launch(cfg.trainer, cfg.trial69)
    assert launch.devices == 2 and launch.strategy == "ddp" and launch.batch_per_rank == 16
    assert launch.environment == "lightning"
    if not torch.cuda.is_available():
        assert launch.accelerator == "cpu" and launch.backend == "gloo"
        assert "2 CPU processes" in launch.note  # auto without CUDA: said, not hidden
        cpu = launch_of(tiny_overrides(devices=2, accelerator="cpu"))
        assert cpu.devices == 2 and cpu.backend == "gloo" and cpu.note is None
        with pytest.raises(ValueError, match="no CUDA device"):
            launch_of(tiny_overrides(devices=2, accelerator="gpu"))
    monkeypatch.setenv("SLURM_NTASKS", "2")  # srun started one task per process
    assert resolve_launch(cfg.trainer, cfg.trial69).environment == "slurm"
    with pytest.raises(ValueError, match=r"trainer.devices: 3 cannot split trial69.batch_size: 32"):
        launch_of(tiny_overrides(devices=3))


@pytest.mark.parametrize(
    ("env", "rank"),
    [
        ({}, 0),
        ({"LOCAL_RANK": "1", "SLURM_NTASKS": "1", "SLURM_PROCID": "0"}, 1),  # Lightning's launcher
        ({"SLURM_NTASKS": "2", "SLURM_PROCID": "1"}, 1),  # srun, one task per rank
        ({"SLURM_NTASKS": "1", "SLURM_PROCID": "0"}, 0),  # a one-task job step
        ({"RANK": "3", "LOCAL_RANK": "1"}, 3),  # torchrun
    ],
)
def test_process_rank_from_the_launchers_environment(monkeypatch, env, rank):
    for k in ("RANK", "LOCAL_RANK", "SLURM_NTASKS", "SLURM_PROCID"):
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert process_rank() == rank


def test_sums_add_up_across_a_split_batch_and_padding_counts_nothing():
    """What makes 2 ranks x 16 equal 1 x 32: sums over the halves are the global sums."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 9, 15, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 15, (6, 9), generator=g)
    labels[:, 7:] = -100
    labels[1, 3:] = -100
    inputs = torch.randint(0, 15, (6, 9), generator=g)
    inputs[:, 0] = 12  # BOS: the first cell, given in the paper's measurement
    whole = answer_sums(logits, labels, inputs)
    halves = [answer_sums(logits[i::2], labels[i::2], inputs[i::2]) for i in (0, 1)]
    assert set(whole) == set(SUMS)  # the paper's sums too: DDP reduces them all
    for k in SUMS:
        assert torch.allclose(whole[k].double(), halves[0][k].double() + halves[1][k].double())
    padded = torch.cat([labels, torch.full((1, 9), -100)])  # a padding sample: no labels
    with_pad = answer_metrics(torch.cat([logits, logits[:1]]), padded)
    for k, v in answer_metrics(logits, labels).items():
        assert torch.allclose(v, with_pad[k]), k
    right = labels.clone()
    right[labels == -100] = 0
    sure = torch.nn.functional.one_hot(right, 15).double() * 50
    assert float(answer_metrics(torch.cat([sure, sure[:1]]), padded)["tf_grid_acc"]) == 1.0


# --- real processes -----------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.full  # make test-rest (CI): see the Makefile
def test_two_processes_start_and_only_rank0_writes(two: Run):
    pids = two.pids()
    assert set(pids) == {0, 1} and pids[0] != pids[1] and os.getpid() not in pids.values()
    assert "2 CPU processes (DDP over gloo)" in two.log(0)  # devices: 2 without CUDA, said
    prov = json.loads((two.out / "provenance.json").read_text())
    assert prov["devices_used"] == 2 and prov["strategy"] == "DDPStrategy"
    assert prov["process_group_backend"] == "gloo" and prov["batch_size_per_rank"] == 16
    assert prov["cluster_environment"] == "LightningEnvironment"
    assert next(r for r in prov["audit"] if r["key"] == "batch_size")["match"]  # global 32
    # Every rank's log is kept, each in its own files.
    assert two.state.with_name("state.attempts.rank1.log").read_text() == two.log(1)
    # Every file operation of each process (audit hooks in ddp_script.py), by rank.
    writes = {}
    for f in two.root.glob("log.writes.*.json"):
        rec = json.loads(f.read_text())
        rank = next(r for r, pid in pids.items() if pid == rec["pid"])
        writes[rank] = [(op, *paths) for op, *paths in rec["writes"]]
    root = str(two.root)
    mine = {
        r: [w for w in ws if any(p.startswith(root) for p in w[1:])] for r, ws in writes.items()
    }
    renamed = {Path(w[2]).name for w in mine[0] if w[0] == "os.rename"}
    # the hooks see rank 0's writes (else this test could not fail) ...
    assert {"last.ckpt", "best.ckpt", "metrics.csv", "provenance.json", "finished.json"} <= renamed
    # ... and rank 1 wrote nothing of the run but its own logs
    rank1 = [w for w in mine[1] if not (w[0] == "os.mkdir" and w[1] == root)]
    assert rank1 and all(w[0] == "open" and ".rank1" in w[1] for w in rank1), rank1


@pytest.mark.slow
def test_one_and_two_processes_give_the_same_losses(two: Run, data, tmp_path):
    cfg = load_settings(overrides=overrides(False, max_epochs=3, devices=1))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each rank has (and 2 threads crawl on a loaded 2-core box)
    try:
        train(cfg, MODEL, 307, data, tmp_path / "one")
    finally:
        torch.set_num_threads(threads)
    one, both = metrics(tmp_path / "one" / "metrics.csv"), metrics(two.out / "metrics.csv")
    assert [r["step"] for r in one] == [r["step"] for r in both] == [6, 12, 18]
    for a, b in zip(one, both, strict=True):
        for key in ("train_loss", "val_loss"):
            assert abs(a[key] - b[key]) <= LOSS_TOL, (a["epoch"], key, a[key], b[key])
        assert a["lr"] == b["lr"]


@pytest.mark.slow
@pytest.mark.full  # make test-rest (CI): see the Makefile
def test_sigterm_to_one_rank_stops_all_and_resume_equals_uninterrupted(data, tmp_path):
    """With dropout: each rank's RNG stream is saved and resumed (rank 1's is not rank 0's)."""
    straight = start(tmp_path / "straight", data, overrides(max_epochs=3, devices=2))
    stopped = start(tmp_path / "stopped", data, overrides(max_epochs=100, devices=2))
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while not ((stopped.state / "last.ckpt").exists() and len(stopped.pids()) == 2):
        assert stopped.proc.poll() is None and time.monotonic() < deadline, stopped.log()[-3000:]
        time.sleep(0.05)
    pids = stopped.pids()
    os.kill(pids[1], signal.SIGTERM)  # rank 1 only; rank 0 never gets a signal
    assert stopped.wait(timeout=60) == STOPPED_EXIT, stopped.log()[-3000:]
    time.sleep(0.5)
    assert not Path(f"/proc/{pids[1]}").exists() or "zombie" in _status(pids[1])
    assert "training stopped (received SIGTERM)" in stopped.log(1)
    assert "training stopped (another rank got a stop signal" in stopped.log(0)
    assert not stopped.out.exists()  # nothing claimed as finished
    done = metrics(stopped.state / "metrics.csv")
    assert 1 <= len(done) < 3, f"stopped after epoch {len(done)}: nothing left to resume"

    resumed = start(tmp_path / "stopped", data, overrides(max_epochs=3, devices=2))
    assert resumed.wait() == 0, resumed.log()[-3000:]
    assert "resuming" in resumed.log(0) and "resuming" in resumed.log(1)
    assert straight.wait() == 0, straight.log()[-3000:]
    assert metrics(resumed.out / "metrics.csv") == metrics(straight.out / "metrics.csv")
    rng = torch.load(resumed.out / "last.ckpt", weights_only=True)["callbacks"]["RNGState"]
    assert len(rng["ranks"]) == 2
    assert not torch.equal(rng["ranks"][0]["torch"], rng["ranks"][1]["torch"])


def _status(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().lower()
    except OSError:
        return "zombie"


@pytest.mark.slow
@pytest.mark.full  # make test-rest (CI): see the Makefile
def test_group_sigterm_with_workers_stops_every_rank_and_resumes(data, tmp_path):
    """scancel signals every process of the step: both ranks and their DataLoader workers."""
    o = overrides(max_epochs=100, devices=2, num_workers=2)
    stopped = start(tmp_path / "stopped", data, o, own_group=True)
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while not ((stopped.state / "last.ckpt").exists() and len(stopped.pids()) == 2):
        assert stopped.proc.poll() is None and time.monotonic() < deadline, stopped.log()[-3000:]
        time.sleep(0.05)
    os.killpg(stopped.proc.pid, signal.SIGTERM)
    assert stopped.wait(timeout=60) == STOPPED_EXIT, stopped.log()[-3000:]
    for rank in (0, 1):
        assert "training stopped" in stopped.log(rank), stopped.log(rank)[-3000:]
        assert "killed by signal" not in stopped.log(rank)
    done = metrics(stopped.state / "metrics.csv")
    assert 1 <= len(done) < 3, f"stopped after epoch {len(done)}: nothing left to resume"
    o["trainer"]["max_epochs"] = 3
    resumed = start(tmp_path / "stopped", data, o)
    assert resumed.wait() == 0, resumed.log()[-3000:]
    straight = start(tmp_path / "straight", data, overrides(max_epochs=3, devices=2))
    assert straight.wait() == 0, straight.log()[-3000:]
    assert metrics(resumed.out / "metrics.csv") == metrics(straight.out / "metrics.csv")
