"""Statistics a reader can trust: intervals over seeds, paired differences, tests and verdicts.

Everything here works on the result dicts of :func:`~specnorm_np.experiments.compare.load_results`.

* :func:`t_interval`: mean, standard deviation (ddof 1) and a Student-t 95% confidence interval
  over seeds, ``mean ± t_{0.975, n−1} · s / √n``. With n = 1 the interval is undefined (NaN).
* :func:`paired_difference`: method − vanilla over the seeds both have. The same seed gives both
  runs the same initial weights and the same batch order, so the pairing removes the seed's
  share of the variance. The interval is the t interval of the differences; the p-value is the
  *exact* two-sided sign-flip permutation test: under "no effect" each difference is as likely
  negative as positive, so all 2ⁿ sign patterns are equally likely, and p is the fraction whose
  mean is at least as far from 0 as the observed one. Its smallest possible value is 2/2ⁿ
  (0.25 for 3 seeds, 0.0625 for 5): with few seeds it cannot reach 0.05 whatever the data.
* :func:`checkpoint_correlation` (as the paper computes Fig. 2's r: all input-gradient
  checkpoints of all runs) and :func:`run_correlation` (one point per run, its final values),
  the latter with a percentile bootstrap interval over runs. Checkpoints of one run are not
  independent, so the paper's r has no valid p-value of its own; the per-run r is the one whose
  interval means something, at the price of few points.
* :func:`verdict`: "holds" when the 95% interval lies on the side the claim predicts, "does not
  hold" when it lies on the other side, "cannot tell" when it contains 0 (or is undefined).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = ["t_interval", "paired_difference", "sign_flip_p_value", "checkpoint_correlation",
           "run_correlation", "bootstrap_interval", "verdict", "metric", "METRICS",
           "regime_check", "study_statistics", "claims", "interval_rows", "write_statistics"]

CONFIDENCE = 0.95


def _finite(values: Sequence[Any]) -> np.ndarray:
    return np.asarray([float(v) for v in values if v is not None and math.isfinite(float(v))],
                      dtype=np.float64)


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> dict[str, Any]:
    """``{"mean", "std", "n", "low", "high"}`` over the finite ``values`` (Student t)."""
    from scipy.stats import t

    array = _finite(values)
    n = int(array.size)
    if n == 0:
        return {"mean": math.nan, "std": math.nan, "n": 0, "low": math.nan, "high": math.nan}
    mean = float(array.mean())
    if n == 1:
        return {"mean": mean, "std": math.nan, "n": 1, "low": math.nan, "high": math.nan}
    std = float(array.std(ddof=1))
    half = float(t.ppf(0.5 + confidence / 2, n - 1)) * std / math.sqrt(n)
    return {"mean": mean, "std": std, "n": n, "low": mean - half, "high": mean + half}


def sign_flip_p_value(differences: Sequence[float]) -> float:
    """Exact two-sided sign-flip permutation p-value of the mean of paired ``differences``.

    All 2ⁿ sign patterns are enumerated (n ≤ 20); ties count as "at least as extreme".
    """
    d = _finite(differences)
    n = int(d.size)
    if n == 0:
        return math.nan
    if n > 20:
        raise ValueError(f"sign_flip_p_value: {n} differences; exact enumeration needs <= 20")
    observed = abs(float(d.mean()))
    signs = np.array(list(itertools.product((1.0, -1.0), repeat=n)))
    means = np.abs((signs * d).mean(axis=1))
    return float(np.mean(means >= observed - 1e-12 * max(1.0, observed)))


def paired_difference(results: Sequence[dict[str, Any]], value: Callable[[dict], Any],
                      method: str, baseline: str = "vanilla", *, batch_size: int,
                      model: str | None = None) -> dict[str, Any]:
    """``value(method run) − value(baseline run)`` over seeds present in both (same batch size
    and model): the t interval of the differences, the sign-flip p-value and the seeds used."""
    def by_seed(name: str) -> dict[int, float]:
        out = {}
        for r in results:
            c = r["config"]
            if (r["status"] == "finished" and c["method"] == name
                    and int(c["batch_size"]) == batch_size
                    and (model is None or c["model"] == model)):
                v = value(r)
                if v is not None and math.isfinite(float(v)):
                    out[int(c["seed"])] = float(v)
        return out

    a, b = by_seed(method), by_seed(baseline)
    seeds = sorted(set(a) & set(b))
    differences = [a[s] - b[s] for s in seeds]
    interval = t_interval(differences)
    return {**interval, "seeds": seeds, "differences": differences,
            "p_value": sign_flip_p_value(differences), "method": method, "baseline": baseline}


def bootstrap_interval(statistic: Callable[[np.ndarray], float], data: np.ndarray, *,
                       resamples: int = 2000, seed: int = 0,
                       confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic`` over rows of ``data`` (resampled with
    replacement; resamples where the statistic is undefined are dropped)."""
    rng = np.random.default_rng(seed)
    n = data.shape[0]
    values = []
    for _ in range(resamples):
        value = statistic(data[rng.integers(0, n, size=n)])
        if math.isfinite(value):
            values.append(value)
    if len(values) < resamples // 2:
        return math.nan, math.nan
    tail = (1 - confidence) / 2
    low, high = np.quantile(values, [tail, 1 - tail])
    return float(low), float(high)


