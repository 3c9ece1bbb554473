"""Intervals over seeds, paired differences, the exact sign-flip test, correlations, verdicts."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from specnorm_np.experiments import statistics as st


def test_t_interval_matches_the_textbook_formula() -> None:
    values = [0.80, 0.84, 0.82, 0.86, 0.83]
    t = st.t_interval(values)
    mean, s = np.mean(values), np.std(values, ddof=1)
    half = 2.7764451051977987 * s / math.sqrt(5)  # t_{0.975, 4}
    assert t["n"] == 5 and t["mean"] == pytest.approx(mean)
    assert t["low"] == pytest.approx(mean - half) and t["high"] == pytest.approx(mean + half)
    one = st.t_interval([0.5, None, float("nan")])
    assert one["n"] == 1 and math.isnan(one["low"]) and one["mean"] == 0.5


def test_sign_flip_p_value_is_exact() -> None:
    # three positive differences: only the all-positive and all-negative patterns are as
    # extreme, so p = 2/8; this is the smallest p three seeds can give
    assert st.sign_flip_p_value([0.1, 0.2, 0.3]) == pytest.approx(0.25)
    assert st.sign_flip_p_value([0.1, 0.2, 0.3, 0.4, 0.5, 0.6]) == pytest.approx(2 / 64)
    # mixed signs: enumerate by hand
    d = np.array([1.0, -1.0, 2.0])
    patterns = [(a, b, c) for a in (1, -1) for b in (1, -1) for c in (1, -1)]
    expected = np.mean([abs(np.dot(p, d)) >= abs(d.sum()) for p in patterns])
    assert st.sign_flip_p_value(d) == pytest.approx(expected)


def run(method, seed, test_acc, gap=0.1, batch=64, model="mlp", grad=None, sv=None,
        hessian=None):
    history = [{"epoch": 1, "test_acc": test_acc, "train_acc": test_acc + gap, "gap": gap,
                "running_loss": 1.0,
                "input_grad": None if grad is None else {
                    "train": {"mean_loss": grad[0], "per_example": grad[0]},
                    "test": {"mean_loss": grad[1], "per_example": grad[1]}}}]
    final = {"test_acc": test_acc, "train_acc": test_acc + gap, "gap": gap}
    if sv is not None:
        final["singular_values"] = {"w": sv}
    if hessian is not None:
        final["hessian_test"] = {"eigenvalue": hessian}
    return {"id": f"{method}-B{batch}-seed{seed}", "status": "finished", "history": history,
            "final": final, "summary": {"updates": 10, "batch_fraction": 0.1},
            "config": {"method": method, "batch_size": batch, "seed": seed, "model": model}}


def test_paired_difference_pairs_by_seed_and_ignores_unpaired_runs() -> None:
    results = [run("vanilla", 0, 0.50), run("vanilla", 1, 0.60), run("vanilla", 2, 0.55),
               run("spectral", 0, 0.52), run("spectral", 1, 0.63), run("spectral", 3, 0.90)]
    p = st.paired_difference(results, st.metric("test_acc"), "spectral", batch_size=64)
    assert p["seeds"] == [0, 1] and p["differences"] == pytest.approx([0.02, 0.03])
    assert p["mean"] == pytest.approx(0.025) and p["p_value"] == pytest.approx(0.5)


def test_verdicts_follow_the_interval() -> None:
    assert st.verdict(0.01, 0.03, "positive") == "holds"
    assert st.verdict(-0.03, -0.01, "positive") == "does not hold"
    assert st.verdict(-0.01, 0.03, "positive") == "cannot tell"
    assert st.verdict(-0.03, -0.01, "negative") == "holds"
    assert st.verdict(math.nan, 0.1, "negative") == "cannot tell"
    with pytest.raises(ValueError, match="direction"):
        st.verdict(0, 1, "up")


def test_run_correlation_and_its_bootstrap_interval() -> None:
    rng = np.random.default_rng(0)
    results = []
    for seed in range(12):
        g = float(rng.uniform(0.1, 1.0))
        results.append(run("vanilla", seed, 0.5, gap=0.2 * g + 0.01 * float(rng.normal()),
                           grad=(1 - g, g)))
    test = st.run_correlation(results, "test")
    train = st.run_correlation(results, "train")
    assert test["points"] == 12 and test["pearson_r"] > 0.9 and test["low"] > 0.5
    assert train["pearson_r"] < -0.9 and train["high"] < -0.5
    assert st.verdict(test["low"], test["high"], "positive") == "holds"
    paper = st.checkpoint_correlation(results, "test")
    assert paper["points"] == 12 and paper["pearson_r"] == pytest.approx(test["pearson_r"])


def test_claims_on_a_small_study() -> None:
    results = []
    for seed in range(4):
        for method, shift in (("vanilla", 0.0), ("spectral", 0.03), ("decay", 0.01)):
            results.append(run(method, seed, 0.6 + shift + 0.001 * seed, gap=0.2 - shift,
                               batch=512, sv=[3.0, 2.0 + 10 * shift] + [1.0] * 9,
                               hessian=1.0 + 10 * shift))
            results.append(run(method, seed, 0.7 + 0.001 * seed, batch=64))
    stats = st.study_statistics(results)
    claims = {(c["claim"][:3], c["statistic"], c["batch_size"]): c for c in stats["claims"]}
    a = claims[("(a)", "test_acc: spectral − vanilla (paired)", 512)]
    assert a["estimate"] == pytest.approx(0.03) and a["verdict"] == "holds" and a["n"] == 4
    assert a["p_value"] == pytest.approx(2 / 16)
    gap = claims[("(a)", "gap: spectral − decay (paired)", 512)]
    assert gap["estimate"] == pytest.approx(-0.02) and gap["verdict"] == "holds"
    c = claims[("(c)", "hessian_test: spectral − vanilla (paired)", 512)]
    assert c["verdict"] == "holds"
    d = claims[("(d)", "top_flatness: spectral − vanilla (paired)", 512)]
    assert d["estimate"] == pytest.approx(0.0) and d["verdict"] == "cannot tell"  # σ10 = 1
    # JSON-safe (no NaN) and the regime of every run is reported
    text = json.dumps(st._json_safe(stats), allow_nan=False)
    assert '"large_batch": true' in text
    rows = st.interval_rows(stats)
    assert rows[0]["test_acc"].count("[") == 1


def test_regime_check_detects_a_plateau() -> None:
    r = run("vanilla", 0, 0.5)
    r["history"] = [{"epoch": e, "running_loss": 2.0 / e} for e in range(1, 21)]
    assert st.regime_check(r)["plateaued"] is False  # still falling by > 2% per stretch
    r["history"] = [{"epoch": e, "running_loss": 1.0 + 0.001 * (e % 2)} for e in range(1, 21)]
    assert st.regime_check(r)["plateaued"] is True
