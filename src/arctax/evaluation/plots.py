"""Figures (matplotlib, Agg, PNG): training curves, accuracy bars, category heat map, gallery.

Every function takes plain tables or lists and a path, and writes the PNG through a temp file.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.colors import ListedColormap
from matplotlib.ticker import MaxNLocator

from arctax.io import atomic_write

ARC_PALETTE = [
    "#000000", "#0074D9", "#FF4136", "#2ECC40", "#FFDC00",
    "#AAAAAA", "#F012BE", "#FF851B", "#7FDBFF", "#870C25",
]  # fmt: skip
ARC_CMAP = ListedColormap(ARC_PALETTE)
# Lightning CSVLogger names first, then arctax's EpochMetrics names.
TRAIN_LOSS = ("train_loss_epoch", "train_loss")
VAL_LOSS = ("val_loss", "val_loss_epoch")


def _save(fig: plt.Figure, path: str | Path) -> Path:
    path = Path(path)
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png"))
    finally:
        plt.close(fig)
    return path


def read_metrics(path: str | Path) -> pd.DataFrame:
    """Per-epoch ``epoch, train_loss, val_loss`` from a metrics CSV (NaN rows merged away).

    Lightning's CSVLogger writes train and val metrics on separate rows of the same epoch;
    grouping by epoch and taking the last non-NaN value puts them on one row.
    """
    df = pd.read_csv(path)
    if "epoch" not in df.columns:
        raise ValueError(f"{path}: no 'epoch' column; expected a Lightning metrics.csv")
    out = pd.DataFrame({"epoch": df["epoch"]})
    for name, cands in (("train_loss", TRAIN_LOSS), ("val_loss", VAL_LOSS)):
        col = next((c for c in cands if c in df.columns), None)
        out[name] = pd.to_numeric(df[col], errors="coerce") if col else np.nan
    out = out.dropna(subset=["epoch"])
    return out.groupby("epoch", as_index=False).last().sort_values("epoch")


def plot_curves(runs: Mapping[str, pd.DataFrame], path: str | Path) -> Path:
    """Train (dashed) and validation (solid) loss per epoch, one colour per run."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for i, (name, df) in enumerate(sorted(runs.items())):
        colour = f"C{i % 10}"
        for col, style in (("train_loss", "--"), ("val_loss", "-")):
            d = df[["epoch", col]].dropna()
            if len(d):
                kind = "train" if col == "train_loss" else "val"
                ax.plot(d["epoch"], d[col], style, color=colour, marker=".", label=f"{name} {kind}")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("cross-entropy loss (answer tokens)")
    ax.set_title("Training curves (dashed: train, solid: validation)")
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=7, loc="upper right")
    else:
        ax.text(0.5, 0.5, "no metrics recorded", ha="center", va="center", transform=ax.transAxes)
    return _save(fig, path)


def plot_accuracy(summary: pd.DataFrame, path: str | Path, ci: float = 0.95) -> Path:
    """Bars of generated grid / shape / cell accuracy per model with CI whiskers.

    ``summary`` needs ``model`` and, per metric, ``<m>``, ``<m>_lo``, ``<m>_hi``.
    """
    metrics = [("grid_acc", "grid (exact)"), ("shape_acc", "shape"), ("cell_acc", "cell")]
    models = list(summary["model"])
    x = np.arange(len(models))
    width = 0.8 / len(metrics)
    fig, ax = plt.subplots(figsize=(max(5, 1.6 * len(models) + 2), 4))
    for j, (m, name) in enumerate(metrics):
        v = summary[m].to_numpy(float)
        err = np.vstack([v - summary[f"{m}_lo"], summary[f"{m}_hi"] - v]).clip(min=0)
        bars = ax.bar(x + (j - 1) * width, v, width, yerr=err, capsize=3, label=name)
        ax.bar_label(bars, labels=[f"{a:.1%}" for a in v], fontsize=7, padding=2)
    ax.set_xticks(x, models, rotation=15)
    ax.set_ylim(0, 1.08)
    ax.set_ylabel(f"share of test tasks ({ci:.0%} bootstrap CI)")
    ax.set_title("Generated (greedy) answers per model")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=len(metrics))
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def plot_category_heatmap(per_category: pd.DataFrame, path: str | Path) -> Path:
    """Heat map of grid accuracy, models x taxonomy categories, cells annotated with n tasks."""
    pivot = per_category.pivot(index="model", columns="category", values="grid_acc")
    counts = per_category.pivot(index="model", columns="category", values="n_tasks")
    fig, ax = plt.subplots(figsize=(1.0 * pivot.shape[1] + 3, 0.6 * pivot.shape[0] + 2))
    im = ax.imshow(pivot.to_numpy(float), cmap="viridis", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(pivot.shape[1]), pivot.columns, rotation=30, ha="right")
    ax.set_yticks(range(pivot.shape[0]), pivot.index)
    for r in range(pivot.shape[0]):
        for c in range(pivot.shape[1]):
            v, n = pivot.iat[r, c], counts.iat[r, c]
            if pd.notna(v):
                colour = "black" if v > 0.6 else "white"
                ax.text(
                    c, r, f"{v:.0%}\nn={int(n)}", ha="center", va="center", fontsize=7, color=colour
                )
    fig.colorbar(im, ax=ax, label="grid accuracy (generated)")
    ax.set_title("Grid accuracy per taxonomy category")
    return _save(fig, path)


