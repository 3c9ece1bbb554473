"""Time the reference networks against PyTorch and collect the results in one dictionary.

How the timing is done (so that the comparison is fair):

* both libraries get the same number of threads: ``torch.set_num_threads`` for PyTorch and
  ``threadpoolctl.threadpool_limits`` for NumPy's BLAS (which also caps PyTorch's OpenMP);
* the NumPy and PyTorch steps alternate, A B A B ..., so that a slow patch of the machine (other
  processes, frequency changes) hits both sides alike;
* the first ``warmup`` steps are discarded (buffer allocation, caches, lazy initialisation);
  the medians of the next ``steps`` steps are reported;
* the PyTorch model starts from the NumPy model's weights, so both do the same arithmetic.

Peak memory is measured afterwards, one fresh process per network, backend and batch size
(:mod:`specnorm_np.bench.memory`).
"""

from __future__ import annotations

import gc
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from specnorm_np.bench import memory
from specnorm_np.bench.networks import (
    DESCRIPTIONS,
    NETWORKS,
    copy_weights_to_torch,
    count_parameters,
)
from specnorm_np.bench.steps import NumpyTrainer, TorchTrainer, make_batch

__all__ = ["run", "TARGETS", "MEMORY_TARGET_BYTES", "torch_available"]

#: network -> (training-step ratio, inference ratio) targets, NumPy time / PyTorch time
TARGETS = {"mlp": (1.25, 1.0), "cnn": (1.5, 1.6), "cnn_bn": (1.9, 1.9)}
#: The spectral regularizer's target: its share of a NumPy step must not exceed PyTorch's share
#: for the same regularizer in the same run (no verdict without PyTorch).
#: At least this many with/without pairs measure each share (a few % of a step, and noisy).
MIN_SHARE_PAIRS = 30
#: peak resident memory allowed for the CNN (b) at batch 128
MEMORY_TARGET_BYTES = {"cnn": int(0.75 * 1024**3)}


def torch_available() -> bool:
    """True when PyTorch imports."""
    try:
        import torch  # noqa: F401
    except Exception:
        return False
    return True


