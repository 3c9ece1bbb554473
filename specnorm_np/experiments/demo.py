"""``python -m specnorm_np demo``: vanilla vs spectral norm regularization in a few minutes.

Trains the small VGG-style CNN with BatchNorm on a CIFAR-10 subset (2,000 training and 2,000
test images) at a large minibatch (250) for 15 epochs, once without regularization and once
with the paper's spectral penalty (λ = 0.01), then prints a small table (test accuracy,
generalization gap, input-gradient norm on test data, largest σ over the layers) and writes a
figure. Without CIFAR-10 on disk (and without network access for the download) it falls back to
scikit-learn's bundled 8x8 digits and says so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from specnorm_np.experiments.compare import build_configs, run_grid
from specnorm_np.experiments.datasets import DataSpec, load_splits
from specnorm_np.experiments.plots import COLORS, _pyplot, choose_layer

__all__ = ["resolve_demo_data", "run_demo", "demo_table", "demo_figure"]

HOW_TO_GET_CIFAR = (
    "To use CIFAR-10, put the official python version (cifar-10-batches-py/) under "
    "$SPECNORM_DATA or ~/.cache/specnorm_np, or run with network access (it is downloaded, "
    "170 MB)."
)


def resolve_demo_data(root: str | None, train_size: int, test_size: int, download: bool,
                      seed: int = 0) -> tuple[DataSpec, str]:
    """The CIFAR-10 subset if available (on disk, else downloaded), else the digits.

    Returns ``(spec, notice)``; the notice is empty for CIFAR-10.
    """
    from specnorm_np.data import DatasetError

    spec = DataSpec("cifar10", train_size, test_size, seed, root, download=False)
    try:
        load_splits(spec)
        return spec, ""
    except DatasetError as missing:
        reason = str(missing)
    if download:
        try:
            spec = DataSpec("cifar10", train_size, test_size, seed, root, download=True)
            load_splits(spec)
            return spec, ""
        except (DatasetError, OSError) as error:
            reason += f"\nThe download failed too: {error}"
    details = "\n".join("    " + line for line in reason.splitlines())
    notice = ("NOTICE: CIFAR-10 is not available:\n" + details + "\nThe demo falls back to "
              "scikit-learn's 8x8 digits (1,348 training / 449 test images), so its numbers are "
              f"not CIFAR-10 numbers. {HOW_TO_GET_CIFAR}\n")
    return DataSpec("digits", None, None, seed), notice


def demo_table(results: list[dict[str, Any]]) -> str:
    """Final-epoch numbers of each run, one line per method."""
    lines = [f"{'method':10} {'B':>5} {'test acc':>9} {'train acc':>10} {'gap':>7} "
             f"{'‖∇x loss‖ test':>15} {'largest σ':>10} {'seconds':>8}",
             "-" * 80]
    for r in results:
        history = r["history"]
        if r["status"] != "finished":
            lines.append(f"{r['config']['method']:10} {r['status']}: {r['message']}")
            continue
        last = history[-1]
        marks = [h["input_grad"] for h in history if h.get("input_grad")]
        grad = marks[-1]["test"]["per_example"] if marks else float("nan")
        lines.append(f"{r['config']['method']:10} {r['config']['batch_size']:5d} "
                     f"{last['test_acc']:9.3f} {last['train_acc']:10.3f} {last['gap']:7.3f} "
                     f"{grad:15.4f} {max(last['sigma'].values()):10.3f} "
                     f"{sum(h['seconds'] for h in history):8.0f}")
    lines.append("gap = train acc − test acc at the last epoch; ‖∇x loss‖ = mean over 500 test "
                 "images of each image's input-gradient norm; σ: largest singular value of the "
                 "layers' weight matrices")
    return "\n".join(lines)


def demo_figure(results: list[dict[str, Any]], path: str | Path) -> Path:
    """Accuracy/gap curves, input-gradient norm over training, and one layer's spectrum."""
    plt = _pyplot()  # bare Figure objects: no display needed, the caller's backend is kept
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    layer = choose_layer(results)
    results = [r for r in results if r["status"] == "finished"]
    for r in results:
        method, history = r["config"]["method"], r["history"]
        color = COLORS.get(method)
        epochs = [h["epoch"] for h in history]
        axes[0].plot(epochs, [h["test_acc"] for h in history], "-", color=color,
                     label=f"{method} test")
        axes[0].plot(epochs, [h["train_acc"] for h in history], "--", color=color, lw=1,
                     label=f"{method} train")
        axes[0].plot(epochs, [h["gap"] for h in history], ":", color=color, lw=1.5,
                     label=f"{method} gap")
        marks = [h for h in history if h.get("input_grad")]
        for split, style in (("test", "-o"), ("train", "--o")):
            axes[1].plot([h["epoch"] for h in marks],
                         [h["input_grad"][split]["per_example"] for h in marks], style,
                         color=color, ms=4, label=f"{method} {split}")
        values = np.sort(np.asarray(r["final"]["singular_values"][layer]))
        axes[2].plot(values, color=color, label=method)
    batch = results[0]["config"]["batch_size"] if results else 0
    axes[0].set(title=f"accuracy and gap (B = {batch})", xlabel="epoch", ylim=(0, 1.02))
    axes[1].set(title="input-gradient norm (mean per example)", xlabel="epoch")
    axes[2].set(title=f"singular values of {layer}", xlabel="index (ascending)")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def run_demo(out: str | Path = "specnorm_demo", *, root: str | None = None,
             train_size: int = 2000, test_size: int = 2000, epochs: int = 15,
             batch_size: int = 250, lr: float = 0.1, model: str = "vgg-bn",
             download: bool = True, threads: int | None = 1,
             quiet: bool = False) -> dict[str, Any]:
    """Run the demo; returns ``{"results", "table", "figure", "notice"}``.

    ``threads`` caps the BLAS threads (None: the library's default). One thread is the default
    because on a busy 2-core machine OpenBLAS's spinning threads cost several times the CPU time
    for the same result.
    """
    spec, notice = resolve_demo_data(root, train_size, test_size, download)
    if notice:
        print(notice, flush=True)
        batch_size = min(batch_size, 128)
    data = load_splits(spec)
    if not quiet:
        print(f"data: {spec.dataset}, {data.x_train.shape[0]} training / {data.x_test.shape[0]} "
              f"test images; model {model}; batch size {batch_size}; {epochs} epochs; "
              f"output in {out}/", flush=True)
    configs = build_configs(["vanilla", "spectral"], [batch_size], [0], lr=lr, epochs=epochs,
                            model=model, hessian=False, metric_examples=500)
    results = run_grid(configs, spec, out, jobs=1, threads=threads, quiet=quiet)
    from specnorm_np.experiments.compare import load_results

    by_id = {r["id"]: r for r in load_results(out)}
    results = [by_id[r["id"]] for r in results]
    table = demo_table(results)
    print(table)
    figure = None
    if any(r["status"] == "finished" for r in results):
        figure = demo_figure(results, Path(out) / "demo.png")
        print(f"figure: {figure}")
    return {"results": results, "table": table, "figure": figure, "notice": notice}
