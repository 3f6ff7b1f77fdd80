"""Trial 69's optimizer and scheduler: the only place either is built."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from arctax.settings import Trial69


def build_optimizer(params: Iterable[torch.nn.Parameter], trial69: Trial69):
    """Adam with Trial 69's lr, betas and weight decay (read from the config, never hard-coded)."""
    o = trial69.optimizer
    if o.name != "Adam":
        raise ValueError(f"trial69.optimizer.name must be Adam, got {o.name!r}")
    return torch.optim.Adam(params, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, trial69: Trial69) -> dict[str, Any]:
    """CosineAnnealingWarmRestarts as a Lightning scheduler config.

    It steps once per EPOCH (``interval: epoch``): T_0 = 6 counts epochs in the original
    Lightning setup (the scheduler was returned without an interval, and Lightning's default is
    per epoch), so the learning rate restarts every 6 epochs, as documented for Trial 69.
    """
    s = trial69.scheduler
    sched = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
        optimizer, T_0=s.T_0, T_mult=s.T_mult, eta_min=s.eta_min
    )
    return {"scheduler": sched, "interval": s.interval, "frequency": 1}
