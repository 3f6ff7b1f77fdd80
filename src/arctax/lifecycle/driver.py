"""The Snakemake driver's lock: who holds it, and a stale one removed on proof.

Snakemake locks its working directory while it runs (``.snakemake/locks/<n>.input.lock`` and
``<n>.output.lock``: the files it reads and writes) and removes the lock when it ends. A
driver killed outright (``kill -9``, a login node rebooted) leaves the lock behind, and the
next ``snakemake`` stops with a ``LockException`` until someone runs ``--unlock``.

The workflow records the lock's owner when it takes the lock (Snakemake's ``onstart``, which
runs just after: :func:`record_owner`, one ``arctax-owner-<pid>.json`` in the lock folder,
removed with it). The next driver, while its Snakefile is parsed (before Snakemake checks the
lock), removes every lock whose owner is provably dead (:func:`clear_stale_locks`; same host:
the pid is gone; :mod:`arctax.lifecycle.owners`) with one printed line. A lock it cannot prove
stale (its owner on another host, or no owner recorded: a driver killed between taking the lock
and ``onstart``, or a Snakemake run without this workflow) stays, and the line says what to
run. ``arctax status`` reads the same (:func:`driver_locks`). Torch-free.
"""

from __future__ import annotations

import json
import shlex
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from arctax.io import write_json
from arctax.lifecycle.owners import dead_reason, owner_record

LOCKS = Path(".snakemake") / "locks"
OWNER_GLOB = "arctax-owner-*.json"


@dataclass
class DriverLock:
    """One driver's lock: its lock files, its recorded owner (None: none recorded) and, if the
    owner is provably dead, why."""

    files: list[Path]
    owner: dict[str, Any] | None = None
    record: Path | None = None
    dead: str | None = None

    def describe(self) -> str:
        """Who holds it, in a few words."""
        if self.owner is None:
            return "a lock with no recorded owner"
        o = self.owner
        return f"the lock of snakemake pid {o.get('pid')} on {o.get('host')}"


def record_owner(
    workdir: str | Path, lock_files: Iterable[str | Path], argv: Sequence[str]
) -> Path:
    """Record this process as the owner of ``lock_files`` (the lock Snakemake just took in
    ``workdir``), with the command line that took it."""
    locks = Path(workdir) / LOCKS
    record = owner_record(locks=sorted(Path(f).name for f in lock_files), argv=list(argv))
    path = locks / f"arctax-owner-{record['pid']}.json"
    write_json(path, record)
    return path


def driver_locks(workdir: str | Path, me: dict[str, Any] | None = None) -> list[DriverLock]:
    """The locks in ``workdir``'s ``.snakemake/locks``, grouped by recorded owner (the files
    no record claims last, with no owner), each with the proof of its owner's death when there
    is one (read-only)."""
    locks = Path(workdir) / LOCKS
    if not locks.is_dir():
        return []
    files = {p.name: p for p in locks.glob("*.lock") if p.is_file()}
    found, claimed = [], set()
    for rec in sorted(locks.glob(OWNER_GLOB)):
        try:
            owner = json.loads(rec.read_text())
        except (OSError, ValueError):
            continue  # being written, or removed with the lock meanwhile
        mine = [files[n] for n in owner.get("locks", []) if n in files]
        claimed.update(p.name for p in mine)
        found.append(DriverLock(mine, owner, rec, dead_reason(owner, me, role="driver")))
    rest = sorted(p for n, p in files.items() if n not in claimed)
    if rest:
        found.append(DriverLock(rest))
    return found


def held(locks: Iterable[DriverLock]) -> list[DriverLock]:
    """The locks that still hold: lock files there, and no proof that their owner is dead."""
    return [lock for lock in locks if lock.files and lock.dead is None]


def driver_since(workdir: str | Path = ".") -> float | None:
    """When the Snakemake driver running in ``workdir`` took its lock (its owner record's
    ``since``); None when no live driver recorded one."""
    times = [lk.owner.get("since") for lk in held(driver_locks(workdir)) if lk.owner]
    times = [t for t in times if isinstance(t, int | float)]
    return max(times) if times else None


def unlock_command(argv: Sequence[str]) -> str:
    """``snakemake --unlock`` with the arguments of ``argv`` (a snakemake command line)."""
    args = list(argv[1:])
    if argv and Path(argv[0]).name.startswith("python") and args[:2] == ["-m", "snakemake"]:
        args = args[2:]
    return shlex.join(["snakemake", *args, "--unlock"])


def clear_stale_locks(workdir: str | Path, argv: Sequence[str]) -> list[str]:
    """Remove each lock of ``workdir`` whose owner is provably dead; one line per lock found
    stale (removed) or held by an owner that cannot be checked from here (what to run).

    ``argv``: this driver's command line, for the ``--unlock`` line. A lock whose owner is
    alive on this host gets no line: Snakemake's own refusal says another one is running.
    """
    lines = []
    for lock in driver_locks(workdir):
        if lock.dead:
            for p in [*lock.files, lock.record]:
                if p is not None:
                    p.unlink(missing_ok=True)
            if not lock.files:
                continue  # an owner record left without its lock: nothing held
            lines.append(
                f"arctax: removed Snakemake's stale lock of {Path(workdir).resolve()}: {lock.dead}"
            )
        elif lock.files and (lock.owner is None or lock.owner.get("host") != socket.gethostname()):
            where = "no owner recorded" if lock.owner is None else lock.describe()
            lines.append(
                f"arctax: Snakemake's lock of {Path(workdir).resolve()} ({where}) cannot be "
                f"proved stale from here; if no snakemake runs in this folder any more, run "
                f"`{unlock_command(argv)}`, then your command again"
            )
    return lines
