"""Post-hoc certificates for trained models: per-layer true-norm intervals, network Lipschitz
bound, measured local Lipschitz constant and certified accuracy, from a ``compare`` directory.

``python -m specnorm_np certify OUT`` reads every run ``OUT/runs/<run-id>/`` that has its final
weights ``weights.npz`` (``np.savez_compressed`` of ``model.state_dict()``, floats possibly
stored as float16) next to its ``result.json``, rebuilds the model from the run's configuration,
and writes

* ``OUT/certified.json``: per run, :func:`certify_model`'s dictionary (atomically: a temporary
  file, then ``os.replace``); runs without weights are listed under ``"skipped"``;
* ``OUT/fig5_true_norms.png``: per weight layer, the paper's reshaped σ against the certified
  interval [lower, upper] of the layer's true operator norm, per method, and (right) each
  method's values relative to vanilla's: does the penalty lower the true norms as much as the
  reshaped ones?

The certificates are about the stored weights as float64 numbers (float16 weights are exact in
float64); the test images come from the run's own data specification (another stratified draw of
its test split when ``test_size`` is smaller than the run's).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from specnorm_np.spectral.bounds import DEFAULT_POWER_ITERATIONS
from specnorm_np.spectral.lipschitz import lipschitz_upper_bound, local_lipschitz
from specnorm_np.spectral.robustness import logit_margins

__all__ = ["DEFAULT_RADII", "INPUT_SHAPES", "certify_model", "load_run_model",
           "certify_directory", "plot_true_norms"]

#: ℓ2 radii of the certified accuracy (inputs are contrast-normalized: ‖x‖ ≈ √(H·W·C))
DEFAULT_RADII = (0.0, 0.01, 0.03, 0.1, 0.3)
INPUT_SHAPES = {"cifar10": (32, 32, 3), "digits": (8, 8, 1)}


def certify_model(
    model: Any,
    x: Any,
    y: Any,
    radii: Sequence[float] = DEFAULT_RADII,
    *,
    local_examples: int = 100,
    power_iterations: int = DEFAULT_POWER_ITERATIONS,
    exact: bool | str = "auto",
) -> dict[str, Any]:
    """Every certificate of one model on examples ``x`` (n, H, W, C), ``y`` (n,), JSON-able.

    Returns
    -------
    dict with keys
        ``layers``: one row per layer (``name``, ``description``, ``kind``, ``reshaped_sigma``
        for weight layers, ``lower``, ``upper``, ``exact`` when a dense SVD was cheap,
        methods); ``lipschitz_upper`` (certified, BatchNorm folded); ``lipschitz_unfolded``;
        ``local_lipschitz_max`` over the first ``local_examples`` examples (a measured lower
        bound of the true constant); ``accuracy``; ``certified_accuracy`` (a list of
        ``{"radius", "accuracy"}``); ``median_certified_radius``; ``examples``.
    """
    radii = [float(r) for r in radii]
    bound = lipschitz_upper_bound(model, tuple(x.shape[1:]), power_iterations=power_iterations,
                                  exact=exact)
    measured = local_lipschitz(model, x[:local_examples]) if local_examples > 0 else None
    margins = logit_margins(model, x, y)
    radius = np.maximum(margins, 0.0) / (math.sqrt(2.0) * bound.upper)
    return {
        "layers": [row.to_dict() for row in bound.layers],
        "lipschitz_upper": bound.upper,
        "lipschitz_unfolded": bound.unfolded_upper,
        "local_lipschitz_max": None if measured is None else float(measured.max()),
        "local_lipschitz_mean": None if measured is None else float(measured.mean()),
        "local_examples": 0 if measured is None else int(measured.shape[0]),
        "examples": int(x.shape[0]),
        "accuracy": float((margins > 0).mean()),
        "certified_accuracy": [{"radius": r, "accuracy": float((radius > r).mean())}
                               for r in radii],
        "median_certified_radius": float(np.median(radius)),
    }


def load_run_model(run_dir: str | Path) -> tuple[Any, dict[str, Any]]:
    """(model with the run's final weights, result dict) for ``run_dir`` with weights.npz."""
    from specnorm_np.models import build_model

    run_dir = Path(run_dir)
    result = json.loads((run_dir / "result.json").read_text())
    config, data = result["config"], result["data"]
    if data.get("dataset") not in INPUT_SHAPES:
        raise ValueError(f"load_run_model: {run_dir}: unknown dataset {data.get('dataset')!r}; "
                         f"expected one of {sorted(INPUT_SHAPES)}")
    model = build_model(config["model"], INPUT_SHAPES[data["dataset"]], 10,
                        seed=config["seed"], width=config["width"])
    with np.load(run_dir / "weights.npz") as archive:
        model.load_state_dict({name: archive[name] for name in archive.files})
    return model.eval(), result


def _write_json(path: Path, value: Any) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(value, indent=1))
    os.replace(temporary, path)


