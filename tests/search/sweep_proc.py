"""A sweep process for the search tests: `python sweep_proc.py MODE CFG_JSON DATA SWEEP_DIR ...`.

Modes: `claim` (claim one trial, suggest its values, print "claimed N", sleep until killed),
`worker` (run_worker with the real training objective), `quadratic` (run_worker with the cheap
objective, SLEEP seconds per trial). Run as a real process so that it can be killed for real.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from arctax.lifecycle.owners import owner_record
from arctax.search.space import parse_space, suggest
from arctax.search.storage import claim_lock
from arctax.search.worker import claim, open_study, run_worker, study_setup
from arctax.settings import Settings
from tests.search.helpers import MODEL, quadratic

mode, cfg_file, data, sweep_dir = sys.argv[1:5]
cfg = Settings.of(json.loads(Path(cfg_file).read_text()))  # this process's entry point
sweep = Path(sweep_dir)
if mode == "claim":
    space = parse_space(cfg, MODEL)
    with claim_lock(sweep):
        study = open_study(cfg.run, MODEL, sweep, study_setup(cfg, MODEL, space, data))
        trial = claim(study, cfg.sweep.n_trials, owner_record(worker=9), 1)
    suggest(trial, space)
    print(f"claimed {trial.number}", flush=True)
    time.sleep(600)
elif mode == "worker":
    worker, record = int(sys.argv[5]), sys.argv[6]
    run_worker(cfg, MODEL, data, sweep, worker, record, state_dir=sweep / ".trials")
elif mode == "quadratic":
    worker, record, sleep_s = int(sys.argv[5]), sys.argv[6], float(sys.argv[7])
    print("started", flush=True)
    run_worker(cfg, MODEL, data, sweep, worker, record, objective=quadratic(cfg, sleep_s))
