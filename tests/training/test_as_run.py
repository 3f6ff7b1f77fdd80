"""What ran is what is recorded: the precision of the accelerator used, a compiled model's
checkpoints, the grad scaler's skipped steps, the GPU against the smoke test's."""

from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch

from arctax.settings import load_settings
from arctax.training.train import train
from tests.conftest import tiny_overrides


def test_precision_follows_the_accelerator_and_every_record_says_the_same(
    tiny_data, tmp_path, monkeypatch
):
    """On a GPU node with ``trainer.accelerator: cpu`` (CUDA patched in), 16-mixed cannot run:
    ``trainer.cpu_precision`` is used, and provenance, the audit and the tracker run all say
    so, the audit with its reason (before: provenance said 16-mixed, Lightning ran bf16-mixed
    and the audit called it unexplained)."""
    pytest.importorskip("mlflow")
    from tests.training.test_trackers import mlflow_runs

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    o = tiny_overrides(max_epochs=1, accelerator="cpu", limit_train_batches=2,
                       limit_val_batches=1, loggers=["csv", "mlflow"])  # fmt: skip
    o["trial69"] = {"precision": "16-mixed"}
    out = tmp_path / "out"
    train(load_settings(overrides=o), "decoder_only", 307, tiny_data, out, tmp_path / "state",
          tmp_path / "trackers")  # fmt: skip
    prov = json.loads((out / "provenance.json").read_text())
    row = next(r for r in prov["audit"] if r["key"] == "precision")
    assert prov["precision_used"] == row["actual"] == "32-true"
    assert "trainer.accelerator: cpu" in row["reason"] and "UNEXPLAINED" not in row["reason"]
    assert prov["accelerator_used"] == "cpu" and prov["device"].startswith("cpu")
    _, (run,) = mlflow_runs(tmp_path / "trackers")
    assert run.data.params["precision"] == "32-true"
    assert run.data.tags["provenance.precision_used"] == "32-true"


def test_a_compiled_model_checkpoints_the_plain_keys_loads_uncompiled_and_resumes(
    tiny_data, tmp_path
):
    """``trainer.compile`` compiles in place: the checkpoint's keys are the plain model's (no
    ``_orig_mod``), it loads strictly into an uncompiled model, and an interrupted compiled
    run resumes from it. The flag is part of the state's fingerprint."""
    from arctax.evaluation.checkpoints import load_model
    from arctax.training.module import ARCLitModule
    from arctax.training.train import FINISHED, training_fingerprint

    o = tiny_overrides(max_epochs=1, limit_train_batches=1, limit_val_batches=1, compile="eager")
    cfg = load_settings(overrides=o)
    out, state = tmp_path / "out", tmp_path / "state"
    train(cfg, "decoder_only", 307, tiny_data, out, state)
    sd = torch.load(out / "last.ckpt", weights_only=True)["state_dict"]
    assert sd and not [k for k in sd if "_orig_mod" in k]
    plain = ARCLitModule.for_model(cfg.model("decoder_only"), cfg.trial69, cfg.data.context_pairs)
    plain.load_state_dict(sd, strict=True)
    model, info = load_model(out / "last.ckpt", cfg.models, cfg.limits)
    assert info["epoch"] == 0 and getattr(model, "_compiled_call_impl", None) is None
    (state / FINISHED).unlink()  # as if stopped after its first epoch's checkpoint
    again = load_settings(overrides={**o, "trainer": {**o["trainer"], "max_epochs": 2}})
    result = train(again, "decoder_only", 307, tiny_data, out, state)
    assert result["resumed_from"] == str(state / "last.ckpt") and result["epochs_run"] == 2
    plain_cfg = load_settings(overrides={**o, "trainer": {**o["trainer"], "compile": False}})

    def fp(s):
        return training_fingerprint(s.model("decoder_only"), s.trial69, s.trainer, 307, "x")

    assert fp(cfg) != fp(plain_cfg)


