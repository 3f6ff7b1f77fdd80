"""Hyper-parameter search: Optuna studies whose trials are short Trial 69 trainings.

``space`` (parse and check ``sweep.space``, apply a trial's values by dotted key), ``storage``
(the study's storage and the claim lock), ``objective`` (one trial: a short training with
pruning), ``worker`` (the loop a Slurm job runs: claim a trial, train, tell; a trial's worker is
alive or dead by :mod:`arctax.lifecycle.owners`) and ``report`` (trials.csv, best.yaml, plots). Only the
workflow's scripts and the command line import this package. Only ``objective`` imports torch
and Lightning: claiming, counting and reaping trials start in a fraction of a second.
"""


class SearchError(RuntimeError):
    """A study cannot go on or be reported (another setup in it, failures, too few trials)."""
