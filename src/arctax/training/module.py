"""One LightningModule for all three models: the Trial 69 training recipe."""

from __future__ import annotations

import warnings
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from arctax.data.tokenize import IGNORE_INDEX
from arctax.evaluation.measures import decoder_inputs, paper_counts, scored_labels
from arctax.models import build_model
from arctax.plugins import source_sha256
from arctax.settings import Model, Trial69
from arctax.training.optim import build_optimizer, build_scheduler

Batch = dict[str, torch.Tensor]


SUMS = ("loss_sum", "tokens", "right", "grids", "samples", "paper_cells", "paper_right",
        "paper_grids")  # fmt: skip


def answer_sums(
    logits: torch.Tensor, labels: torch.Tensor, inputs: torch.Tensor | None = None
) -> dict[str, torch.Tensor]:
    """Sums over a batch's answer tokens, from which every metric is a ratio.

    ``loss_sum`` (cross-entropy, keeps its graph), ``tokens`` (answer tokens), ``right``
    (argmax right), ``grids`` (samples whose every answer token is right) and ``samples``
    (samples with an answer token: a padding sample, all labels ignored, is not one). With the
    decoder's ``inputs`` also the paper's measurement (:mod:`arctax.evaluation.measures`):
    ``paper_cells`` scored, ``paper_right``, ``paper_grids``. Sums add up across ranks, means do
    not: DDP reduces these, then divides (:meth:`ARCLitModule._shared`).
    """
    mask = labels != IGNORE_INDEX
    loss_sum = F.cross_entropy(
        logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE_INDEX, reduction="sum"
    )
    pred = logits.argmax(-1)
    right = (pred == labels) & mask
    real = mask.any(dim=1)
    grids = (right | ~mask).all(dim=1) & real
    sums = {
        "loss_sum": loss_sum,
        "tokens": mask.sum(),
        "right": right.sum(),
        "grids": grids.sum(),
        "samples": real.sum(),
    }
    if inputs is not None:
        paper = paper_counts(pred, labels, inputs)
        sums.update(paper_cells=paper["cells"].sum(), paper_right=paper["right"].sum(),
                    paper_grids=(paper["grid"] & real).sum())  # fmt: skip
    return sums


def ratios(sums: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Mean loss and token accuracy per answer token (markers included), teacher-forced grid
    accuracy per sample (ours: markers and first cell scored); with the paper's sums also its
    grid accuracy per sample and its cell accuracy pooled over cells."""
    tokens = sums["tokens"].clamp(min=1)
    samples = sums["samples"].clamp(min=1)
    out = {
        "loss": sums["loss_sum"] / tokens,
        "token_acc": sums["right"] / tokens,
        "tf_grid_acc": sums["grids"] / samples,
    }
    if "paper_cells" in sums:
        out["paper_grid_acc"] = sums["paper_grids"] / samples
        out["paper_cell_acc"] = sums["paper_right"] / sums["paper_cells"].clamp(min=1)
    return out


def answer_metrics(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """Loss over answer tokens, token accuracy and teacher-forced grid accuracy (on device).

    ``tf_grid_acc`` counts a sample when the argmax of EVERY answer token is right given the
    true prefix (teacher forcing). It overstates what the model generates (bug 6 of the
    original called it "grid accuracy"); generated answers are scored in evaluation.
    ``token_acc`` counts the markers too: it is not cell accuracy.
    """
    return ratios(answer_sums(logits, labels))


class ARCLitModule(pl.LightningModule):
    """Training recipe shared by ``champion``, ``encoder_decoder`` and ``decoder_only``."""

    def __init__(
        self,
        model_name: str,
        model_cfg: dict[str, Any],
        trial69: dict[str, Any],
        k: int = 2,
        model_class: str | None = None,
        model_code_sha256: str | None = None,
    ) -> None:
        super().__init__()
        # plain types only: checkpoints then load with torch.load(weights_only=True); a model
        # of the user's own is rebuilt from the class the loading run's config names, which must
        # be the class recorded here (and its file have the recorded sha256; model_code.py)
        self.save_hyperparameters(
            {"model_name": model_name, "model_cfg": model_cfg, "trial69": trial69, "k": k,
             "model_class": model_class, "model_code_sha256": model_code_sha256}
        )  # fmt: skip
        self.model = build_model(model_name, model_cfg, model_class)

    @classmethod
    def for_model(cls, model: Model, trial69: Trial69, k: int) -> ARCLitModule:
        """``model`` (a ``models.<name>`` block) under the Trial 69 recipe ``trial69``, reading
        ``k`` context pairs (``data.context_pairs``)."""
        return cls(
            model.name, model.config(), trial69.as_dict(), k, model.cls, source_sha256(model.cls)
        )

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.model(batch)

    def _shared(self, batch: Batch, stage: str) -> torch.Tensor:
        labels = scored_labels(self.model, batch)  # the decoder-only's loss_over: its own
        sums = answer_sums(self.model(batch), labels, decoder_inputs(batch))
        world = self.trainer.world_size if self._trainer is not None else 1
        if world > 1:
            # The GLOBAL batch's sums, one small all-reduce per step (no collective on one
            # process). Each rank's loss is its loss_sum over the global token count, times
            # world: DDP's gradient average then equals one process's mean over the global
            # batch, and clipping (after the all-reduce) sees the same gradient.
            local = torch.stack([sums[k].detach().double() for k in SUMS])
            torch.distributed.all_reduce(local)
            total = dict(zip(SUMS, local, strict=True))
            loss = sums["loss_sum"] * world / total["tokens"].clamp(min=1)
        else:
            total = {k: v.detach() for k, v in sums.items()}
            loss = ratios(sums)["loss"]
        # Logged values are the global batch's, weighted by its real sample count, so epoch
        # metrics (and EarlyStopping, ModelCheckpoint) read as in a one-process run; every rank
        # logs the same numbers, hence no sync_dist.
        m = {k: v.float() for k, v in ratios(total).items()}
        # one process: every sample is real, and the batch's size needs no device sync
        bs = int(total["samples"]) if world > 1 else batch["labels"].shape[0]
        on_step = stage == "train"
        self.log(
            f"{stage}_loss", m["loss"], prog_bar=True, on_step=on_step, on_epoch=True, batch_size=bs
        )
        self.log(f"{stage}_token_acc", m["token_acc"], on_step=False, on_epoch=True, batch_size=bs)
        for key in ("tf_grid_acc", "paper_grid_acc", "paper_cell_acc"):
            self.log(f"{stage}_{key}", m[key], on_step=False, on_epoch=True, batch_size=bs)
        return loss

    def setup(self, stage: str) -> None:
        # Lightning suggests sync_dist=True for epoch-level metrics under DDP; ours are
        # already global (see _shared), and a sync would average identical values again.
        warnings.filterwarnings("ignore", message=r".*sync_dist=True.*", category=UserWarning)

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        return self._shared(batch, "train")

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._shared(batch, "val")

    def configure_optimizers(self) -> dict[str, Any]:
        t69 = Trial69.from_block(self.hparams["trial69"])  # plain in the checkpoint, typed here
        opt = build_optimizer(self.model.parameters(), t69)
        return {"optimizer": opt, "lr_scheduler": build_scheduler(opt, t69)}
