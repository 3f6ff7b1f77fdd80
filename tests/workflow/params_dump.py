"""Every job's params of a workflow DAG as JSON, keyed ``rule[wildcard=value,...]``, each as
Snakemake's params trigger compares it (``repr`` of the value: a dict's key order counts), so
two equal dumps mean that nothing re-runs.

    python tests/workflow/params_dump.py OUT.json WORKDIR TARGET CONFIGFILE...

Runs the workflow of this checkout (its Snakefile) in ``WORKDIR`` (which holds, or links to, the
config files named). Two plans: every job forced (as ``snakemake -n --forceall``); then, with the
prepared data planted as empty files, the jobs after the ``prepare_test`` checkpoint, whose
input functions read a prepared test set (the adaptation's shards).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PREPARED = ("generate_rearc", "rearc_gather", "prepare_data", "prepare_test")  # in DAG order


def plan(workdir: Path, target: str, configfiles: list[Path], forceall: bool) -> dict:
    """``{"params": {job: {param: value}}, "prepared": [[rule, [outputs]], ...]}``."""
    from snakemake.api import SnakemakeApi
    from snakemake.settings.enums import RerunTrigger
    from snakemake.settings.types import (
        ConfigSettings,
        DAGSettings,
        DeploymentSettings,
        OutputSettings,
        ResourceSettings,
        StorageSettings,
        WorkflowSettings,
    )

    # the planted files have no Snakemake records: only their times say they are done
    triggers = set(RerunTrigger) if forceall else {RerunTrigger.MTIME}
    with SnakemakeApi(OutputSettings(quiet={"all"})) as api:
        wapi = api.workflow(
            resource_settings=ResourceSettings(cores=1),
            config_settings=ConfigSettings(configfiles=configfiles),
            storage_settings=StorageSettings(),
            workflow_settings=WorkflowSettings(),
            deployment_settings=DeploymentSettings(),
            snakefile=REPO / "Snakefile",
            workdir=workdir,
        )
        wapi.dag(DAGSettings(targets={target}, forceall=forceall, rerun_triggers=triggers))
        wf = wapi._workflow  # the API builds a DAG only to run or print it: build it here
        wf._prepare_dag(forceall=forceall, ignore_incomplete=True, lock_warn_only=True)
        wf._build_dag()
        from snakemake.io import WILDCARD_REGEX

        def plain(f: object) -> str:  # the pattern as written: no wildcard constraints
            return WILDCARD_REGEX.sub(lambda m: "{" + m.group("name") + "}", str(f))

        rules = {
            r.name: {
                "output": [plain(f) for f in r.output],
                "log": [plain(f) for f in r.log],
                "benchmark": plain(r.benchmark) if r.benchmark else None,
            }
            for r in wf.rules
        }
        rows, prepared = {}, []
        for job in wf.dag.jobs:
            wc = ",".join(f"{k}={v}" for k, v in sorted(job.wildcards_dict.items()))
            rows[f"{job.rule.name}[{wc}]"] = {k: repr(v) for k, v in job.params.items()}
            if job.rule.name in PREPARED:
                prepared.append([job.rule.name, [str(f) for f in job.output]])
        return {"params": rows, "prepared": prepared, "rules": rules}


def _child(workdir: Path, target: str, cfgs: list[str], forceall: bool) -> dict:
    res = subprocess.run(
        [sys.executable, __file__, "--plan", "forceall" if forceall else "planted",
         str(workdir), target, *cfgs],
        cwd=workdir, capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)])},
    )  # fmt: skip
    if res.returncode != 0:
        raise RuntimeError(f"planning {target} with {cfgs} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.splitlines()[-1])


def rules(workdir: Path, target: str, cfgs: list[str]) -> dict[str, dict]:
    """Every rule of the workflow: its output, log and benchmark patterns as it declares them."""
    return _child(workdir, target, cfgs, forceall=True)["rules"]


def dump(workdir: Path, target: str, cfgs: list[str]) -> dict[str, dict]:
    """Every job's params: the forced plan, then the jobs planned after the checkpoint."""
    first = _child(workdir, target, cfgs, forceall=True)
    rows = first["params"]
    stamp = 1_000_000_000  # older first, so nothing planted is newer than what reads it
    for rule in PREPARED:
        for r, outputs in first["prepared"]:
            if r != rule:
                continue
            for f in outputs:
                p = workdir / f
                p.parent.mkdir(parents=True, exist_ok=True)
                if rule == "rearc_gather":
                    p.mkdir(exist_ok=True)
                elif p.name == "manifest.json" and rule == "prepare_test":
                    p.write_text(json.dumps({"splits": {"test": [f"{i:08x}" for i in range(60)]}}))
                else:
                    p.touch()
                os.utime(p, (stamp, stamp))
        stamp += 1000
    second = _child(workdir, target, cfgs, forceall=False)["params"]
    for job, params in second.items():
        if job in rows and rows[job] != params:
            raise AssertionError(f"{job}: two plans gave different params")
        rows[job] = params
    return rows


if __name__ == "__main__":
    if sys.argv[1] == "--plan":
        mode, workdir, target, *cfgs = sys.argv[2:]
        got = plan(Path(workdir), target, [Path(c) for c in cfgs], mode == "forceall")
        print(json.dumps(got))
    else:
        out, workdir, target, *cfgs = sys.argv[1:]
        rows = dump(Path(workdir).resolve(), target, cfgs)
        Path(out).write_text(json.dumps(rows, indent=1, sort_keys=True) + "\n")
        print(len(rows), "jobs")
