"""Trial 69, asserted on the built objects (values from config/config.yaml, and literally)."""

import pytorch_lightning as pl
import torch

from arctax.settings import load_settings
from arctax.training.optim import build_optimizer, build_scheduler
from arctax.training.trainer import build_trainer


def test_config_holds_trial69_exactly():
    t = load_settings().trial69.as_dict()
    assert t["optimizer"] == {
        "name": "Adam",
        "lr": 0.0018498849832733245,
        "betas": [0.95, 0.999],
        "weight_decay": 0.0,
    }
    s = t["scheduler"]
    assert (s["name"], s["T_0"], s["T_mult"], s["eta_min"]) == (
        "CosineAnnealingWarmRestarts",
        6,
        1,
        1.6816632143867157e-06,
    )
    assert t["batch_size"] == 32 and t["precision"] == "16-mixed" and t["gradient_clip_val"] == 1.0
    assert t["early_stopping"] == {"monitor": "val_loss", "patience": 7, "mode": "min"}
    assert t["seed"] == 307 and t["deterministic"] is True and t["max_epochs"] == 100


def test_built_optimizer_and_scheduler():
    t = load_settings().trial69
    p = [torch.nn.Parameter(torch.zeros(3))]
    opt = build_optimizer(p, t)
    assert type(opt) is torch.optim.Adam  # not AdamW (the seed note's "before")
    g = opt.param_groups[0]
    assert g["lr"] == t.optimizer.lr == 0.0018498849832733245
    assert g["betas"] == (0.95, 0.999) and g["weight_decay"] == 0.0
    cfg = build_scheduler(opt, t)
    s = cfg["scheduler"]
    assert type(s) is torch.optim.lr_scheduler.CosineAnnealingWarmRestarts
    assert (s.T_0, s.T_mult, s.eta_min) == (6, 1, 1.6816632143867157e-06)
    assert cfg["interval"] == "epoch"
    lrs = []
    for _ in range(13):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        s.step()
    assert lrs[0] == lrs[6] == lrs[12] == t.optimizer.lr  # warm restart every 6 epochs
    assert min(lrs) > 1.6816632143867157e-06


def test_built_trainer(tmp_path):
    cfg = load_settings()
    tr = build_trainer(cfg.trial69, cfg.trainer, tmp_path, "32-true", [])
    assert tr.max_epochs == 100 and tr.gradient_clip_val == 1.0
    es = next(c for c in tr.callbacks if isinstance(c, pl.callbacks.EarlyStopping))
    assert (es.monitor, es.patience, es.mode) == ("val_loss", 7, "min")
    assert torch.are_deterministic_algorithms_enabled()
    ck = tr.checkpoint_callback
    assert ck.monitor == "val_loss" and ck.save_last
