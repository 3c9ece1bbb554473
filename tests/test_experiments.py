"""The comparison grid: parallel runs give identical results (joblib and Dask), finished runs are
skipped, and the Table 1 / Fig. 2 numbers are computed as the paper defines them."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from specnorm_np.experiments import summary
from specnorm_np.experiments.compare import (
    build_configs,
    load_results,
    run_grid,
    run_id,
    run_one,
    trainer_identity,
)
from specnorm_np.experiments.datasets import DataSpec, load_splits
from specnorm_np.train import Trainer

pytest.importorskip("sklearn", reason="the digits data set ships with scikit-learn")

DIGITS = DataSpec("digits", train_size=200, test_size=None)


def tiny_configs(methods=("vanilla", "spectral"), seeds=(0,)):
    return build_configs(list(methods), [20, 50], list(seeds), lr=0.05, epochs=2, model="vgg",
                         width=4, metric_examples=40, hessian_examples=20, hessian_iterations=3)


def histories(out: Path) -> dict[str, list[dict]]:
    return {r["id"]: [{k: v for k, v in h.items() if k != "seconds"} for h in r["history"]]
            for r in load_results(out)}


def test_build_configs_scales_lr_and_epochs_for_the_large_batch() -> None:
    configs = build_configs(["vanilla", "decay"], [512, 64], [0, 1], lr=0.01, epochs=10,
                            large_batch_epochs=20)
    assert len(configs) == 8
    small = [c for c in configs if c.batch_size == 64]
    large = [c for c in configs if c.batch_size == 512]
    assert {(c.lr, c.epochs) for c in small} == {(0.01, 10)}
    assert {(round(c.lr, 12), c.epochs) for c in large} == {(0.1, 20)}
    with pytest.raises(ValueError, match="unknown method"):
        build_configs(["dropout"], [64], [0])


def test_digits_subset_is_stratified_and_normalized() -> None:
    data = load_splits(DIGITS)
    assert data.x_train.shape == (200, 8, 8, 1) and data.x_train.dtype == np.float32
    assert np.bincount(data.y_train).tolist() == [20] * 10
    flat = data.x_train.reshape(200, -1)
    np.testing.assert_allclose(flat.mean(1), 0, atol=1e-5)
    np.testing.assert_allclose(flat.std(1), 1, rtol=1e-4)  # global contrast normalization


def test_joblib_workers_give_the_same_results_as_one_process(tmp_path) -> None:
    configs = tiny_configs()
    run_grid(configs, DIGITS, tmp_path / "serial", jobs=1, quiet=True)
    run_grid(configs, DIGITS, tmp_path / "parallel", jobs=2, quiet=True)
    serial, parallel = histories(tmp_path / "serial"), histories(tmp_path / "parallel")
    assert sorted(serial) == sorted(r_id for r_id in parallel) and len(serial) == 4
    assert serial == parallel


def test_dask_backend_gives_the_same_results(tmp_path) -> None:
    distributed = pytest.importorskip("distributed")
    configs = tiny_configs(methods=("decay",))
    run_grid(configs, DIGITS, tmp_path / "serial", jobs=1, quiet=True)
    with distributed.Client(processes=False, n_workers=1, threads_per_worker=1,
                            dashboard_address=None):
        run_grid(configs, DIGITS, tmp_path / "dask", jobs=2, backend="dask", quiet=True)
    assert histories(tmp_path / "serial") == histories(tmp_path / "dask")


def test_finished_runs_are_skipped_and_interrupted_ones_resumed(tmp_path) -> None:
    config = tiny_configs(methods=("vanilla",))[0]
    trainer = Trainer(config, load_splits(DIGITS), quiet=True,
                      checkpoint_path=tmp_path / "runs" / run_id(config) / "checkpoint.npz",
                      identity=trainer_identity(DIGITS, threads=1))

    def interrupt(record: dict) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        trainer.run(on_epoch=interrupt)
    first = run_one(config, DIGITS, tmp_path)
    history = load_results(tmp_path)[0]["history"]
    assert history[0]["seconds"] == trainer.history[0]["seconds"]  # epoch 1 came from the file
    assert len(history) == 2
    result_file = tmp_path / "runs" / first["id"] / "result.json"
    stamp = os.stat(result_file).st_mtime_ns
    again = run_one(config, DIGITS, tmp_path)
    assert again["skipped"] and os.stat(result_file).st_mtime_ns == stamp
    assert not (tmp_path / "runs" / first["id"] / "checkpoint.npz").exists()
    lines = (tmp_path / "runs" / first["id"] / "history.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
    # a changed configuration is not mistaken for the finished run: it is refused, the
    # finished files stay as they were, and --overwrite redoes the run
    changed = tiny_configs(methods=("vanilla",))[0]
    changed.lr = 0.01
    refused = run_one(changed, DIGITS, tmp_path)
    assert refused["status"] == "refused" and "config.lr: 0.05 in the file vs 0.01 now" in \
        refused["message"] and "--overwrite" in refused["message"]
    assert os.stat(result_file).st_mtime_ns == stamp
    redone = run_one(changed, DIGITS, tmp_path, overwrite=True)
    assert redone["status"] == "finished" and not redone["skipped"]
    assert json.loads(result_file.read_text())["config"]["lr"] == 0.01


def fake_result(method: str, batch: int, seed: int, test: list[float], train: list[float],
                grads: list[float] | None = None) -> dict:
    history = []
    for epoch, (a, b) in enumerate(zip(train, test), 1):
        record = {"epoch": epoch, "train_acc": a, "test_acc": b, "gap": a - b,
                  "sigma": {"w": 1.0 + seed}, "input_grad": None}
        if grads is not None:
            g = grads[epoch - 1]
            record["input_grad"] = {"train": {"mean_loss": g, "per_example": g},
                                    "test": {"mean_loss": 2 * g, "per_example": 2 * g}}
        history.append(record)
    return {"id": f"{method}-B{batch}-seed{seed}", "status": "finished", "history": history,
            "config": {"method": method, "batch_size": batch, "seed": seed, "model": "vgg",
                       "epochs": len(history)},
            "final": {"hessian_train": {"eigenvalue": 2.0 + seed}}}


def test_table_one_means_stds_alpha_and_gap_alpha() -> None:
    results = [
        fake_result("vanilla", 64, 0, test=[0.50, 0.70, 0.72], train=[0.6, 0.90, 0.99]),
        fake_result("vanilla", 64, 1, test=[0.50, 0.74, 0.76], train=[0.6, 0.90, 0.97]),
        fake_result("spectral", 64, 0, test=[0.40, 0.71, 0.80], train=[0.5, 0.75, 0.90]),
        fake_result("spectral", 64, 1, test=[0.40, 0.71, 0.80], train=[0.5, 0.75, 0.90]),
    ]
    rows = {r["method"]: r for r in summary.long_rows(results)}
    # alpha: every run's best test accuracy (0.72, 0.76, 0.80, 0.80) exceeds 0.71
    assert rows["vanilla"]["alpha"] == pytest.approx(0.71)
    # vanilla seed 0: only epoch 3 (0.72) is above 0.71 -> 0.27; seed 1: epochs 2, 3 -> 0.16
    assert rows["vanilla"]["gap_alpha_mean"] == pytest.approx((0.27 + 0.16) / 2)
    assert rows["vanilla"]["gap_alpha_std"] == pytest.approx(np.std([0.27, 0.16], ddof=1))
    assert rows["vanilla"]["test_acc_mean"] == pytest.approx(0.74)
    assert rows["spectral"]["gap_alpha_mean"] == pytest.approx(0.10)
    assert rows["spectral"]["hessian_train_mean"] == pytest.approx(2.5)
    table = summary.table_rows(results)
    assert table[0]["acc vanilla"] == "0.740 ± 0.028" and table[0]["alpha"] == "0.71"
    assert list(table[0])[:4] == ["model", "B", "epochs", "seeds"]


def test_correlations_use_every_checkpoint_of_every_run() -> None:
    # gaps 0.1, 0.2, 0.3 and norms exactly linear in them: r = 1 on both splits
    results = [fake_result("vanilla", 64, s, test=[0.5, 0.5, 0.5], train=[0.6, 0.7, 0.8],
                           grads=[1.0 + s, 2.0 + s, 3.0 + s]) for s in (0,)]
    results.append(fake_result("decay", 64, 0, test=[0.5, 0.5], train=[0.9, 0.55],
                               grads=[0.5, 5.0]))
    rows = {(r["split"], r["aggregation"]): r for r in summary.correlations(results)}
    x = np.array([1.0, 2.0, 3.0, 0.5, 5.0])
    y = np.array([0.1, 0.2, 0.3, 0.4, 0.05])
    expected = np.corrcoef(x, y)[0, 1]
    assert rows[("train", "mean_loss")]["pearson_r"] == pytest.approx(expected)
    assert rows[("test", "per_example")]["pearson_r"] == pytest.approx(expected)
    assert rows[("train", "mean_loss")]["points"] == 5


@pytest.mark.skipif(not os.environ.get("SPECNORM_DATA"), reason="SPECNORM_DATA not set: the "
                    "real CIFAR-10 copy is needed")
def test_cifar10_subset_keeps_the_full_test_set() -> None:
    data = load_splits(DataSpec("cifar10", train_size=100, test_size=None))
    assert data.x_train.shape == (100, 32, 32, 3) and data.x_test.shape == (10000, 32, 32, 3)
    assert np.bincount(data.y_train).tolist() == [10] * 10
