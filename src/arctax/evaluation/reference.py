"""The champion reference, given one of four ways, checked when the workflow starts.

- ``champion.checkpoint: PATH``: an arctax checkpoint (the default way);
- ``champion.bootstrap: true``: a stand-in trained here under Trial 69 (labelled everywhere;
  whatever file is at ``checkpoint`` is never read or written);
- ``champion.predictions: PATH``: the reference's answers as an ARC Prize submission file,
  from any system; scored by the same scorer as every model;
- ``champion.adapter: "module:function"``: the owner's own loader for the file at
  ``checkpoint``, run inside the ``evaluate_reference`` job (:mod:`arctax.evaluation.adapters`).

:func:`resolve_reference` runs when Snakemake parses the workflow (so ``snakemake -n`` already
refuses a bad reference): it imports no torch and reads at most a checkpoint's pickle opcodes
(:mod:`arctax.evaluation.inspection`) or a submission's JSON. :func:`evaluate_reference` is
the job's side. docs/REFERENCE.md explains the choice.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from arctax.evaluation.inspection import inspect_checkpoint
from arctax.settings import Champion, Model, Settings

REFERENCE = "champion_bootstrap"  # the reference's label in every table

WAYS = ("checkpoint", "bootstrap", "predictions", "adapter")
SWITCHES = ("bootstrap", "predictions", "adapter")  # set at most one; none = checkpoint
WAYS_FORWARD = """\
Give the champion reference ONE of these ways in your config (docs/REFERENCE.md):
  champion.checkpoint: PATH              an arctax checkpoint (e.g. results/<run>/train/champion/seed307/best.ckpt)
  champion.predictions: PATH             the reference's answers, made by any code, as an ARC Prize submission.json
  champion.adapter: "package.module:function"   your own loader for the file at champion.checkpoint, run in the evaluate_reference job
  champion.bootstrap: true               train a labelled stand-in champion here (the file at champion.checkpoint is ignored)"""


class ReferenceError(ValueError):
    """The champion reference is missing or unusable; the message gives the ways forward."""


@dataclass(frozen=True)
class Reference:
    """How the reference is given: ``way`` (one of :data:`WAYS`), the file the
    ``evaluate_reference`` job reads (``None`` when bootstrapped), the adapter, and what the
    file is."""

    way: str
    path: str | None
    adapter: str | None
    detail: str

    def as_dict(self) -> dict[str, Any]:
        """Plain types (a Snakemake param, recorded in ``summary.json``)."""
        return asdict(self)

    def describe(self) -> str:
        """One line for logs and the report."""
        if self.way == "bootstrap":
            return "bootstrapped here under Trial 69 (not the original weights)"
        if self.way == "adapter":
            return f"{self.path} through the adapter {self.adapter}"
        return f"{self.path}: {self.detail}"


def reference_way(champion: Champion) -> str:
    """Which of :data:`WAYS` the ``champion`` block chooses (no file is read); two at once
    is an error naming both keys."""
    active = [k for k in SWITCHES if getattr(champion, k)]
    if len(active) > 1:
        keys = " and ".join(f"'champion.{k}'" for k in active)
        raise ReferenceError(
            f"config keys {keys} are both set, but the reference is given one way only: "
            f"keep one of them.\n{WAYS_FORWARD}"
        )
    return active[0] if active else "checkpoint"


def resolve_reference(champion: Champion, models: Mapping[str, Model] | None = None) -> Reference:
    """The reference the ``champion`` config block gives, checked; raise if it is unusable.

    With ``models`` (the run's), a checkpoint must also ask for code the config names
    (:mod:`arctax.evaluation.model_code`): a checkpoint never chooses the code that runs.
    """
    way = reference_way(champion)
    ckpt = champion.checkpoint
    if way == "bootstrap":
        return Reference("bootstrap", None, None, "trained here under Trial 69")
    if way == "predictions":
        return _predictions(str(champion.predictions))
    if way == "adapter":
        return _adapter(str(champion.adapter), ckpt)
    found = inspect_checkpoint(ckpt)
    if not found.is_arctax:
        raise ReferenceError(
            f"config key 'champion.checkpoint' points at '{ckpt}': {found.detail}. "
            + (
                "The original champion_bootstrap.ckpt needs its internal codebase, whose "
                "forward code is not public: arctax cannot run it itself.\n"
                if found.kind == "original"
                else "arctax can only run its own checkpoints itself.\n"
            )
            + WAYS_FORWARD
        )
    if models is not None:
        from arctax.evaluation.model_code import ModelCodeError, model_code, recorded_sha256

        hp = {"model_class": found.model_class, "model_code_sha256": found.model_code_sha256}
        try:
            model_code(
                models, ckpt, found.model_name, found.model_class, recorded_sha256(hp, Path(ckpt))
            )
        except ModelCodeError as e:
            raise ReferenceError(f"config key 'champion.checkpoint': {e}") from None
    return Reference("checkpoint", ckpt, None, found.detail)


def _predictions(path: str) -> Reference:
    from arctax.evaluation.submission import SubmissionError, read_submission

    try:
        sub = read_submission(path)
    except SubmissionError as e:
        raise ReferenceError(f"config key 'champion.predictions': {e}") from e
    n = sum(len(v) for v in sub.values())
    return Reference(
        "predictions", path, None, f"ARC Prize submission, {len(sub)} tasks, {n} test inputs"
    )


def _adapter(spec: str, ckpt: str) -> Reference:
    from arctax.evaluation.adapters import AdapterError, check_spec

    try:
        check_spec(spec)
    except AdapterError as e:
        raise ReferenceError(f"config key {e}") from e
    found = inspect_checkpoint(ckpt)
    if found.kind in ("missing", "not_a_file", "empty"):
        raise ReferenceError(
            f"config key 'champion.checkpoint' (the file champion.adapter {spec} loads) "
            f"points at '{ckpt}': {found.detail}; put the reference's weights there"
        )
    return Reference("adapter", ckpt, spec, found.detail)


def evaluate_reference(
    s: Settings,
    reference: Mapping[str, Any],
    path: str | Path,
    data_dir: str | Path,
    out_dir: str | Path,
    label: str,
) -> Any:
    """Evaluate the reference the way ``reference`` (:meth:`Reference.as_dict`) says.

    ``path`` is the file the job reads: the checkpoint (the user's, or the one bootstrapped
    here), the predictions file, or the checkpoint the adapter loads. Every way ends in
    :func:`arctax.evaluation.evaluate.write_evaluation`: the same outputs, the same scorer.
    """
    from arctax.data.dataset import load_split
    from arctax.evaluation.evaluate import evaluate, query_order, write_evaluation
    from arctax.io import file_sha256

    way = reference["way"]
    source = {
        "way": way,
        "path": str(path),
        "sha256": file_sha256(path),
        "adapter": reference.get("adapter"),
        "detail": reference.get("detail"),
    }
    if way in ("checkpoint", "bootstrap"):
        return evaluate(
            s, path, data_dir, out_dir, label, None,
            bootstrapped=way == "bootstrap", source=source,
        )  # fmt: skip
    ds = load_split(data_dir, "test")
    identity = {"model_name": None, "checkpoint": None, "source": source}
    if way == "predictions":
        from arctax.evaluation.submission import read_submission, select

        answers = select(read_submission(path), ds, str(path))
        return write_evaluation(s.eval, ds, answers, out_dir, label, None, identity=identity)
    if way == "adapter":
        from arctax.evaluation.adapters import predict_with_adapter

        answers, seconds, device = predict_with_adapter(
            s, reference["adapter"], path, ds, query_order(ds)
        )
        identity = {**identity, "checkpoint": str(path), "checkpoint_sha256": source["sha256"]}
        return write_evaluation(
            s.eval, ds, answers, out_dir, label, None,
            identity=identity, decode_s=seconds, device=device,
        )  # fmt: skip
    raise ValueError(f"unknown reference way {way!r}; expected one of {', '.join(WAYS)}")
