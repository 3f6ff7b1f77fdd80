"""Data preparation and loading, and the workflow's dry-run times."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
from harness import REPO, Row, median_time

from arctax.data.datamodule import real_token_fraction
from arctax.data.dataset import load_split
from arctax.data.prepare import prepare
from arctax.settings import Settings


def bench_data(cfg: Settings, work: Path, s: Any) -> tuple[list[Row], Path]:
    """Prepare all ARC-AGI-1 tasks (400 training + 400 evaluation) and load a split."""
    full = work / "full"
    manifests: list[dict] = []
    t_prep = median_time(
        lambda: manifests.append(prepare(cfg.data, cfg.taxonomy, full)), s.workflow_reps
    )
    t_load = median_time(lambda: load_split(full, "train"), 5)
    manifest = manifests[-1]
    n_tasks = sum(c["tasks"] for c in manifest["counts"].values())
    n_tasks += len(manifest.get("unusable_after_filter", []))
    train = load_split(full, "train")
    rows: list[Row] = [
        ("data", f"prepare all {n_tasks} ARC-AGI-1 tasks", f"{t_prep:.2f}", "s, median"),
        ("data", f"load prepared train split ({len(train)} examples)", f"{t_load * 1e3:.1f}", "ms"),
    ]
    src, tgt = train.token_lengths()
    for fmt, lengths in (
        ("seq2seq/champion", np.stack([src, tgt], 1)),
        ("decoder_only", src + tgt),
    ):
        g = real_token_fraction(lengths, s.batch_size, grouped=True)
        r = real_token_fraction(lengths, s.batch_size, grouped=False)
        rows.append(
            (
                "data",
                f"real-token fraction {fmt}, whole train epoch: grouped / random",
                f"{g:.3f} / {r:.3f}",
                f"batch {s.batch_size}",
            )
        )
    return rows, full


def snakemake_bin() -> str:
    exe = Path(sys.executable).parent / "snakemake"
    found = str(exe) if exe.exists() else shutil.which("snakemake")
    if not found:
        raise RuntimeError("snakemake not found next to this Python or on PATH; run `make setup`")
    return found


def bench_workflow(work: Path, s: Any) -> list[Row]:
    """Dry runs of the demo workflow in a temporary copy of the repository."""
    tree = work / "repo"
    tree.mkdir()
    for part in ("Snakefile", "workflow", "config", "profiles"):
        src = REPO / part
        if src.is_dir():
            shutil.copytree(src, tree / part)
        elif src.exists():
            shutil.copy2(src, tree / part)
    smk = snakemake_bin()
    # adaptation off: its shards come from a checkpoint (the data), which empty placeholders
    # cannot stand in for; the dry runs time the main study's DAG
    demo = ["--configfile", "config/demo.yaml", "--config", 'adapt={"enabled": false}']

    def snake(*args: str) -> str:
        p = subprocess.run(
            [smk, *args], cwd=tree, capture_output=True, text=True, check=False, timeout=300
        )
        if p.returncode:
            raise RuntimeError(f"snakemake {' '.join(args)} failed:\n{p.stdout}\n{p.stderr}")
        return p.stdout + p.stderr

    seeds = "seeds=[" + ",".join(map(str, range(10))) + "]"
    outs: list[str] = []
    t_cold = median_time(lambda: snake("all", "-n", *demo), 1)  # also creates .snakemake/
    t_fresh = median_time(lambda: snake("all", "-n", *demo), s.workflow_reps)
    t_seeds = median_time(lambda: outs.append(snake("all", "-n", *demo, seeds)), s.workflow_reps)
    jobs = _job_total(outs[-1])
    # Up to date without minutes of training: every output the DAG plans becomes an empty
    # placeholder, then --touch stamps them in DAG order. The dry run's work (DAG, file
    # checks) is the same as after a real run; only the files' contents differ.
    summary = snake("all", "--summary", *demo)
    for line in summary.splitlines()[1:]:
        path = line.split("\t")[0].strip()
        if path and "\t" in line:
            (tree / path).parent.mkdir(parents=True, exist_ok=True)
            (tree / path).touch()
    snake("all", "--touch", "--cores", "1", *demo)
    t_done = median_time(lambda: outs.append(snake("all", "-n", *demo)), s.workflow_reps)
    if "Nothing to be done" not in outs[-1]:
        raise RuntimeError("workflow copy is not up to date after --touch:\n" + outs[-1])
    rows = []
    if shutil.which("scontrol"):
        # snakemake-executor-plugin-slurm runs this at every snakemake start-up (it reads
        # MinJobAge); with a slurm.conf naming an unreachable controller it waits ~9 s.
        t_probe = median_time(
            lambda: subprocess.run(["scontrol", "show", "config"], capture_output=True, timeout=30),
            1,
        )
        rows.append(
            (
                "workflow",
                "Slurm plugin start-up probe (`scontrol show config`)",
                f"{t_probe:.2f}",
                "s, inside every snakemake run below",
            )
        )
    return [
        *rows,
        ("workflow", "snakemake all -n, demo, fresh tree, first run", f"{t_cold:.2f}", "s"),
        ("workflow", "snakemake all -n, demo, fresh tree, again", f"{t_fresh:.2f}", "s, median"),
        (
            "workflow",
            "snakemake all -n, demo, everything up to date",
            f"{t_done:.2f}",
            "s (outputs: placeholders + --touch)",
        ),
        ("workflow", f"snakemake all -n, 3 models x 10 seeds ({jobs} jobs)", f"{t_seeds:.2f}", "s"),
    ]


def _job_total(out: str) -> int:
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == "total" and parts[1].isdigit():
            return int(parts[1])
    return -1
