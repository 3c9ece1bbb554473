"""The trainer: determinism, resume equivalence, NaN stop, checkpoints, every method runs."""

from __future__ import annotations

import os

import numpy as np
import pytest

from specnorm_np import metrics
from specnorm_np.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from specnorm_np.models import build_model
from specnorm_np.train import METHODS, DataSplits, TrainConfig, Trainer, TrainingDiverged, train


def tiny_data(seed: int = 0, n_train: int = 96, n_test: int = 60) -> DataSplits:
    """8x8x1 images whose class is decided by a fixed random linear rule (learnable)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n_train + n_test, 8, 8, 1)).astype(np.float32)
    rule = rng.standard_normal((64, 3))
    y = (x.reshape(len(x), -1) @ rule).argmax(1)
    return DataSplits(x[:n_train], y[:n_train], x[n_train:], y[n_train:], "tiny", 3)


def config(**changes) -> TrainConfig:
    base = dict(model="vgg-bn", width=4, epochs=3, batch_size=32, lr=0.05, metric_examples=30,
                hessian_examples=20, hessian_iterations=3, input_grad_checkpoints=2)
    base.update(changes)
    return TrainConfig(**base)


def without_timing(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in record.items() if k != "seconds"} for record in history]


def params_of(result) -> list[np.ndarray]:
    return [p.data.copy() for p in result.model.parameters()]


def test_same_seed_same_run_and_another_seed_differs() -> None:
    data = tiny_data()
    first = train(config(method="spectral"), data, quiet=True)
    second = train(config(method="spectral"), data, quiet=True)
    assert without_timing(first.history) == without_timing(second.history)
    assert first.final == second.final
    for a, b in zip(params_of(first), params_of(second)):
        np.testing.assert_array_equal(a, b)
    other = train(config(method="spectral", seed=1), data, quiet=True)
    assert without_timing(other.history) != without_timing(first.history)


def test_history_records_what_the_paper_measures() -> None:
    result = train(config(epochs=3, input_grad_checkpoints=2), tiny_data(), quiet=True)
    assert [r["epoch"] for r in result.history] == [1, 2, 3]
    assert [r["input_grad"] is not None for r in result.history] == [True, False, True]
    last = result.history[-1]
    assert last["gap"] == pytest.approx(last["train_acc"] - last["test_acc"])
    assert set(last["sigma"]) == {n for n, p in result.model.named_parameters() if p.regularize}
    assert set(last["input_grad"]) == {"train", "test", "examples"}
    assert np.isfinite(result.final["hessian_train"]["eigenvalue"])
    assert result.final["hessian_step"] == metrics.HVP_STEP  # recorded with the results
    assert result.final["hessian_frozen_pattern"] is True
    assert sorted(result.final["singular_values"]) == sorted(last["sigma"])
    # learning rate: ×0.1 at 50% and 75% of the 9 steps (3 per epoch) -> epochs start at
    # steps 0, 3, 6: lr, lr (step 3 < 4.5), lr/10 (step 6 >= 5, < 6.75)
    assert [r["lr"] for r in result.history] == pytest.approx([0.05, 0.05, 0.005])


@pytest.mark.parametrize("method", METHODS)
def test_every_method_lowers_the_training_loss(method: str) -> None:
    data = tiny_data()
    untrained = build_model("vgg", data.input_shape, 3, seed=0, width=4)
    initial_loss, _ = metrics.evaluate(untrained, data.x_train, data.y_train)
    result = train(config(method=method, model="vgg", batch_size=16, hessian=False), data,
                   quiet=True)
    assert result.history[-1]["train_loss"] < initial_loss - 0.1
    assert np.isfinite(result.history[-1]["running_objective"])


def interrupt_after(epoch: int):
    def callback(record: dict) -> None:
        if record["epoch"] == epoch:
            raise KeyboardInterrupt

    return callback


@pytest.mark.parametrize("method", ["spectral", "spectral-operator", "adversarial", "decay"])
def test_resume_ends_exactly_like_an_uninterrupted_run(tmp_path, method: str) -> None:
    data = tiny_data()
    reference = train(config(method=method), data, quiet=True)
    path = tmp_path / "run" / "checkpoint.npz"
    with pytest.raises(KeyboardInterrupt):
        train(config(method=method), data, checkpoint_path=path, quiet=True,
              on_epoch=interrupt_after(2))
    assert load_checkpoint(path)["epoch"] == 2
    resumed = train(config(method=method), data, checkpoint_path=path, resume=True, quiet=True)
    assert without_timing(resumed.history) == without_timing(reference.history)
    assert resumed.final == reference.final
    for a, b in zip(params_of(resumed), params_of(reference)):
        np.testing.assert_array_equal(a, b)
    # resuming a finished run returns it without training again
    again = Trainer(config(method=method), data, checkpoint_path=path)
    assert without_timing(again.run(resume=True).history) == without_timing(reference.history)


def test_resume_refuses_a_different_configuration(tmp_path) -> None:
    path = tmp_path / "checkpoint.npz"
    train(config(epochs=1, hessian=False), tiny_data(), checkpoint_path=path, quiet=True)
    with pytest.raises(ValueError, match="different configuration.*lr"):
        train(config(epochs=1, hessian=False, lr=0.1), tiny_data(), checkpoint_path=path,
              resume=True)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path) -> None:
    path = tmp_path / "checkpoint.npz"
    trainer = Trainer(config(model="mlp", width=16, epochs=3), tiny_data(), checkpoint_path=path,
                      quiet=True)

    def explode(record: dict) -> None:  # from epoch 2 on, an absurd learning rate
        trainer.schedule.base_lr = 1e30

    with pytest.raises(TrainingDiverged, match=r"epoch 2.*last good checkpoint \(epoch 1\)"):
        trainer.run(on_epoch=explode)
    saved = load_checkpoint(path)
    assert saved["epoch"] == 1 and len(saved["history"]) == 1
    assert all(np.isfinite(v).all() for v in saved["model"].values())


def test_bad_arguments_give_clear_errors() -> None:
    with pytest.raises(ValueError, match="unknown method 'ridge'"):
        TrainConfig(method="ridge")
    with pytest.raises(ValueError, match="unknown model 'resnet'"):
        TrainConfig(model="resnet")
    with pytest.raises(ValueError, match="batch_size 500 is larger than the training set"):
        Trainer(config(batch_size=500), tiny_data())


def test_checkpoint_round_trip_and_atomic_replace(tmp_path) -> None:
    state = {"a": np.arange(6.0).reshape(2, 3), "nested": {0: [1, (2, 3)], "big": 2**70},
             "scalar": np.float32(1.5), "none": None, "text": "x"}
    path = tmp_path / "c.npz"
    save_checkpoint(path, state)
    loaded = load_checkpoint(path)
    np.testing.assert_array_equal(loaded["a"], state["a"])
    assert loaded["nested"] == {0: [1, (2, 3)], "big": 2**70}
    assert loaded["scalar"] == 1.5 and loaded["none"] is None and loaded["text"] == "x"
    save_checkpoint(path, {"a": np.zeros(2)})
    assert list(load_checkpoint(path)) == ["a"]
    assert os.listdir(tmp_path) == ["c.npz"]  # no temporary file left behind


def test_an_unwritable_value_leaves_the_old_checkpoint(tmp_path) -> None:
    path = tmp_path / "c.npz"
    save_checkpoint(path, {"epoch": 1})
    with pytest.raises(TypeError, match="cannot store"):
        save_checkpoint(path, {"epoch": 2, "bad": object()})
    assert load_checkpoint(path) == {"epoch": 1}
    path.write_bytes(b"truncated")
    with pytest.raises(CheckpointError, match="unreadable"):
        load_checkpoint(path)


def test_spectral_step_matches_forward_backward_add_grad_by_hand() -> None:
    """One trainer step (which skips dL/dx of the images) gives the same parameters as forward,
    backward, penalty, add_grad and SGD written out by hand."""
    data = tiny_data()
    cfg = config(method="spectral", model="mlp", width=64, batch_size=16, hessian=False)
    trainer = Trainer(cfg, data)
    plain = Trainer(cfg, data)
    xb, yb = data.x_train[:16], data.y_train[:16]
    _, objective, _ = trainer.train_step(xb, yb)
    plain.model.train()
    logits = plain.model.forward(xb)
    loss, dlogits = plain.criterion(logits, yb)
    plain.model.backward(dlogits)
    expected_objective = loss + plain.regularizer.penalty(plain.model)
    plain.regularizer.add_grad(plain.model)
    plain.optimizer.step()
    assert objective == pytest.approx(expected_objective, rel=1e-6)
    for p, q in zip(trainer.model.parameters(), plain.model.parameters()):
        np.testing.assert_array_equal(p.data, q.data)