def _default_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def machine_info() -> dict[str, Any]:
    """Where the numbers come from: CPU, OS, library versions and BLAS."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
    }
    from threadpoolctl import threadpool_info

    blas = [lib for lib in threadpool_info() if lib.get("user_api") == "blas"]
    info["blas"] = ", ".join(
        f"{lib.get('internal_api')} {lib.get('version')}"
        + (f" ({lib['architecture']} kernels)" if lib.get("architecture") else "")
        for lib in blas
    )
    info["openblas_coretype"] = os.environ.get("OPENBLAS_CORETYPE")
    hint = _openblas_hint(blas)
    if hint:
        info["hint"] = hint
    if torch_available():
        import torch

        info["torch"] = torch.__version__
    return info


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _openblas_hint(blas: list[dict[str, Any]]) -> str | None:
    """A hint when OpenBLAS runs AVX2 kernels on a CPU that has AVX-512.

    OpenBLAS picks its kernels when it loads, from the CPU model or from the environment
    variable ``OPENBLAS_CORETYPE``. On this project's machine (AMD EPYC with AVX-512) the
    environment sets ``OPENBLAS_CORETYPE=Haswell`` (AVX2 kernels); with ``SkylakeX`` kernels the
    float32 matrix products of the benchmark ran 1.75x faster.
    """
    slow = {"haswell", "zen", "sandybridge"}
    in_use = [str(lib.get("architecture", "")) for lib in blas
              if lib.get("internal_api") == "openblas"]
    if "avx512f" not in _cpu_flags() or not any(a.lower() in slow for a in in_use):
        return None
    forced = os.environ.get("OPENBLAS_CORETYPE")
    cause = (f"OPENBLAS_CORETYPE={forced} in the environment selects" if forced
             else "OpenBLAS chose")
    return (f"this CPU has AVX-512 but {cause} OpenBLAS's AVX2 kernels ({', '.join(in_use)}); "
            "OPENBLAS_CORETYPE=SkylakeX (set before Python starts) gives faster matrix "
            "products, in training as well as here")


def _interleaved(
    steps: dict[str, Callable[[], dict[str, float]]], warmup: int, repeats: int
) -> dict[str, dict[str, float]]:
    """Call each function in turn (A B A B ...); median seconds of every phase after warm-up."""
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in steps}
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()  # a collection in the middle of one side's step would be charged to it alone
    try:
        for index in range(warmup + repeats):
            for name, step in steps.items():
                phases = step()
                if index >= warmup:
                    samples[name].append(phases)
    finally:
        if was_enabled:
            gc.enable()
    return {
        name: {phase: statistics.median(s[phase] for s in runs) for phase in runs[0]}
        for name, runs in samples.items()
    }


def _paired_share(
    with_it: Callable[[], Any], without_it: Callable[[], Any], warmup: int, pairs: int
) -> dict[str, float]:
    """The regularizer's share of a step by ablation, from back-to-back pairs of steps.

    Each pair runs the step with the regularizer and the same trainer's step without it
    (alternating which goes first), so a slow patch of the machine hits both halves of a pair.
    share = median over pairs of (t_with − t_without), divided by the median t_with.
    """
    differences, totals = [], []
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        for index in range(warmup + pairs):
            order = (with_it, without_it) if index % 2 == 0 else (without_it, with_it)
            seconds = {}
            for function in order:
                start = time.perf_counter()
                function()
                seconds[function] = time.perf_counter() - start
            if index >= warmup:
                differences.append(seconds[with_it] - seconds[without_it])
                totals.append(seconds[with_it])
    finally:
        if was_enabled:
            gc.enable()
    median_with = statistics.median(totals)
    median_difference = statistics.median(differences)
    low, high = _median_interval(differences)
    return {"share": median_difference / median_with, "pairs": pairs,
            "share_interval": [low / median_with, high / median_with],
            "median_seconds_with": median_with,
            "median_difference_seconds": median_difference}


def _median_interval(values: Sequence[float], z: float = 1.96) -> tuple[float, float]:
    """Distribution-free 95% interval of a median: the order statistics d_(k), d_(n+1-k).

    The interval misses the true median only when fewer than k of the n values lie below it
    or fewer than k above; that count is Binomial(n, 1/2). k = floor((n + 1 − z·√n)/2) (the
    normal approximation with a continuity correction) keeps the exact coverage
    P(k <= Bin(n, 1/2) <= n − k) at or above 95% for every n from 6 to 400 (checked), 95.7% at
    the n = 30 pairs used here. Below 6 values it is the full range, whose coverage is lower.
    The share's denominator (the median step) is treated as exact.
    """
    ordered = sorted(values)
    n = len(ordered)
    k = max(1, math.floor((n + 1 - z * math.sqrt(n)) / 2))
    return ordered[k - 1], ordered[n - k]


def _timed(function: Callable[[], Any]) -> Callable[[], dict[str, float]]:
    def wrapper() -> dict[str, float]:
        start = time.perf_counter()
        function()
        return {"total": time.perf_counter() - start}

    return wrapper


def _summary(
    medians: dict[str, dict[str, float]], batch: int, target: float
) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for side, phases in medians.items():
        result[side] = {
            "median_seconds": phases["total"],
            "images_per_second": batch / phases["total"],
            "phases_seconds": phases,
        }
    if "torch" in medians:
        ratio = medians["numpy"]["total"] / medians["torch"]["total"]
        result.update(ratio=ratio, target=target, met=bool(ratio <= target))
    return result


def _time_network(
    name: str, batch: int, threads: int, warmup: int, steps: int, compare: bool,
    regularize: bool, seed: int,
) -> dict[str, Any]:
    x, y = make_batch(batch, seed)
    ours = NumpyTrainer(name, seed=seed, regularize=regularize)
    regularize = ours.regularizer is not None  # skip it on both sides while the library lacks it
    train_steps: dict[str, Callable[[], dict[str, float]]] = {
        "numpy": lambda: ours.train_step(x, y)
    }
    infer_steps = {"numpy": _timed(lambda: ours.infer(x))}
    result: dict[str, Any] = {
        "description": DESCRIPTIONS[name],
        "parameters": {"numpy": count_parameters(ours.model)},
    }
    if compare:
        theirs = TorchTrainer(name, seed=seed, regularize=regularize)
        copy_weights_to_torch(name, ours.model, theirs.model)
        tx, ty = theirs.to_input(x, y)
        train_steps["torch"] = lambda: theirs.train_step(tx, ty)
        infer_steps["torch"] = _timed(lambda: theirs.infer(tx))
        result["parameters"]["torch"] = count_parameters(theirs.model)
    share_pairs: dict[str, tuple[Callable[[], Any], Callable[[], Any]]] = {}
    if regularize:
        # The regularizer's share is measured by ablation: the same trainer (the same arrays in
        # the same memory) stepping with and without it. (Timing its own calls would miss its
        # cache effects on the rest of the step; a second trainer for the steps without it
        # would add the difference between two placements of the arrays in memory, measured
        # at up to 0.45 ms, about 2% of an MLP step, between two identical trainers.)
        share_pairs["numpy"] = (lambda: ours.train_step(x, y),
                                lambda: ours.train_step(x, y, regularize=False))
        if compare:
            share_pairs["torch"] = (lambda: theirs.train_step(tx, ty),
                                    lambda: theirs.train_step(tx, ty, regularize=False))
    # One untimed call of everything first: libraries loaded lazily (SciPy's BLAS, used by the
    # regularizer, is a second OpenBLAS with its own thread pool) exist only after it, and
    # threadpool_limits caps only the libraries already loaded when it is entered.
    for step in (*train_steps.values(), *infer_steps.values(),
                 *(f for pair in share_pairs.values() for f in pair)):
        step()
    train_target, infer_target = TARGETS[name]
    with threadpool_limits(limits=threads):
        train_medians = _interleaved(train_steps, warmup, steps)
        infer_medians = _interleaved(infer_steps, warmup, steps)
        shares = {side: _paired_share(*pair, warmup, max(steps, MIN_SHARE_PAIRS))
                  for side, pair in share_pairs.items()}
    train = _summary(train_medians, batch, train_target)
    if regularize:
        numpy_phases = train["numpy"]["phases_seconds"]
        train["regularizer_share"] = shares["numpy"]["share"]
        train["regularizer_share_phase"] = numpy_phases["regularizer"] / numpy_phases["total"]
        train["regularizer_ablation"] = shares
        if "torch" in shares:
            train["torch_regularizer_share"] = shares["torch"]["share"]
            train["regularizer_met"] = bool(shares["numpy"]["share"] <= shares["torch"]["share"])
        train["regularizer_target"] = "numpy share <= torch share (same run)"
    train["final_loss"] = {"numpy": ours.last_loss}
    if compare:
        train["final_loss"]["torch"] = theirs.last_loss
    result["train"] = train
    result["inference"] = _summary(infer_medians, batch, infer_target)
    return result


def _measure_memory(
    name: str, batches: Sequence[int], threads: int, backends: Sequence[str]
) -> dict[str, Any]:
    report: dict[str, Any] = {}
    for backend in backends:
        points = [memory.measure(name, backend, b, threads) for b in batches]
        entry: dict[str, Any] = {"points": points}
        if len(points) >= 2:
            # least-squares line through (batch, peak): the per-image cost and the fixed cost
            slope, intercept = np.polyfit(
                [p["batch"] for p in points], [p["peak_bytes"] for p in points], 1
            )
            entry.update(bytes_per_image=float(slope), fixed_bytes=float(intercept))
        report[backend] = entry
    limit = MEMORY_TARGET_BYTES.get(name)
    at_128 = [p for p in report["numpy"]["points"] if p["batch"] == 128]
    if limit is not None and at_128:
        report["target_bytes"] = limit
        report["met"] = bool(at_128[0]["peak_bytes"] <= limit)
    return report


def run(
    batch: int = 128,
    threads: int | None = None,
    nets: Sequence[str] = ("mlp", "cnn", "cnn_bn"),
    steps: int = 10,
    warmup: int = 3,
    *,
    compare_torch: bool | None = None,
    memory_batches: Sequence[int] | None = (),
    regularize: bool = True,
    seed: int = 0,
    verbose: bool = False,
) -> dict[str, Any]:
    """Benchmark the reference networks; returns everything the table and ``--json`` show.

    Parameters
    ----------
    batch : int
        Images per step (inputs (batch, 32, 32, 3) float32).
    threads : int or None
        Threads for both libraries; default: the CPUs this process may use.
    nets : sequence of str
        Any of ``"mlp"``, ``"cnn"``, ``"cnn_bn"``.
    steps, warmup : int
        Timed steps (medians are quoted) after ``warmup`` discarded ones.
    compare_torch : bool or None
        Time PyTorch alongside; None means "if it is installed".
    memory_batches : sequence of int or None
        Batch sizes at which peak memory is measured, one subprocess each; ``()`` skips the
        memory measurement, None means ``(batch, 2 * batch)``.
    regularize : bool
        Include the spectral norm regularizer in the training step.
    seed : int
        Seeds weights and data.
    verbose : bool
        Print progress to stderr.
    """
    unknown = [n for n in nets if n not in NETWORKS]
    if unknown or not nets:
        raise ValueError(f"bench.run: nets must be among {sorted(NETWORKS)}, got {list(nets)}")
    if batch < 1 or steps < 1 or warmup < 0:
        raise ValueError(
            f"bench.run: need batch >= 1, steps >= 1, warmup >= 0; got {batch}, {steps}, {warmup}"
        )
    threads = threads or _default_threads()
    if compare_torch is None:
        compare_torch = torch_available()
    if memory_batches is None:
        memory_batches = (batch, 2 * batch)
    old_torch_threads = None
    if compare_torch:
        import torch

        old_torch_threads = torch.get_num_threads()
        torch.set_num_threads(threads)
    results: dict[str, Any] = {
        "machine": machine_info(),
        "settings": {"batch": batch, "threads": threads, "steps": steps, "warmup": warmup,
                     "dtype": "float32", "torch": compare_torch, "regularize": regularize,
                     "memory_batches": list(memory_batches)},
        "networks": {},
    }
    try:
        for name in nets:
            if verbose:
                print(f"bench: timing {name} ...", file=sys.stderr, flush=True)
            results["networks"][name] = _time_network(
                name, batch, threads, warmup, steps, compare_torch, regularize, seed
            )
    finally:
        if old_torch_threads is not None:
            torch.set_num_threads(old_torch_threads)
    if memory_batches:
        backends = ("numpy", "torch") if compare_torch else ("numpy",)
        for name in nets:
            if verbose:
                print(f"bench: memory of {name} ...", file=sys.stderr, flush=True)
            results["networks"][name]["memory"] = _measure_memory(
                name, memory_batches, threads, backends
            )
    return results

