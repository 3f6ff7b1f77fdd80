"""One LightningModule for all three models: the Trial 69 training recipe."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from arctax.data.tokenize import IGNORE_INDEX
from arctax.models import build_model
from arctax.training.optim import build_optimizer, build_scheduler

Batch = dict[str, torch.Tensor]


def answer_metrics(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """Loss over answer tokens, token accuracy and teacher-forced grid accuracy (on device).

    ``tf_grid_acc`` counts a sample when the argmax of EVERY answer token is right given the
    true prefix (teacher forcing). It overstates what the model generates (bug 6 of the
    original called it "grid accuracy"); generated answers are scored in evaluation.
    """
    mask = labels != IGNORE_INDEX
    loss = F.cross_entropy(
        logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE_INDEX
    )
    right = (logits.argmax(-1) == labels) & mask
    token_acc = right.sum() / mask.sum().clamp(min=1)
    grid = (right | ~mask).all(dim=1).float().mean()
    return {"loss": loss, "token_acc": token_acc, "tf_grid_acc": grid}


class ARCLitModule(pl.LightningModule):
    """Training recipe shared by ``champion``, ``encoder_decoder`` and ``decoder_only``."""

    def __init__(
        self, model_name: str, model_cfg: dict[str, Any], trial69: dict[str, Any], k: int = 2
    ) -> None:
        super().__init__()
        # plain types only: checkpoints then load with torch.load(weights_only=True)
        self.save_hyperparameters(
            {"model_name": model_name, "model_cfg": model_cfg, "trial69": trial69, "k": k}
        )
        self.model = build_model(model_name, model_cfg)

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.model(batch)

    def _shared(self, batch: Batch, stage: str) -> torch.Tensor:
        m = answer_metrics(self.model(batch), batch["labels"])
        bs = batch["labels"].shape[0]
        on_step = stage == "train"
        self.log(
            f"{stage}_loss", m["loss"], prog_bar=True, on_step=on_step, on_epoch=True, batch_size=bs
        )
        self.log(f"{stage}_token_acc", m["token_acc"], on_step=False, on_epoch=True, batch_size=bs)
        self.log(
            f"{stage}_tf_grid_acc", m["tf_grid_acc"], on_step=False, on_epoch=True, batch_size=bs
        )
        return m["loss"]

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        return self._shared(batch, "train")

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._shared(batch, "val")

    def configure_optimizers(self) -> dict[str, Any]:
        opt = build_optimizer(self.model.parameters(), self.hparams["trial69"])
        return {"optimizer": opt, "lr_scheduler": build_scheduler(opt, self.hparams["trial69"])}