def _draw_grid(ax: plt.Axes, grid: Sequence[Sequence[int]] | None, title: str) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=8)
    if grid is None:
        # a malformed answer: an empty frame, so the row still lines up
        ax.text(0.5, 0.5, "no grid", ha="center", va="center", fontsize=9, transform=ax.transAxes)
        for s in ax.spines.values():
            s.set_linestyle("--")
        return
    g = np.asarray(grid)
    ax.set_title(f"{title} {g.shape[0]}x{g.shape[1]}", fontsize=8)
    ax.imshow(g, cmap=ARC_CMAP, vmin=-0.5, vmax=9.5, interpolation="nearest")
    h, w = g.shape
    # thin grey cell borders, as ARC viewers draw them
    ax.set_xticks(np.arange(-0.5, w, 1), minor=True)
    ax.set_yticks(np.arange(-0.5, h, 1), minor=True)
    ax.grid(which="minor", color="#555555", linewidth=0.4)
    ax.tick_params(which="minor", length=0)


def plot_gallery(
    items: Sequence[Mapping[str, Any]], answers: Mapping[str, Sequence[Any]], path: str | Path
) -> Path:
    """Rows of input, target and each model's answer (ARC palette).

    ``items``: dicts with ``task_id``, ``query``, ``input``, ``target``; ``answers[model][i]``
    is model's grid for ``items[i]`` (``None`` = malformed, drawn as "no grid").
    """
    models = list(answers)
    ncols, nrows = 2 + len(models), max(1, len(items))
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.0 * ncols, 2.1 * nrows), squeeze=False)
    for r, item in enumerate(items):
        target = item["target"]
        _draw_grid(axes[r, 0], item["input"], f"{item['task_id']}#{item['query']} input")
        _draw_grid(axes[r, 1], target, "target")
        for c, m in enumerate(models, start=2):
            g = answers[m][r]
            ok = g is not None and np.array_equal(np.asarray(g), np.asarray(target))
            _draw_grid(axes[r, c], g, f"{m} {'✓' if ok else '✗'}")
    if not items:
        axes[0, 0].text(0.5, 0.5, "no tasks", ha="center", va="center")
    fig.suptitle("Gallery: generated answers (ARC palette)", fontsize=10)
    return _save(fig, path)


def plot_gap(gap: pd.DataFrame, path: str | Path) -> Path:
    """Per taxonomy category and model: tasks solved only after adaptation (up) and tasks
    voting alone solved but the adapted model lost (down)."""
    cats = [c for c in dict.fromkeys(gap["category"]) if c != "all"] or ["all"]
    labels = list(dict.fromkeys(gap["model"]))
    width = 0.8 / max(len(labels), 1)
    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(cats) + 2), 3.6))
    x = np.arange(len(cats))
    for i, label in enumerate(labels):
        rows = gap[gap["model"] == label].set_index("category").reindex(cats)
        gained = rows["only_after_adaptation"].fillna(0).to_numpy(float)
        lost = rows["lost_by_adaptation"].fillna(0).to_numpy(float)
        colour = f"C{i}"
        ax.bar(x + i * width, gained, width, color=colour, label=label)
        ax.bar(x + i * width, -lost, width, color=colour, alpha=0.35)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(x + width * (len(labels) - 1) / 2, cats, rotation=30, ha="right")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("tasks (up: solved only after\nadaptation; down: lost)")
    ax.set_title("Adaptation gap per taxonomy category (vs voting alone)")
    ax.legend(fontsize=7, frameon=False)
    return _save(fig, path)
