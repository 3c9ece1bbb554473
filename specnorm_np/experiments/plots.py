"""Figures in the style of the paper's Figs. 1-4, drawn from saved runs (matplotlib, Agg).

* ``fig1_curves.png``: per batch size, test accuracy (solid), training accuracy (dashed) and
  generalization gap (dotted) against epoch, mean over seeds.
* ``fig2_gap_vs_input_grad.png``: gap against the input-gradient norm on training data (left)
  and test data (right), one line per run joining its checkpoints in time order; one line style
  per batch size; Pearson r over all points in each title. Top row: norm of the gradient of the
  mean loss; bottom row: mean per-example norm.
* ``fig3_hessian.png``: top Hessian eigenvalue on training and test data, bars per method and
  batch size (mean over seeds, error bar = std).
* ``fig4_singular_values.png``: all singular values of one weight matrix in ascending order,
  one line style per batch size (first seed).

Every title names the data set and the model, every axis is labelled, layers are named by what
they are ("conv 1 (3→16, 3x3)", "linear 2 (256→128)"), and methods have colours from the
Okabe-Ito palette (safe for the common colour-vision deficiencies) *and* distinct markers.
Runs of different data sets or models are never drawn together (:func:`check_one_setting`).
"""

from __future__ import annotations

import functools
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

__all__ = ["COLORS", "MARKERS", "FIGURE_NAMES", "DATASET_NAMES", "MixedRunsError",
           "check_one_setting",
           "setting_title", "layer_labels", "plot_all", "plot_curves", "plot_gap_vs_gradient",
           "plot_hessian", "plot_singular_values"]

#: Okabe & Ito's colour-blind-safe palette, one colour per method.
COLORS = {"vanilla": "#0072B2", "decay": "#009E73", "adversarial": "#D55E00",
          "spectral": "#E69F00", "spectral-operator": "#CC79A7"}
#: and one marker per method, so that the methods differ without colour too.
MARKERS = {"vanilla": "o", "decay": "s", "adversarial": "^", "spectral": "D",
           "spectral-operator": "v"}
#: line styles given to the batch sizes in ascending order (Figs. 2 and 4)
BATCH_STYLES = ("-", "--", "-.", ":")
DATASET_NAMES = {"cifar10": "CIFAR-10", "digits": "8x8 digits"}
INPUT_SHAPES = {"cifar10": (32, 32, 3), "digits": (8, 8, 1)}


class MixedRunsError(ValueError):
    """A results directory holds runs of more than one data set or model."""


def dataset_of(result: dict[str, Any]) -> str:
    """The data set of a run (``cifar10`` or ``digits``)."""
    identity = result.get("data_identity") or result.get("data") or {}
    return str(identity.get("dataset", "cifar10"))


def _setting(result: dict[str, Any]) -> tuple[str, str, Any]:
    config = result["config"]
    return dataset_of(result), str(config.get("model")), config.get("width")


def check_one_setting(results: Sequence[dict[str, Any]], where: str = "these runs") -> None:
    """Raise :class:`MixedRunsError`, listing every group, when ``results`` mix data sets,
    models or model widths: one table, correlation or figure must hold one of each."""
    groups: dict[tuple[str, str, Any], list[str]] = {}
    for r in results:
        groups.setdefault(_setting(r), []).append(r["id"])
    if len(groups) <= 1:
        return
    lines = [f"  - {DATASET_NAMES.get(d, d)}, model {m}"
             + (f" (width {w})" if w is not None else "") + f": {', '.join(ids)}"
             for (d, m, w), ids in groups.items()]
    raise MixedRunsError(
        f"{where} mix {len(groups)} settings, which one table or figure must not combine:\n"
        + "\n".join(lines) + "\nMove the run directories of all but one setting out of "
        "runs/ into another output directory (or use one --out per data set and model).")


def setting_title(results: Sequence[dict[str, Any]]) -> str:
    """``"CIFAR-10, vgg-bn"``: the data set and model of ``results`` (for titles)."""
    if not results:
        return ""
    dataset, model, width = _setting(results[0])
    return f"{DATASET_NAMES.get(dataset, dataset)}, {model}" + (
        f" (width {width})" if width is not None else "")


