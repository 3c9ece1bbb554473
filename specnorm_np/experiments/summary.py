"""Tables from saved runs: the paper's Table 1 (mean ± std over seeds) and Fig. 2's correlations.

Definitions (as in the paper, Section 4):

* test accuracy: at the end of training (last epoch);
* gap_α: the minimum over epochs whose test accuracy exceeds α of (train acc − test acc), with
  α per batch size chosen as the largest multiple of 0.01 that every run's best test accuracy
  exceeds (:func:`specnorm_np.metrics.choose_alpha`), unless given;
* correlations: Pearson r (``scipy.stats.pearsonr``) between the generalization gap and the
  input-gradient norm over all input-gradient checkpoints of all runs, per data split and per
  aggregation (see :mod:`specnorm_np.metrics`).
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from specnorm_np.metrics import choose_alpha, gap_at_threshold
from specnorm_np.train import METHODS

__all__ = ["method_order", "group_runs", "alphas_by_batch", "table_rows", "long_rows",
           "gradient_points", "correlations", "write_summary"]


def method_order(methods: Sequence[str]) -> list[str]:
    """The methods present, in the paper's order (extra methods last)."""
    return [m for m in METHODS if m in set(methods)]


def group_runs(results: Sequence[dict[str, Any]]) -> dict[tuple[str, int], list[dict[str, Any]]]:
    """Finished runs keyed by (method, batch size), sorted by seed."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for r in results:
        if r["status"] == "finished" and evaluated(r):
            groups[(r["config"]["method"], int(r["config"]["batch_size"]))].append(r)
    return {k: sorted(v, key=lambda r: r["config"]["seed"]) for k, v in sorted(groups.items())}


def evaluated(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The history records of the evaluated epochs (``--eval-every`` skips the others)."""
    return [record for record in result["history"] if record.get("test_acc") is not None]


def _curve(result: dict[str, Any], key: str) -> np.ndarray:
    return np.array([record[key] for record in evaluated(result)], dtype=np.float64)


def alphas_by_batch(groups: dict[tuple[str, int], list[dict[str, Any]]],
                    alpha: float | None = None) -> dict[int, float]:
    """α per batch size (given, or chosen so that every run's best test accuracy exceeds it)."""
    best: dict[int, list[float]] = defaultdict(list)
    for (_, batch), runs in groups.items():
        best[batch] += [float(_curve(r, "test_acc").max()) for r in runs]
    return {b: (alpha if alpha is not None else choose_alpha(v)) for b, v in sorted(best.items())}


def _stats(values: Sequence[float]) -> tuple[float, float, int]:
    array = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if array.size == 0:
        return float("nan"), float("nan"), 0
    std = float(array.std(ddof=1)) if array.size > 1 else float("nan")
    return float(array.mean()), std, int(array.size)


def _format(mean: float, std: float) -> str:
    if not math.isfinite(mean):
        return "n/a"
    return f"{mean:.3f}" if not math.isfinite(std) else f"{mean:.3f} ± {std:.3f}"


def _final_input_grad(result: dict[str, Any], split: str, aggregation: str) -> float | None:
    marks = [r["input_grad"] for r in result["history"] if r.get("input_grad")]
    return marks[-1][split][aggregation] if marks else None


def _per_run(result: dict[str, Any], alpha: float) -> dict[str, float | None]:
    last = evaluated(result)[-1]
    final = result.get("final") or {}
    # the final numbers on the full sets (runs from before they were recorded: the last epoch's)
    ends = final if "test_acc" in final else last
    return {
        "test_acc": ends["test_acc"], "train_acc": ends["train_acc"], "final_gap": ends["gap"],
        "best_test_acc": float(_curve(result, "test_acc").max()),
        "gap_alpha": gap_at_threshold(_curve(result, "train_acc"), _curve(result, "test_acc"),
                                      alpha),
        "hessian_train": (final.get("hessian_train") or {}).get("eigenvalue"),
        "hessian_test": (final.get("hessian_test") or {}).get("eigenvalue"),
        "input_grad_train_mean_loss": _final_input_grad(result, "train", "mean_loss"),
        "input_grad_test_mean_loss": _final_input_grad(result, "test", "mean_loss"),
        "input_grad_train_per_example": _final_input_grad(result, "train", "per_example"),
        "input_grad_test_per_example": _final_input_grad(result, "test", "per_example"),
        "largest_sigma": max(last["sigma"].values()) if last.get("sigma") else None,
    }