def _pearson(points: np.ndarray) -> float:
    x, y = points[:, 0], points[:, 1]
    if points.shape[0] < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan
    return float(np.corrcoef(x, y)[0, 1])


def checkpoint_correlation(results: Sequence[dict[str, Any]], split: str,
                           aggregation: str = "mean_loss") -> dict[str, Any]:
    """The paper's Fig. 2 r: gap vs input-gradient norm over every checkpoint of every run."""
    from specnorm_np.experiments.summary import gradient_points

    points = [(n, g) for _, norms, gaps in gradient_points(results, split, aggregation)
              for n, g in zip(norms, gaps)]
    array = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    return {"split": split, "aggregation": aggregation, "pearson_r": _pearson(array),
            "points": int(array.shape[0]), "kind": "all checkpoints of all runs (paper)"}


def run_correlation(results: Sequence[dict[str, Any]], split: str,
                    aggregation: str = "mean_loss", *, seed: int = 0) -> dict[str, Any]:
    """Gap vs input-gradient norm with one point per run (its last checkpoint), and a bootstrap
    95% interval over runs."""
    from specnorm_np.experiments.summary import gradient_points

    points = [(norms[-1], gaps[-1]) for _, norms, gaps in
              gradient_points(results, split, aggregation) if len(norms)]
    array = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    low, high = (bootstrap_interval(_pearson, array, seed=seed) if array.shape[0] >= 4
                 else (math.nan, math.nan))
    return {"split": split, "aggregation": aggregation, "pearson_r": _pearson(array),
            "low": low, "high": high, "points": int(array.shape[0]),
            "kind": "one point per run (final checkpoint), bootstrap over runs"}


