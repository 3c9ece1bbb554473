"""Figures in the style of the paper's Figs. 1-4, drawn from saved runs (matplotlib, Agg).

* ``fig1_curves.png``: per batch size, test accuracy (solid), training accuracy (dashed) and
  generalization gap (dotted) against epoch, mean over seeds.
* ``fig2_gap_vs_input_grad.png``: gap against the input-gradient norm on training data (left)
  and test data (right), one line per run joining its checkpoints in time order; solid for the
  smallest batch size, dashed for the larger; Pearson r over all points in each title. Top row:
  norm of the gradient of the mean loss; bottom row: mean per-example norm.
* ``fig3_hessian.png``: top Hessian eigenvalue on training and test data, bars per method and
  batch size (mean over seeds, error bar = std).
* ``fig4_singular_values.png``: all singular values of one weight matrix in ascending order,
  solid for the smallest batch size, dashed for the larger (first seed).

Colours follow the paper: vanilla blue, decay green, adversarial red, spectral cyan.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from specnorm_np.experiments.summary import (
    correlations,
    evaluated,
    gradient_points,
    group_runs,
    method_order,
)

__all__ = ["COLORS", "plot_all", "plot_curves", "plot_gap_vs_gradient", "plot_hessian",
           "plot_singular_values"]

COLORS = {"vanilla": "tab:blue", "decay": "tab:green", "adversarial": "tab:red",
          "spectral": "c", "spectral-operator": "tab:purple"}


class _Figures:
    """``subplots``/``close`` like pyplot's, on bare ``matplotlib.figure.Figure`` objects.

    Figures made this way are written to files without pyplot's global state, so drawing them
    neither needs a display nor changes the backend of the caller (a notebook keeps its inline
    figures).
    """

    @staticmethod
    def subplots(*args: Any, figsize: Any = None, **kwargs: Any) -> tuple[Any, Any]:
        from matplotlib.figure import Figure

        fig = Figure(figsize=figsize)
        return fig, fig.subplots(*args, **kwargs)

    @staticmethod
    def close(fig: Any) -> None:
        """Nothing to release: the figure is not registered with pyplot."""


def _pyplot() -> _Figures:
    return _Figures()


def _styles(batches: Sequence[int]) -> dict[int, str]:
    smallest = min(batches)
    return {b: "-" if b == smallest else "--" for b in batches}


def plot_curves(results: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Fig. 1 analogue: accuracy and gap curves, one panel per batch size."""
    plt = _pyplot()
    groups = group_runs(results)
    batches = sorted({b for _, b in groups})
    fig, axes = plt.subplots(1, len(batches), figsize=(5.5 * len(batches), 4), squeeze=False)
    for ax, batch in zip(axes[0], batches):
        for method in method_order([m for m, b in groups if b == batch]):
            runs = groups[(method, batch)]
            length = min(len(evaluated(r)) for r in runs)
            mean = {key: np.mean([[rec[key] for rec in evaluated(r)[:length]] for r in runs],
                                 axis=0) for key in ("test_acc", "train_acc", "gap")}
            epochs = np.array([rec["epoch"] for rec in evaluated(runs[0])[:length]])
            color = COLORS.get(method)
            ax.plot(epochs, mean["test_acc"], "-", color=color, label=f"{method} test")
            ax.plot(epochs, mean["train_acc"], "--", color=color, lw=1)
            ax.plot(epochs, mean["gap"], ":", color=color, lw=1.5)
        ax.set(title=f"B = {batch} (solid test, dashed train, dotted gap)", xlabel="epoch",
               ylabel="accuracy / gap", ylim=(0, 1.02))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="center right")
    return _save(fig, path)