def certify_directory(
    out: str | Path,
    *,
    test_size: int = 500,
    radii: Sequence[float] = DEFAULT_RADII,
    root: str | None = None,
    local_examples: int = 100,
    power_iterations: int = DEFAULT_POWER_ITERATIONS,
    quiet: bool = True,
) -> dict[str, Any]:
    """Certify every run of a ``compare`` directory that has weights; write JSON and figure.

    Parameters
    ----------
    out : path
        The directory given to ``compare --out``.
    test_size : int
        Test images for the certified accuracy (a multiple of 10; at most the run's).
    radii : sequence of float
    root : str, optional
        Folder holding ``cifar-10-batches-py/`` (default: the loader's search path).
    local_examples, power_iterations
        As in :func:`certify_model`.

    Returns
    -------
    dict
        What was written to ``OUT/certified.json``: ``{"radii", "test_size", "runs":
        {run_id: {...}}, "skipped": {run_id: reason}, "figure"}``.
    """
    from specnorm_np.experiments.datasets import DataSpec, load_splits

    out = Path(out)
    runs_dir = out / "runs"
    if not runs_dir.is_dir():
        raise FileNotFoundError(f"certify_directory: {out} has no runs/ directory")
    report: dict[str, Any] = {"radii": [float(r) for r in radii], "test_size": int(test_size),
                              "runs": {}, "skipped": {}}
    for run_dir in sorted(p for p in runs_dir.iterdir() if (p / "result.json").is_file()):
        if not (run_dir / "weights.npz").is_file():
            report["skipped"][run_dir.name] = "no weights.npz"
            continue
        model, result = load_run_model(run_dir)
        data = result["data"]
        size = int(test_size) if data.get("test_size") is None else min(int(test_size),
                                                                          int(data["test_size"]))
        spec = DataSpec(data["dataset"], data.get("train_size"), size, data.get("data_seed", 0),
                        root if root is not None else data.get("root"), False)
        splits = load_splits(spec)
        entry = certify_model(model, splits.x_test, splits.y_test, radii,
                              local_examples=local_examples, power_iterations=power_iterations)
        config = result["config"]
        entry.update(method=config["method"], batch_size=config["batch_size"],
                     seed=config["seed"], model=config["model"], width=config["width"])
        report["runs"][run_dir.name] = entry
        if not quiet:
            first = entry["certified_accuracy"]
            print(f"{run_dir.name}: L <= {entry['lipschitz_upper']:.4g} (measured "
                  f"{entry['local_lipschitz_max']:.4g}), accuracy {entry['accuracy']:.3f}, "
                  + ", ".join(f"r={c['radius']:g}: {c['accuracy']:.3f}" for c in first[1:]),
                  flush=True)
    if report["runs"]:
        report["figure"] = plot_true_norms(report, out / "fig5_true_norms.png").name
    _write_json(out / "certified.json", report)
    return report


def plot_true_norms(report: dict[str, Any], path: str | Path) -> Path:
    """fig5: reshaped σ (circles) and true-norm interval (bars) per weight layer and method.

    Left column: values (log scale), methods side by side, mean over seeds, one row per batch
    size. Right column: each method's mean divided by vanilla's (when vanilla is present), for
    the reshaped σ (circles) and the certified upper bound (squares).
    """
    from specnorm_np.experiments.plots import COLORS, _pyplot, _save
    from specnorm_np.experiments.summary import method_order

    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for entry in report["runs"].values():
        groups.setdefault((entry["method"], int(entry["batch_size"])), []).append(entry)
    batches = sorted({b for _, b in groups})
    fig, axes = _pyplot().subplots(len(batches), 2, figsize=(12, 4 * len(batches)),
                                   squeeze=False)
    for row, batch in enumerate(batches):
        methods = method_order([m for m, b in groups if b == batch]) or sorted(
            {m for m, b in groups if b == batch})
        means = {}
        for method in methods:
            entries = groups[(method, batch)]
            layers = [r for r in entries[0]["layers"] if r["reshaped_sigma"] is not None]
            table = np.array([[[r["reshaped_sigma"], r["lower"], r["upper"]]
                               for r in e["layers"] if r["reshaped_sigma"] is not None]
                              for e in entries]).mean(axis=0)  # (layers, 3)
            means[method] = (layers, table)
        left, right = axes[row]
        width = 0.8 / max(len(methods), 1)
        for k, method in enumerate(methods):
            layers, table = means[method]
            where = np.arange(len(layers)) + (k - (len(methods) - 1) / 2) * width
            color = COLORS.get(method)
            left.vlines(where, table[:, 1], table[:, 2], color=color, lw=5, alpha=0.6,
                        label=f"{method}: true norm [lower, upper]")
            left.plot(where, table[:, 2], "_", color=color, ms=14)  # visible when lower = upper
            left.plot(where, table[:, 0], "o", mfc="none", color=color,
                      label=f"{method}: reshaped σ")
            if "vanilla" in means and method != "vanilla":
                base = means["vanilla"][1]
                right.plot(np.arange(len(layers)), table[:, 0] / base[:, 0], "o-", color=color,
                           mfc="none", label=f"{method}: reshaped σ / vanilla's")
                right.plot(np.arange(len(layers)), table[:, 2] / base[:, 2], "s--", color=color,
                           label=f"{method}: certified upper / vanilla's")
        names = [r["name"].replace(".weight", "") for r in means[methods[0]][0]]
        left.set(yscale="log", title=f"B = {batch}: reshaped σ vs true operator norm",
                 xlabel="weight layer", ylabel="norm")
        left.set_xticks(range(len(names)), names)
        left.legend(fontsize=7)
        right.axhline(1.0, color="gray", lw=0.8)
        right.set(title="relative to vanilla (same layer)", xlabel="weight layer",
                  ylabel="ratio")
        right.set_xticks(range(len(names)), names)
        if right.get_legend_handles_labels()[0]:
            right.legend(fontsize=7)
    return _save(fig, path)