def long_rows(results: Sequence[dict[str, Any]], alpha: float | None = None
              ) -> list[dict[str, Any]]:
    """One row per (method, batch size): mean and std over seeds of every summary number."""
    groups = group_runs(results)
    alphas = alphas_by_batch(groups, alpha)
    rows = []
    for (method, batch), runs in groups.items():
        per_run = [_per_run(r, alphas[batch]) for r in runs]
        row: dict[str, Any] = {"model": runs[0]["config"]["model"], "method": method,
                               "batch_size": batch, "epochs": runs[0]["config"]["epochs"],
                               "seeds": len(runs), "alpha": alphas[batch]}
        for key in per_run[0]:
            mean, std, _ = _stats([p[key] for p in per_run])
            row[f"{key}_mean"], row[f"{key}_std"] = mean, std
        rows.append(row)
    return rows


def table_rows(results: Sequence[dict[str, Any]], alpha: float | None = None
               ) -> list[dict[str, str]]:
    """Rows shaped like the paper's Table 1: one per batch size, accuracy and gap_α per method."""
    rows = long_rows(results, alpha)
    methods = method_order([r["method"] for r in rows])
    table = []
    for batch in sorted({r["batch_size"] for r in rows}):
        cells = {r["method"]: r for r in rows if r["batch_size"] == batch}
        any_row = next(iter(cells.values()))
        line = {"model": any_row["model"], "B": str(batch), "epochs": str(any_row["epochs"]),
                "seeds": str(min(r["seeds"] for r in cells.values()))}
        for m in methods:
            c = cells.get(m)
            line[f"acc {m}"] = _format(c["test_acc_mean"], c["test_acc_std"]) if c else "n/a"
        line["alpha"] = f"{any_row['alpha']:.2f}"
        for m in methods:
            c = cells.get(m)
            line[f"gap {m}"] = _format(c["gap_alpha_mean"], c["gap_alpha_std"]) if c else "n/a"
        table.append(line)
    return table


def gradient_points(results: Sequence[dict[str, Any]], split: str, aggregation: str
                    ) -> list[tuple[dict[str, Any], np.ndarray, np.ndarray]]:
    """Per finished run: (result, input-gradient norms, gaps) at its input-gradient checkpoints."""
    points = []
    for runs in group_runs(results).values():
        for r in runs:
            marks = [rec for rec in evaluated(r) if rec.get("input_grad")]
            norms = np.array([rec["input_grad"][split][aggregation] for rec in marks])
            gaps = np.array([rec["gap"] for rec in marks])
            points.append((r, norms, gaps))
    return points


def correlations(results: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pearson r of gap vs input-gradient norm, for each split and aggregation."""
    from scipy.stats import pearsonr

    rows = []
    for aggregation in ("mean_loss", "per_example"):
        for split in ("train", "test"):
            pts = gradient_points(results, split, aggregation)
            x = np.concatenate([p[1] for p in pts]) if pts else np.empty(0)
            y = np.concatenate([p[2] for p in pts]) if pts else np.empty(0)
            r = p = float("nan")
            if x.size >= 3 and np.ptp(x) > 0 and np.ptp(y) > 0:
                stat = pearsonr(x, y)
                r, p = float(stat.statistic), float(stat.pvalue)
            rows.append({"split": split, "aggregation": aggregation, "pearson_r": r,
                         "p_value": p, "points": int(x.size)})
    return rows


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        if not rows:
            return
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v)
                             for k, v in row.items()})


def write_summary(results: Sequence[dict[str, Any]], out: str | Path,
                  alpha: float | None = None) -> list[dict[str, str]]:
    """Write summary.csv (Table 1 shape, mean ± std), summary_long.csv, correlations.csv and
    statistics.json (intervals, paired tests and the claims' verdicts, see
    :mod:`~specnorm_np.experiments.statistics`); return the Table 1 rows."""
    from specnorm_np.experiments.statistics import write_statistics

    out = Path(out)
    table = table_rows(results, alpha)
    _write_csv(out / "summary.csv", table)
    _write_csv(out / "summary_long.csv", long_rows(results, alpha))
    _write_csv(out / "correlations.csv", correlations(results))
    write_statistics(results, out)
    return table


def format_table(table: list[dict[str, str]]) -> str:
    """A plain-text rendering of :func:`table_rows` for the console."""
    if not table:
        return "(no finished runs)"
    keys = list(table[0])
    widths = {k: max(len(k), *(len(row[k]) for row in table)) for k in keys}
    lines = ["  ".join(k.ljust(widths[k]) for k in keys)]
    lines += ["  ".join(row[k].ljust(widths[k]) for k in keys) for row in table]
    return "\n".join(lines)