@functools.lru_cache(maxsize=16)
def _labels(model: str, width: Any, dataset: str) -> dict[str, str]:
    from specnorm_np import nn
    from specnorm_np.models import build_model

    network = build_model(model, INPUT_SHAPES.get(dataset, (32, 32, 3)), 10, seed=0,
                          width=width)
    labels: dict[str, str] = {}
    counts = {"conv": 0, "linear": 0}

    def walk(module: Any, prefix: str) -> None:
        if isinstance(module, nn.Conv2d):
            counts["conv"] += 1
            kh, kw = module.kernel_size
            stride = "" if tuple(module.stride) == (1, 1) else f", stride {module.stride[0]}"
            labels[prefix + "weight"] = (f"conv {counts['conv']} ({module.in_channels}→"
                                         f"{module.out_channels}, {kh}x{kw}{stride})")
        elif isinstance(module, nn.Linear):
            counts["linear"] += 1
            labels[prefix + "weight"] = (f"linear {counts['linear']} ({module.in_features}→"
                                         f"{module.out_features})")
        for name, child in module.children():
            walk(child, f"{prefix}{name}.")

    walk(network, "")
    return labels


def layer_labels(result: dict[str, Any]) -> dict[str, str]:
    """Readable names of a run's weights: ``{"19.weight": "linear 1 (1024→128)", ...}``.

    Rebuilt from the run's model, width and data set; a name that cannot be resolved is kept.
    """
    config = result["config"]
    try:
        labels = _labels(str(config.get("model")), config.get("width"), dataset_of(result))
    except (ValueError, KeyError, TypeError):
        labels = {}
    spectra = (result.get("final") or {}).get("singular_values") or {}
    sigma = next((rec.get("sigma") for rec in reversed(result.get("history", []))
                  if rec.get("sigma")), None) or {}
    return {name: labels.get(name, name) for name in (*spectra, *sigma)} or labels


