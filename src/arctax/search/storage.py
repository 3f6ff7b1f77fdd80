"""Where a study lives, and the lock under which workers claim trials.

Default: an Optuna journal file on the shared file system, ``results/<run>/sweep/<model>/
study.log``, needing no server; its lock is ``JournalFileOpenLock`` (``O_CREAT|O_EXCL`` on a
``.lock`` file: atomic on NFSv3 and later). ``ARCTAX_OPTUNA_STORAGE`` set to a SQLAlchemy URL
(``mysql+pymysql://user:pass@host/db``, ``postgresql://...``) puts every study in that database
instead. Either way the study is named ``<run>-<model>``.

The claim lock is a second lock file beside the journal, used as a plain mutex around the few
storage calls that claim a trial (Optuna's ``MaxTrialsCallback`` counts only after a trial
finishes, so parallel workers overshoot ``n_trials``; counting and asking under one lock does
not). Optuna breaks such a lock when its file is older than 30 s (a holder that died keeps
nobody waiting for long), so what runs under it must stay far shorter.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

ENV_STORAGE = "ARCTAX_OPTUNA_STORAGE"
JOURNAL = "study.log"
CLAIM_LOCK = "claim"  # -> claim.lock while held


def study_name(run: str, model: str) -> str:
    """The study of ``model`` in run ``run``."""
    return f"{run}-{model}"


def describe(sweep_dir: str | Path) -> str:
    """The storage for messages and records (a database URL without its password)."""
    url = os.environ.get(ENV_STORAGE, "").strip()
    if not url:
        return str(Path(sweep_dir) / JOURNAL)
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def open_storage(sweep_dir: str | Path, create: bool = True) -> BaseStorage:
    """The study storage of ``sweep_dir`` (see the module docstring).

    With ``create=False`` a missing journal is an error rather than a new empty study.
    """
    url = os.environ.get(ENV_STORAGE, "").strip()
    if url:
        return RDBStorage(url)
    journal = Path(sweep_dir) / JOURNAL
    if not create and not journal.is_file():
        raise FileNotFoundError(f"no study at {journal}: run `snakemake sweep` first")
    journal.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(journal), JournalFileOpenLock(str(journal))))


def load_study(sweep_dir: str | Path, run: str, model: str) -> optuna.Study:
    """An existing study, read-only use (reports, tests)."""
    return optuna.load_study(
        study_name=study_name(run, model), storage=open_storage(sweep_dir, create=False)
    )


@contextmanager
def claim_lock(sweep_dir: str | Path) -> Iterator[None]:
    """Hold the study's claim mutex (a lock file on the shared file system)."""
    Path(sweep_dir).mkdir(parents=True, exist_ok=True)
    lock = JournalFileOpenLock(str(Path(sweep_dir) / CLAIM_LOCK))
    lock.acquire()
    try:
        yield
    finally:
        try:
            lock.release()
        except RuntimeError:  # held > 30 s and broken by a waiter: say so, do not crash
            print(
                "warning: the claim lock was held over 30 s and taken over by another worker",
                file=sys.stderr,
                flush=True,
            )