def plot_gap_vs_gradient(results: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Fig. 2 analogue: gap against input-gradient norm, train and test, both aggregations."""
    plt = _pyplot()
    r_values = {(c["split"], c["aggregation"]): c["pearson_r"] for c in correlations(results)}
    batches = sorted({b for _, b in group_runs(results)}) or [0]
    styles = _styles(batches)
    fig, axes = plt.subplots(2, 2, figsize=(11, 8.5))
    names = {"mean_loss": "‖∇ₓ mean loss‖", "per_example": "mean of ‖∇ₓ loss_i‖"}
    for row, aggregation in enumerate(("mean_loss", "per_example")):
        for col, split in enumerate(("train", "test")):
            ax = axes[row][col]
            labelled: set[tuple[str, int]] = set()
            for result, norms, gaps in gradient_points(results, split, aggregation):
                method, batch = result["config"]["method"], result["config"]["batch_size"]
                key = (method, batch)
                ax.plot(norms, gaps, styles.get(batch, "-"), marker="o", ms=3,
                        color=COLORS.get(method),
                        label=None if key in labelled else f"{method} B={batch}")
                labelled.add(key)
            r = r_values.get((split, aggregation), float("nan"))
            ax.set(title=f"{split} data: r = {r:.3f}", xlabel=f"{names[aggregation]} ({split})",
                   ylabel="generalization gap")
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle("Generalization gap vs input-gradient norm (checkpoints of each run joined in "
                 "time order)")
    return _save(fig, path)


def plot_hessian(results: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Fig. 3 analogue: bars of the top Hessian eigenvalue per method and batch size."""
    plt = _pyplot()
    groups = group_runs(results)
    batches = sorted({b for _, b in groups})
    methods = method_order([m for m, _ in groups])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.8 / max(len(methods), 1)
    for ax, split in zip(axes, ("train", "test")):
        for k, method in enumerate(methods):
            means, stds = [], []
            for batch in batches:
                values = [((r.get("final") or {}).get(f"hessian_{split}") or {}).get("eigenvalue")
                          for r in groups.get((method, batch), [])]
                values = [v for v in values if v is not None]
                means.append(np.mean(values) if values else np.nan)
                stds.append(np.std(values, ddof=1) if len(values) > 1 else 0.0)
            ax.bar(np.arange(len(batches)) + (k - (len(methods) - 1) / 2) * width, means, width,
                   yerr=stds, color=COLORS.get(method), label=method, capsize=2)
        ax.set_xticks(np.arange(len(batches)), [f"B = {b}" for b in batches])
        ax.set(title=f"top Hessian eigenvalue ({split} data)", ylabel="λ_max")
        ax.grid(alpha=0.3, axis="y")
    axes[0].legend(fontsize=8)
    return _save(fig, path)


def choose_layer(results: Sequence[dict[str, Any]]) -> str | None:
    """The weight with the most singular values (ties: the first), present in every run."""
    names: list[str] | None = None
    counts: dict[str, int] = {}
    for r in results:
        spectra = (r.get("final") or {}).get("singular_values") or {}
        if spectra:
            present = list(spectra)
            names = present if names is None else [n for n in names if n in present]
            counts.update({n: len(v) for n, v in spectra.items()})
    if not names:
        return None
    return max(names, key=lambda n: (counts[n], -names.index(n)))


def plot_singular_values(results: Sequence[dict[str, Any]], path: str | Path,
                         layer: str | None = None) -> Path:
    """Fig. 4 analogue: sorted singular values of one weight matrix, first seed of each group."""
    plt = _pyplot()
    groups = group_runs(results)
    layer = layer or choose_layer([r for runs in groups.values() for r in runs])
    styles = _styles(sorted({b for _, b in groups}) or [0])
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for (method, batch), runs in groups.items():
        spectra = (runs[0].get("final") or {}).get("singular_values") or {}
        if layer in spectra:
            values = np.sort(np.asarray(spectra[layer]))
            ax.plot(values, styles[batch], color=COLORS.get(method), label=f"{method} B={batch}")
    ax.set(title=f"singular values of {layer}", xlabel="index (ascending)",
           ylabel="singular value")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def _save(fig: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return path


def plot_all(results: Sequence[dict[str, Any]], out: str | Path,
             layer: str | None = None) -> list[Path]:
    """Draw all four figures into ``out``; returns their paths (none without a finished run).

    Raises ``ValueError`` when ``layer`` is not a weight of the finished runs.
    """
    out = Path(out)
    groups = group_runs(results)
    if not groups:
        return []
    if layer is not None:
        known = sorted({name for runs in groups.values() for r in runs
                        for name in ((r.get("final") or {}).get("singular_values") or {})})
        if layer not in known:
            raise ValueError(f"--layer {layer!r}: no such weight in these runs; choose one of "
                             f"{', '.join(known) or '(none recorded)'}")
    return [plot_curves(results, out / "fig1_curves.png"),
            plot_gap_vs_gradient(results, out / "fig2_gap_vs_input_grad.png"),
            plot_hessian(results, out / "fig3_hessian.png"),
            plot_singular_values(results, out / "fig4_singular_values.png", layer)]
