"""The trainer's progress output: the resume line and the final-metrics bar (numbers unchanged)."""

from __future__ import annotations

import numpy as np
import pytest

from specnorm_np import metrics
from specnorm_np.experiments.datasets import DataSpec, load_splits
from specnorm_np.train import TrainConfig, Trainer

pytest.importorskip("sklearn", reason="the digits data set ships with scikit-learn")


def _data():
    return load_splits(DataSpec("digits", 100, 100, 0))


class Stop(Exception):
    pass


def test_resuming_prints_the_run_and_epoch(tmp_path, capsys):
    config = TrainConfig(method="spectral", batch_size=50, seed=0, epochs=2, model="mlp",
                         width=16, hessian=False, metric_examples=20)
    path = tmp_path / "checkpoint.npz"

    def stop(record):
        raise Stop

    with pytest.raises(Stop):
        Trainer(config, _data(), checkpoint_path=path, quiet=True).run(on_epoch=stop)
    capsys.readouterr()
    Trainer(config, _data(), checkpoint_path=path, quiet=False).run(resume=True)
    out = capsys.readouterr().out
    assert f"resuming run spectral B=50 seed 0 from epoch 1 of 2 ({path})" in out


def test_final_metrics_bar_names_the_hessian_and_leaves_the_numbers_alone(capsys):
    config = TrainConfig(method="vanilla", batch_size=50, seed=0, epochs=1, model="mlp",
                         width=16, hessian=True, hessian_examples=20, hessian_iterations=3,
                         metric_examples=20)
    trainer = Trainer(config, _data(), quiet=False)
    trainer.run()
    err = capsys.readouterr().err
    assert "vanilla B=50 Hessian (train)" in err and "Hessian (test)" in err
    assert "epoch 1: evaluating" in err
    data, index = trainer.data, trainer.metric_train[:20]
    direct = metrics.hessian_top_eigenvalue(
        trainer.model, data.x_train[index], data.y_train[index], iterations=3, seed=0,
        batch_size=config.eval_batch_size, step=metrics.HVP_STEP, freeze_pattern=True)
    assert trainer.final["hessian_train"] == direct
    assert np.isfinite(direct["eigenvalue"])
