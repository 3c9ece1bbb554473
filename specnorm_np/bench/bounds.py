"""Time and value of each way to bound a convolution's operator norm.

``python -m specnorm_np.bench.bounds [--out FILE.json] [--threads 1]`` runs, for every conv
layer of ``build_model("vgg")`` and ``build_model("vgg-bn")`` at 32x32 (He-initialised, seed 0)
and for a random 64→64 5x5 kernel (padding 2) at 12x12:

* ``power``: power iteration through the conv and its adjoint, 100 steps from a seeded random
  start (a lower bound);
* ``power_warm``: the same from the circular embedding's top vector (what
  :func:`~specnorm_np.spectral.conv_operator_bounds` uses);
* ``circular_svd``: circular embedding + per-frequency SVD, minimum over the default 3x3
  grid sizes (certified upper bound); ``circular_svd_one_grid``: the smallest grid only;
* ``gram``: the per-frequency matrices (formed again, timed in) + 10 Gram-iteration steps
  (certified upper bound);
* ``dense``: ‖A‖₂ from the largest eigenvalue of the smaller Gram matrix of the dense matrix,
  where that matrix has at most :data:`DENSE_MAX_ENTRIES` entries.

Plus a tightness table on random 3x3, padding 1 kernels (16→16 channels) at 8, 16 and 32 px,
stride 1 and 2: upper/exact − 1 where the dense matrix fits, else upper/lower − 1 (an upper
bound of upper/exact − 1). Times are single measurements on a shared machine: compare ratios.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["DENSE_MAX_ENTRIES", "run_bounds", "format_bounds", "main"]

#: the dense matrix is built only up to this many float64 entries (160 MB)
DENSE_MAX_ENTRIES = 20_000_000


def _timed(function: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    value = function()
    return value, time.perf_counter() - start


def _dense_norm(kernel: np.ndarray, input_hw: tuple[int, int], stride: Any,
                padding: Any) -> float | None:
    import scipy.linalg

    from specnorm_np.spectral import conv_as_dense_matrix
    from specnorm_np.spectral.conv_operator import output_hw

    out_hw = output_hw(input_hw, kernel.shape[1:3], stride, padding)
    rows, columns = out_hw[0] * out_hw[1] * kernel.shape[0], input_hw[0] * input_hw[1] * \
        kernel.shape[3]
    if rows * columns > DENSE_MAX_ENTRIES:
        return None
    dense = conv_as_dense_matrix(kernel, input_hw, stride, padding)
    gram = dense @ dense.T if rows <= columns else dense.T @ dense
    top = scipy.linalg.eigvalsh(gram, subset_by_index=[gram.shape[0] - 1, gram.shape[0] - 1])
    return float(np.sqrt(top[0]))


def bound_layer(kernel: np.ndarray, input_hw: tuple[int, int], stride: Any = 1,
                padding: Any = 0, *, power_iterations: int = 100) -> dict[str, Any]:
    """Values and seconds of every method on one kernel (out, kh, kw, in) at ``input_hw``."""
    from specnorm_np.spectral import conv_power_iteration, random_unit_vector
    from specnorm_np.spectral.bounds import (
        DEFAULT_GRAM_ITERATIONS,
        circular_grid,
        circular_upper_bound,
        frequency_blocks,
        gram_upper_bound,
        roundoff_margin,
    )

    kernel = np.asarray(kernel, dtype=np.float64)
    start = random_unit_vector((1, *input_hw, kernel.shape[3]), kernel, 0, "bench")
    power, power_s = _timed(lambda: float(conv_power_iteration(
        kernel, start, input_hw, stride, padding, power_iterations)[0]))
    (upper, details), svd_s = _timed(lambda: circular_upper_bound(kernel, input_hw, stride,
                                                                  padding))
    (one_grid, _), one_s = _timed(lambda: circular_upper_bound(kernel, input_hw, stride,
                                                               padding, grids=1))
    warm, warm_s = _timed(lambda: float(conv_power_iteration(
        kernel, details["start"], input_hw, stride, padding, power_iterations)[0]))

    def gram() -> float:
        blocks = frequency_blocks(kernel, circular_grid(input_hw, stride, padding), stride)
        margin = roundoff_margin(kernel.shape[1] * kernel.shape[2], *blocks.shape[1:])
        absolute = margin * float(np.sqrt((kernel**2).sum()))
        return gram_upper_bound(blocks, DEFAULT_GRAM_ITERATIONS, absolute)

    gram_value, gram_s = _timed(gram)
    dense, dense_s = _timed(lambda: _dense_norm(kernel, input_hw, stride, padding))
    best_lower = max(power, warm)
    return {
        "kernel": list(kernel.shape), "input_hw": list(input_hw), "stride": stride,
        "padding": padding, "grid": list(details["grid"]),
        "reshaped_sigma": float(np.linalg.svd(kernel.reshape(kernel.shape[0], -1),
                                              compute_uv=False)[0]),
        "power": {"value": power, "seconds": power_s, "iterations": power_iterations},
        "power_warm": {"value": warm, "seconds": warm_s, "iterations": power_iterations},
        "circular_svd": {"value": upper, "seconds": svd_s},
        "circular_svd_one_grid": {"value": one_grid, "seconds": one_s},
        "gram": {"value": gram_value, "seconds": gram_s, "iterations": DEFAULT_GRAM_ITERATIONS},
        "dense": None if dense is None else {"value": dense, "seconds": dense_s},
        "upper_over_lower_minus_1": upper / best_lower - 1,
        "upper_over_exact_minus_1": None if dense is None else upper / dense - 1,
        "one_grid_over_lower_minus_1": one_grid / best_lower - 1,
        "one_grid_over_exact_minus_1": None if dense is None else one_grid / dense - 1,
        "gram_over_svd_minus_1": gram_value / upper - 1,
    }


def _model_layers(name: str) -> list[tuple[str, np.ndarray, tuple[int, int], Any, Any]]:
    from specnorm_np import nn
    from specnorm_np.models import build_model

    model = build_model(name, (32, 32, 3), 10, seed=0).eval()
    model.forward(np.zeros((1, 32, 32, 3), dtype=np.float32))  # sets every conv's input_hw
    return [(f"{name} {index}", layer.weight.data, layer.input_hw, layer.stride, layer.padding)
            for index, layer in enumerate(model.layers) if isinstance(layer, nn.Conv2d)]


def run_bounds(*, threads: int | None = 1, tightness: bool = True,
               verbose: bool = False) -> dict[str, Any]:
    """All layers of vgg / vgg-bn at 32x32, the 64→64 5x5 kernel at 12x12, and tightness."""
    from threadpoolctl import threadpool_limits

    from specnorm_np.bench.runner import machine_info

    rng = np.random.default_rng(0)
    cases = _model_layers("vgg") + _model_layers("vgg-bn")
    cases.append(("64->64 5x5 p2", rng.standard_normal((64, 5, 5, 64)) / np.sqrt(25 * 64),
                  (12, 12), (1, 1), (2, 2)))
    results: dict[str, Any] = {"machine": machine_info(), "threads": threads, "layers": {},
                               "tightness": []}
    with threadpool_limits(limits=threads):
        for label, kernel, hw, stride, padding in cases:
            results["layers"][label] = bound_layer(kernel, tuple(hw), list(stride),
                                                   list(padding))
            if verbose:
                print(f"bench.bounds: {label} done", file=sys.stderr, flush=True)
        if tightness:
            for size in (8, 16, 32):
                for stride in (1, 2):
                    kernel = rng.standard_normal((16, 3, 3, 16)) / 12.0
                    row = bound_layer(kernel, (size, size), stride, 1, power_iterations=300)
                    results["tightness"].append({key: row[key] for key in (
                        "input_hw", "stride", "upper_over_lower_minus_1",
                        "upper_over_exact_minus_1", "one_grid_over_lower_minus_1",
                        "one_grid_over_exact_minus_1", "gram_over_svd_minus_1")})
    return results


def format_bounds(results: dict[str, Any]) -> str:
    """Plain-text tables of :func:`run_bounds`."""
    lines = [f"conv operator-norm bounds, {results['threads']} BLAS thread(s), "
             f"{results['machine']['cpu']}",
             f"{'layer':<16}{'kernel':>16}{'input':>7}{'reshaped':>10}{'power':>9}{'warm':>9}"
             f"{'circ+SVD':>10}{'1 grid':>10}{'Gram':>10}{'dense':>9}{'up/low-1':>10}{'t_pow':>8}"
             f"{'t_svd':>8}{'t_gram':>8}{'t_dense':>8}"]
    for label, row in results["layers"].items():
        dense = row["dense"]
        lines.append(
            f"{label:<16}{'x'.join(map(str, row['kernel'])):>16}"
            f"{row['input_hw'][0]:>4}x{row['input_hw'][1]:<2}{row['reshaped_sigma']:>10.4f}"
            f"{row['power']['value']:>9.4f}{row['power_warm']['value']:>9.4f}"
            f"{row['circular_svd']['value']:>10.4f}"
            f"{row['circular_svd_one_grid']['value']:>10.4f}{row['gram']['value']:>10.4f}"
            f"{'-' if dense is None else format(dense['value'], '.4f'):>9}"
            f"{row['upper_over_lower_minus_1']:>10.3%}{row['power']['seconds']:>8.2f}"
            f"{row['circular_svd']['seconds']:>8.2f}{row['gram']['seconds']:>8.2f}"
            f"{'-' if dense is None else format(dense['seconds'], '.2f'):>8}")
    if results["tightness"]:
        lines += ["", "tightness, random 16->16 3x3 kernels, padding 1 (upper/exact - 1 where "
                  "the dense matrix fits, else upper/lower - 1, an upper bound of it):"]
        for row in results["tightness"]:
            exact = row["upper_over_exact_minus_1"]
            value = row["upper_over_lower_minus_1"] if exact is None else exact
            one = row["one_grid_over_lower_minus_1"] if exact is None else \
                row["one_grid_over_exact_minus_1"]
            kind = "upper/lower" if exact is None else "upper/exact"
            lines.append(f"  {row['input_hw'][0]}x{row['input_hw'][1]} stride {row['stride']}: "
                         f"{kind} - 1 = {value:.3%} (smallest grid only: {one:.3%})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m specnorm_np.bench.bounds``."""
    parser = argparse.ArgumentParser(prog="python -m specnorm_np.bench.bounds",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="BLAS threads (default 1)")
    parser.add_argument("--out", default=None, help="also write the results as JSON here")
    parser.add_argument("--no-tightness", action="store_true")
    args = parser.parse_args(argv)
    results = run_bounds(threads=args.threads, tightness=not args.no_tightness, verbose=True)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as handle:
            json.dump(results, handle, indent=1)
    print(format_bounds(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