def verdict(low: float, high: float, direction: str) -> str:
    """``direction`` "positive" or "negative": where the claim puts the quantity."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return "cannot tell"
    if direction not in ("positive", "negative"):
        raise ValueError(f"verdict: direction must be 'positive' or 'negative', got {direction!r}")
    above, below = low > 0, high < 0
    if direction == "positive":
        return "holds" if above else "does not hold" if below else "cannot tell"
    return "holds" if below else "does not hold" if above else "cannot tell"


# ---- the per-run numbers the claims are about ----------------------------------------------------
def _final(result: dict[str, Any], key: str) -> Any:
    final = result.get("final") or {}
    if key in final:
        return final[key]
    evaluated = [r for r in result.get("history", []) if r.get("test_acc") is not None]
    return evaluated[-1].get(key) if evaluated else None


def _hessian(split: str) -> Callable[[dict], Any]:
    return lambda r: ((r.get("final") or {}).get(f"hessian_{split}") or {}).get("eigenvalue")


def _input_grad(split: str) -> Callable[[dict], Any]:
    def value(r: dict[str, Any]) -> Any:
        marks = [rec["input_grad"] for rec in r.get("history", []) if rec.get("input_grad")]
        return marks[-1][split]["mean_loss"] if marks else None

    return value


def top_flatness(result: dict[str, Any], layer: str | None = None, k: int = 10) -> Any:
    """σ_k / σ_1 of one weight's spectrum (default: the largest weight): 1 is perfectly flat
    at the top, small values a spectrum dominated by its first singular value."""
    spectra = (result.get("final") or {}).get("singular_values") or {}
    if not spectra:
        return None
    name = layer or max(spectra, key=lambda n: (len(spectra[n]), n))
    values = sorted(spectra[name], reverse=True)
    return values[min(k, len(values)) - 1] / values[0] if values and values[0] > 0 else None


METRICS: dict[str, Callable[[dict], Any]] = {
    "test_acc": lambda r: _final(r, "test_acc"),
    "train_acc": lambda r: _final(r, "train_acc"),
    "gap": lambda r: _final(r, "gap"),
    "hessian_train": _hessian("train"),
    "hessian_test": _hessian("test"),
    "input_grad_train": _input_grad("train"),
    "input_grad_test": _input_grad("test"),
    "top_flatness": top_flatness,
}


def metric(name: str) -> Callable[[dict], Any]:
    """The per-run value of a named metric (see :data:`METRICS`)."""
    if name not in METRICS:
        raise ValueError(f"unknown metric {name!r}; choose one of {sorted(METRICS)}")
    return METRICS[name]


def regime_check(result: dict[str, Any], plateau_fraction: float = 0.1,
                 plateau_tolerance: float = 0.02) -> dict[str, Any]:
    """How a run relates to the paper's regime: updates, B/N, final training accuracy and
    whether the training loss had plateaued.

    Plateau: the mean running training loss over the last ``plateau_fraction`` of the epochs is
    within ``plateau_tolerance`` (relative) of the mean over the equally long stretch before it.
    """
    history = result.get("history", [])
    losses = np.array([r["running_loss"] for r in history if "running_loss" in r])
    span = max(1, int(round(plateau_fraction * losses.size)))
    plateaued = None
    if losses.size >= 2 * span:
        last, before = losses[-span:].mean(), losses[-2 * span:-span].mean()
        plateaued = bool(before - last <= plateau_tolerance * abs(before))
    summary = result.get("summary") or {}
    return {"updates": summary.get("updates"), "batch_fraction": summary.get("batch_fraction"),
            "final_train_acc": _final(result, "train_acc"), "plateaued": plateaued,
            "epochs": len(history)}


# ---- the whole study ---------------------------------------------------------------------------
def _cells(results: Sequence[dict[str, Any]]) -> dict[tuple[str, int, str], list[dict]]:
    cells: dict[tuple[str, int, str], list[dict]] = {}
    for r in results:
        if r["status"] == "finished":
            c = r["config"]
            cells.setdefault((c["model"], int(c["batch_size"]), c["method"]), []).append(r)
    return dict(sorted(cells.items()))


def study_statistics(results: Sequence[dict[str, Any]], *, seed: int = 0) -> dict[str, Any]:
    """Cells (model x batch size x method) with t intervals of every metric, paired differences
    against vanilla, both kinds of correlation, the regime check of every run, and the paper's
    four claims with their verdicts (:func:`claims`). JSON-able."""
    cells = _cells(results)
    out: dict[str, Any] = {"confidence": CONFIDENCE, "cells": [], "paired": [],
                           "correlations": [], "regime": []}
    for (model, batch, method), runs in cells.items():
        entry = {"model": model, "batch_size": batch, "method": method,
                 "seeds": sorted(int(r["config"]["seed"]) for r in runs)}
        for name, value in METRICS.items():
            entry[name] = t_interval([value(r) for r in runs])
        out["cells"].append(entry)
        if method != "vanilla":
            for name, value in METRICS.items():
                out["paired"].append({"model": model, "batch_size": batch, "metric": name,
                                      **paired_difference(results, value, method,
                                                          batch_size=batch, model=model)})
    for model in sorted({m for m, _, _ in cells}):
        subset = [r for r in results if r["config"]["model"] == model]
        for split in ("train", "test"):
            out["correlations"].append({"model": model,
                                        **checkpoint_correlation(subset, split)})
            out["correlations"].append(
                {"model": model, **run_correlation(subset, split, seed=seed)})
    smallest = {model: min(b for m, b, _ in cells if m == model) for model, _, _ in cells}
    for (model, batch, _), runs in cells.items():
        for r in runs:
            out["regime"].append({"id": r["id"], "model": model, "batch_size": batch,
                                  "large_batch": batch != smallest[model], **regime_check(r)})
    out["claims"] = claims(out)
    return out


def _paired(stats: dict[str, Any], model: str, batch: int, metric_name: str,
            method: str) -> dict[str, Any] | None:
    for p in stats["paired"]:
        if (p["model"], p["batch_size"], p["metric"], p["method"]) == (model, batch,
                                                                       metric_name, method):
            return p
    return None


def claims(stats: dict[str, Any]) -> list[dict[str, Any]]:
    """The paper's claims (a)-(d), each as statistic, interval and verdict, per model.

    (a) at the large batch, spectral has a higher test accuracy and a smaller gap than each other
        method (paired differences spectral − other; here "other" = vanilla, and the comparisons
        with decay and adversarial are listed too);
    (b) the gap correlates positively with the input-gradient norm on test data and not on
        training data (per-run correlation with its bootstrap interval);
    (c) spectral has a larger top Hessian eigenvalue (test data) than vanilla;
    (d) spectral flattens the top of the spectrum: σ₁₀/σ₁ of the largest weight is higher than
        vanilla's.
    """
    out = []
    models = sorted({c["model"] for c in stats["cells"]})
    for model in models:
        batches = sorted({c["batch_size"] for c in stats["cells"] if c["model"] == model})
        large = batches[-1]
        methods = {c["method"] for c in stats["cells"] if c["model"] == model}

        same = (stats, out, model, methods)
        _versus(*same, "test_acc", "positive", large,
                "(a) large batch: spectral has the best test accuracy")
        _versus(*same, "gap", "negative", large, "(a) large batch: spectral has the smallest gap")
        for split, direction in (("test", "positive"), ("train", "negative")):
            for c in stats["correlations"]:
                if c["model"] == model and c["split"] == split and "low" in c:
                    out.append({"claim": f"(b) the gap tracks the input-gradient norm on "
                                f"{split} data" + (" (positively)" if split == "test" else
                                                   " (the paper: mostly negatively)"),
                                "model": model, "batch_size": None,
                                "statistic": "Pearson r, one point per run",
                                "estimate": c["pearson_r"], "low": c["low"], "high": c["high"],
                                "n": c["points"], "p_value": None,
                                "verdict": verdict(c["low"], c["high"], direction)})
        for batch in batches:
            _versus(*same, "hessian_test", "positive", batch,
                    "(c) spectral has the largest top Hessian eigenvalue (test data)")
            _versus(*same, "top_flatness", "positive", batch,
                    "(d) spectral flattens the top of the spectrum (σ10/σ1 of the largest weight)")
    return out


def _difference_of(stats: dict[str, Any], model: str, batch: int, metric_name: str,
                   other: str) -> dict[str, Any] | None:
    """spectral − other, from the two paired differences against vanilla (same seeds)."""
    a = _paired(stats, model, batch, metric_name, "spectral")
    b = _paired(stats, model, batch, metric_name, other)
    if a is None or b is None:
        return None
    common = sorted(set(a["seeds"]) & set(b["seeds"]))
    da = dict(zip(a["seeds"], a["differences"]))
    db = dict(zip(b["seeds"], b["differences"]))
    differences = [da[s] - db[s] for s in common]
    return {**t_interval(differences), "seeds": common, "differences": differences,
            "p_value": sign_flip_p_value(differences)}


def _versus(stats: dict[str, Any], out: list[dict[str, Any]], model: str, methods: set[str],
            metric_name: str, direction: str, batch: int, label: str) -> None:
    """Append spectral − other (vanilla, decay, adversarial) for one metric and batch size."""
    if "spectral" not in methods:
        return
    for other in ("vanilla", "decay", "adversarial"):
        if other not in methods:
            continue
        p = (_paired(stats, model, batch, metric_name, "spectral") if other == "vanilla"
             else _difference_of(stats, model, batch, metric_name, other))
        if p is None:
            continue
        out.append({"claim": label, "model": model, "batch_size": batch,
                    "statistic": f"{metric_name}: spectral − {other} (paired)",
                    "estimate": p["mean"], "low": p["low"], "high": p["high"],
                    "n": p["n"], "p_value": p.get("p_value"),
                    "verdict": verdict(p["low"], p["high"], direction)})


def _json_safe(value: Any) -> Any:
    """NaN/Inf become None (JSON has no NaN); containers are converted recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def interval_rows(stats: dict[str, Any],
                  names: Sequence[str] = ("test_acc", "gap", "train_acc")) -> list[dict[str, Any]]:
    """One row per cell: ``"mean [low, high]"`` for each metric in ``names``, and the seeds."""
    rows = []
    for cell in stats["cells"]:
        row = {"model": cell["model"], "B": cell["batch_size"], "method": cell["method"],
               "seeds": len(cell["seeds"])}
        for name in names:
            t = cell[name]
            row[name] = ("n/a" if not math.isfinite(t["mean"]) else f"{t['mean']:.3f}"
                         if not math.isfinite(t["low"]) else
                         f"{t['mean']:.3f} [{t['low']:.3f}, {t['high']:.3f}]")
        rows.append(row)
    return rows


def write_statistics(results: Sequence[dict[str, Any]], out: Any) -> dict[str, Any]:
    """Write ``out/statistics.json`` (see :func:`study_statistics`) atomically; return it."""
    import json
    from pathlib import Path

    from specnorm_np._files import write_atomically

    stats = study_statistics(results)
    write_atomically(Path(out) / "statistics.json",
                     json.dumps(_json_safe(stats), indent=1, allow_nan=False))
    return stats
