# The driver's lock and a dead driver's jobs (arctax.lifecycle.driver, arctax.orphans), included
# after common.smk. Snakemake checks its lock and its incomplete markers after parsing, so here:
# a lock left by a driver killed outright (kill -9, a rebooted login node) is removed on proof
# that its owner is dead (same host: the pid is gone), with one line (a lock that cannot be
# proved stale gets the line saying what to run); then the jobs that driver started and that
# finished without it are adopted (their markers removed, their outputs kept), one line each.
# `onstart` runs just after Snakemake took the lock: it records this driver as the lock's owner
# (the record goes with the lock when the driver ends).
import os
import sys

from arctax.lifecycle.driver import clear_stale_locks, record_owner
from arctax.orphans import adopt_finished

if workflow.is_main_process:
    for _line in clear_stale_locks(os.getcwd(), sys.argv) + adopt_finished(S, OUT):
        print(_line, file=sys.stderr)


onstart:
    _locks = getattr(workflow.persistence, "_lockfile", {}) or {}
    if workflow.is_main_process and _locks:
        record_owner(os.getcwd(), _locks.values(), sys.argv)
