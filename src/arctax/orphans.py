"""A dead driver's jobs that finished without it: adopted, not redone.

A ``snakemake`` driver killed outright (``kill -9``, a login node rebooted) leaves its Slurm
jobs running: they are orphans. Each goes on and finishes its work, but nobody removes the
job's incomplete markers (``.snakemake/incomplete/``), so the next driver, with
``--rerun-incomplete``, would delete the finished outputs and run the job again.

:func:`adopt_finished` runs as the next driver parses the workflow (``workflow/rules/driver.smk``,
after the stale lock is removed, before Snakemake reads the markers). A job is adopted (its
markers removed, so Snakemake counts it done) only on proof that the submission the markers
belong to finished:

- its done marker (the layout's ``done``: written by the job after its outputs, through
  :class:`arctax.lifecycle.JobState`) is newer than the incomplete marker (created when the
  job was submitted): an earlier run's marker never counts;
- every one of its declared outputs is there (each written atomically: whole or absent).

Never while a driver holds the lock (it records its own jobs). Jobs without a done marker
(data preparation, the smoke test, comparisons: minutes at most) are run again as before. An
orphan still running when the driver starts again is resubmitted; that copy waits for the
orphan as the job's one writer and adopts what it finished (:meth:`JobState.claim`).
"""

from __future__ import annotations

from pathlib import Path

from arctax.settings import Settings
from arctax.status import Snakemake, study_jobs


def adopt_finished(s: Settings, out: str | Path, workdir: str | Path = ".") -> list[str]:
    """Adopt the jobs of study ``out`` (``results/<run>``) that a dead driver started and that
    finished after it died; one line per job adopted."""
    sm = Snakemake(Path(workdir), [])
    if sm.running:
        return []
    lines = []
    for job in study_jobs(s, Path(out)):
        marker = sm.marker(job) if job.done is not None else None
        if marker is None or job.done is None:
            continue
        try:
            finished = job.done.stat().st_mtime
        except OSError:
            continue  # not finished (or finished by an earlier run whose marker is gone)
        if finished < marker["since"] or not all(p.is_file() for p in job.outputs):
            continue
        for p in sm.marker_files(job):
            p.unlink(missing_ok=True)
        slurm = f", Slurm job {marker['external_jobid']}" if marker.get("external_jobid") else ""
        lines.append(
            f"arctax: adopted {job.label}: it finished after its driver died{slurm} "
            "(its outputs kept, not run again)"
        )
    return lines
