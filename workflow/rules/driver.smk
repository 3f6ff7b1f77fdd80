# The driver's lock (arctax.lifecycle.driver), included first by the Snakefile. Snakemake checks
# its lock after parsing, so a lock left by a driver killed outright (kill -9, a rebooted login
# node) is removed here, on proof that its owner is dead (same host: the pid is gone), with one
# line; a lock that cannot be proved stale gets the line saying what to run. `onstart` runs just
# after Snakemake took the lock: it records this driver as the lock's owner (the record goes
# with the lock when the driver ends).
import os
import sys

from arctax.lifecycle.driver import clear_stale_locks, record_owner

if workflow.is_main_process:
    for _line in clear_stale_locks(os.getcwd(), sys.argv):
        print(_line, file=sys.stderr)


onstart:
    _locks = getattr(workflow.persistence, "_lockfile", {}) or {}
    if workflow.is_main_process and _locks:
        record_owner(os.getcwd(), _locks.values(), sys.argv)