class _Overflows(pl.LightningModule):
    """A model whose second step's loss is infinite: fp16's grad scaler must skip that step."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(4, 1)

    def training_step(self, batch: torch.Tensor, i: int) -> torch.Tensor:
        loss = self.lin(batch).square().mean()
        self.log("train_loss", loss, on_step=True, on_epoch=True)
        return loss * (float("inf") if i == 1 else 1.0)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(torch.randn(12, 4), batch_size=4)


@pytest.mark.parametrize("inject", [True, False])
def test_a_forced_grad_scaler_skip_is_counted_and_warned(tmp_path, inject, monkeypatch):
    """A real GradScaler (16-mixed on CPU) skips the step whose gradients are infinite: the
    epoch's row of metrics.csv counts it and the scale halves; more than
    ``trainer.max_skipped_steps`` of the epoch's steps is a warning. Without the fault: 0."""
    from pytorch_lightning.plugins import MixedPrecision

    from arctax.training.callbacks import EpochMetrics

    if not inject:
        monkeypatch.setattr(_Overflows, "training_step", _finite_step)
    metrics = EpochMetrics(tmp_path / "metrics.csv", echo=False, max_skipped=0.05)
    scaler = torch.amp.GradScaler("cpu", init_scale=256.0)  # a toy's gradients fit at 256
    trainer = pl.Trainer(
        max_epochs=1, accelerator="cpu", plugins=[MixedPrecision("16-mixed", "cpu", scaler)],
        callbacks=[metrics], logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        trainer.fit(_Overflows())
    (row,) = csv.DictReader((tmp_path / "metrics.csv").open())
    warned = [str(w.message) for w in said if "grad scaler skipped" in str(w.message)]
    if inject:
        assert (row["skipped_steps"], float(row["grad_scale"])) == ("1", 128.0)
        assert warned and "1 of 3 optimizer steps" in warned[0]
        assert "trainer.max_skipped_steps" in warned[0]
    else:
        assert (row["skipped_steps"], float(row["grad_scale"])) == ("0", 256.0)
        assert not warned


def _finite_step(self, batch: torch.Tensor, i: int) -> torch.Tensor:
    loss = self.lin(batch).square().mean()
    self.log("train_loss", loss, on_step=True, on_epoch=True)
    return loss


# ---- the GPU against the smoke test's ---------------------------------------------------


def _gpu(monkeypatch, name: str, gib: float) -> None:
    """Stand in a CUDA device of ``gib`` GiB (CPU-only torch: its queries patched)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: name)
    props = SimpleNamespace(total_memory=int(gib * 2**30), name=name)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda *a: props)


def _smoke_report(path: Path, model: str, gib: float, peak_gib: float) -> Path:
    fig = {"device": "NVIDIA A100-SXM4-80GB", "device_memory_bytes": int(gib * 2**30),
           "peak_memory_bytes": int(peak_gib * 2**30)}  # fmt: skip
    path.write_text(json.dumps({"ok": True, "models": {model: {"figures": fig}}}))
    return path


@pytest.mark.parametrize(
    ("here", "peak", "setting", "outcome"),
    [
        (80, 30, "refuse", None),  # the same card: nothing to say
        (40, 36, "refuse", "refuse"),  # smaller, and the smoke peak does not fit 85% of it
        (40, 20, "refuse", "warn"),  # smaller, but the measured peak fits
        (40, 36, "warn", "warn"),
    ],
)
def test_train_checks_its_gpu_against_the_smoke_tests(tmp_path, monkeypatch, here, peak,
                                                      setting, outcome):  # fmt: skip
    from arctax.training.trainer import SmallerGPU, check_card

    _gpu(monkeypatch, "NVIDIA A100-PCIE-40GB", here)
    report = _smoke_report(tmp_path / "smoke.json", "champion", 80, peak)
    cfg = load_settings(overrides={"trainer": {"smaller_gpu": setting}})
    if outcome == "refuse":
        with pytest.raises(SmallerGPU) as err:
            check_card(cfg.trainer, "champion", report)
        msg = str(err.value)
        assert "A100-PCIE-40GB (40.0 GiB)" in msg and "A100-SXM4-80GB (80.0 GiB)" in msg
        assert "ARCTAX_GPU_MODEL" in msg and "trainer.smaller_gpu: warn" in msg
        return
    note = check_card(cfg.trainer, "champion", report)
    assert (note is None) == (outcome is None)
    if note:
        assert "less memory than" in note and "ARCTAX_GPU_MODEL" in note


def test_train_refuses_a_smaller_gpu_before_it_starts(tiny_data, tmp_path, monkeypatch):
    """The refusal comes before any Trainer, state or output exists."""
    from arctax.training.trainer import SmallerGPU

    _gpu(monkeypatch, "Tesla T4", 15)
    report = _smoke_report(tmp_path / "smoke.json", "champion", 80, 30)
    cfg = load_settings(overrides=tiny_overrides())
    with pytest.raises(SmallerGPU):
        train(cfg, "champion", 307, tiny_data, tmp_path / "out", tmp_path / "state",
              smoke_report=report)  # fmt: skip
    assert not (tmp_path / "out").exists() and not (tmp_path / "state").exists()