def _mark_every(points: int) -> int:
    """Markers on every point of short curves, on about 12 of long ones."""
    return max(1, points // 12)


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
    """One line style per batch size (ascending), cycling when there are more than four."""
    return {b: BATCH_STYLES[k % len(BATCH_STYLES)] for k, b in enumerate(sorted(batches))}


def plot_curves(results: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Fig. 1 analogue: accuracy and gap curves, one panel per batch size."""
    plt = _pyplot()
    groups = group_runs(results)
    title = setting_title([r for runs in groups.values() for r in runs])
    batches = sorted({b for _, b in groups})
    fig, axes = plt.subplots(1, len(batches), figsize=(5.5 * len(batches), 4.3), squeeze=False)
    for ax, batch in zip(axes[0], batches):
        for method in method_order([m for m, b in groups if b == batch]):
            runs = groups[(method, batch)]
            length = min(len(evaluated(r)) for r in runs)
            mean = {key: np.mean([[rec[key] for rec in evaluated(r)[:length]] for r in runs],
                                 axis=0) for key in ("test_acc", "train_acc", "gap")}
            epochs = np.array([rec["epoch"] for rec in evaluated(runs[0])[:length]])
            style = {"color": COLORS.get(method), "marker": MARKERS.get(method, "o"),
                     "markevery": _mark_every(len(epochs)), "ms": 4}
            ax.plot(epochs, mean["test_acc"], "-", label=f"{method} test", **style)
            ax.plot(epochs, mean["train_acc"], "--", lw=1, label=f"{method} train", **style)
            ax.plot(epochs, mean["gap"], ":", lw=1.5, label=f"{method} gap", **style)
        seeds = min(len(groups[(m, b)]) for m, b in groups if b == batch)
        ax.set(title=f"{title}: B = {batch}, mean of {seeds} seed(s)", xlabel="epoch",
               ylabel="accuracy (solid test, dashed train) / gap (dotted)", ylim=(0, 1.02))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="center right", ncol=1)
    return _save(fig, path)


def plot_gap_vs_gradient(results: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Fig. 2 analogue: gap against input-gradient norm, train and test, both aggregations."""
    plt = _pyplot()
    r_values = {(c["split"], c["aggregation"]): c["pearson_r"] for c in correlations(results)}
    batches = sorted({b for _, b in group_runs(results)}) or [0]
    styles = _styles(batches)
    fig, axes = plt.subplots(2, 2, figsize=(11, 8.5))
    title = setting_title([r for runs in group_runs(results).values() for r in runs])
    names = {"mean_loss": "‖∇ₓ mean loss‖", "per_example": "mean of ‖∇ₓ loss_i‖"}
    for row, aggregation in enumerate(("mean_loss", "per_example")):
        for col, split in enumerate(("train", "test")):
            ax = axes[row][col]
            labelled: set[tuple[str, int]] = set()
            for result, norms, gaps in gradient_points(results, split, aggregation):
                method, batch = result["config"]["method"], result["config"]["batch_size"]
                key = (method, batch)
                ax.plot(norms, gaps, styles.get(batch, "-"), marker=MARKERS.get(method, "o"),
                        ms=4, color=COLORS.get(method),
                        label=None if key in labelled else f"{method} B={batch}")
                labelled.add(key)
            r = r_values.get((split, aggregation), float("nan"))
            ax.set(title=f"{title}: {split} data, Pearson r = {r:.3f}",
                   xlabel=f"{names[aggregation]} ({split} data)",
                   ylabel="generalization gap (train − test accuracy)")
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"{title}: generalization gap vs input-gradient norm "
                 "(checkpoints of each run joined in time order)")
    return _save(fig, path)


_HATCHES = {"vanilla": None, "decay": "//", "adversarial": "..", "spectral": "xx",
            "spectral-operator": "\\\\"}


def plot_hessian(results: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Fig. 3 analogue: bars of the top Hessian eigenvalue per method and batch size."""
    plt = _pyplot()
    groups = group_runs(results)
    batches = sorted({b for _, b in groups})
    methods = method_order([m for m, _ in groups])
    title = setting_title([r for runs in groups.values() for r in runs])
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.3))
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
                   yerr=stds, color=COLORS.get(method), label=method, capsize=2,
                   hatch=_HATCHES.get(method), edgecolor="black", linewidth=0.5)
        ax.set_xticks(np.arange(len(batches)), [f"B = {b}" for b in batches])
        ax.set(title=f"{title}: top Hessian eigenvalue ({split} data)", xlabel="batch size",
               ylabel="λ_max of the loss Hessian")
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
    finished = [r for runs in groups.values() for r in runs]
    layer = layer or choose_layer(finished)
    styles = _styles(sorted({b for _, b in groups}) or [0])
    fig, ax = plt.subplots(figsize=(7, 4.8))
    for (method, batch), runs in groups.items():
        spectra = (runs[0].get("final") or {}).get("singular_values") or {}
        if layer in spectra:
            values = np.sort(np.asarray(spectra[layer]))
            ax.plot(values, styles[batch], color=COLORS.get(method),
                    marker=MARKERS.get(method, "o"), markevery=_mark_every(values.size), ms=4,
                    label=f"{method} B={batch}")
    name = layer_labels(finished[0]).get(layer, layer) if finished else layer
    ax.set(title=f"{setting_title(finished)}: singular values of {name}",
           xlabel="index (ascending)", ylabel="singular value")
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


FIGURE_NAMES = ("fig1_curves.png", "fig2_gap_vs_input_grad.png", "fig3_hessian.png",
                "fig4_singular_values.png")


def plot_all(results: Sequence[dict[str, Any]], out: str | Path,
             layer: str | None = None, only: str | None = None) -> list[Path]:
    """Draw all four figures (or the one named ``only``) into ``out``; returns their paths
    (none without a finished run).

    Raises ``ValueError`` when ``layer`` is not a weight of the finished runs, and
    :class:`MixedRunsError` (a ValueError) when the runs mix data sets or models.
    """
    out = Path(out)
    check_one_setting(results, str(out))
    groups = group_runs(results)
    if not groups:
        return []
    if layer is not None:
        known = sorted({name for runs in groups.values() for r in runs
                        for name in ((r.get("final") or {}).get("singular_values") or {})})
        if layer not in known:
            names = layer_labels(next(iter(groups.values()))[0])
            raise ValueError(f"--layer {layer!r}: no such weight in these runs; choose one of "
                             + (", ".join(f"{n} ({names.get(n, '?')})" for n in known)
                                or "(none recorded)"))
    draw = {"fig1_curves.png": lambda path: plot_curves(results, path),
            "fig2_gap_vs_input_grad.png": lambda path: plot_gap_vs_gradient(results, path),
            "fig3_hessian.png": lambda path: plot_hessian(results, path),
            "fig4_singular_values.png": lambda path: plot_singular_values(results, path, layer)}
    if only is not None and only not in draw:
        raise ValueError(f"plot_all: unknown figure {only!r}; choose one of {FIGURE_NAMES}")
    return [draw[name](out / name) for name in FIGURE_NAMES if only in (None, name)]
