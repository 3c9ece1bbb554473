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


@pytest.mark.parametrize("method, options", [
    ("spectral", {}), ("spectral-operator", {}), ("adversarial", {}), ("decay", {}),
    ("spectral", {"augment": True, "warmup_epochs": 1}),
    ("vanilla", {"augment": True, "eval_every": 2, "curve_examples": 40}),
])
def test_resume_ends_exactly_like_an_uninterrupted_run(tmp_path, method: str, options) -> None:
    """Also with augmentation (its generator's state is in the checkpoint), warm-up, sparse
    evaluation and curve subsets."""
    data = tiny_data()
    reference = train(config(method=method, **options), data, quiet=True)
    path = tmp_path / "run" / "checkpoint.npz"
    with pytest.raises(KeyboardInterrupt):
        train(config(method=method, **options), data, checkpoint_path=path, quiet=True,
              on_epoch=interrupt_after(2))
    assert load_checkpoint(path)["epoch"] == 2
    resumed = train(config(method=method, **options), data, checkpoint_path=path, resume=True,
                    quiet=True)
    assert without_timing(resumed.history) == without_timing(reference.history)
    assert resumed.final == reference.final
    for a, b in zip(params_of(resumed), params_of(reference)):
        np.testing.assert_array_equal(a, b)
    # resuming a finished run returns it without training again
    again = Trainer(config(method=method, **options), data, checkpoint_path=path)
    assert without_timing(again.run(resume=True).history) == without_timing(reference.history)


def test_resume_refuses_a_different_configuration(tmp_path) -> None:
    path = tmp_path / "checkpoint.npz"
    train(config(epochs=1, hessian=False), tiny_data(), checkpoint_path=path, quiet=True)
    with pytest.raises(ValueError, match="different run.*config.lr: 0.05 in the file vs 0.1 now"):
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


def test_resume_refuses_another_identity(tmp_path) -> None:
    """The data specification (and whatever else the caller puts in ``identity``) is part of
    what a checkpoint must match; every difference is named."""
    path = tmp_path / "checkpoint.npz"
    small = {"data": {"dataset": "tiny", "train_size": 300}, "threads": 1}
    with pytest.raises(KeyboardInterrupt):
        train(config(epochs=2, hessian=False), tiny_data(), checkpoint_path=path, quiet=True,
              identity=small, on_epoch=interrupt_after(1))
    other = {"data": {"dataset": "tiny", "train_size": 200}, "threads": 1}
    with pytest.raises(ValueError, match=r"identity.data.train_size: 300 in the file vs 200 now"):
        train(config(epochs=2, hessian=False), tiny_data(), checkpoint_path=path, resume=True,
              identity=other)
    resumed = train(config(epochs=2, hessian=False), tiny_data(), checkpoint_path=path,
                    resume=True, identity=small, quiet=True)
    assert len(resumed.history) == 2


def test_augmentation_is_seeded_cropped_flipped_and_keeps_dtype() -> None:
    from specnorm_np.train import augment_batch

    x = np.random.default_rng(0).standard_normal((64, 8, 8, 3)).astype(np.float32)
    a = augment_batch(x, np.random.default_rng([5, 3]))
    b = augment_batch(x, np.random.default_rng([5, 3]))
    c = augment_batch(x, np.random.default_rng([6, 3]))
    assert a.dtype == np.float32 and a.shape == x.shape
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    # every output is a shifted (by at most 4 pixels, zero-filled) and maybe mirrored input
    for image, source in zip(a, x):
        padded = np.pad(source, ((4, 4), (4, 4), (0, 0)))
        windows = [w for top in range(9) for left in range(9)
                   for w in (padded[top:top + 8, left:left + 8],
                             padded[top:top + 8, left:left + 8][:, ::-1])]
        assert any(np.array_equal(image, w) for w in windows)
    flipped = sum(not any(np.array_equal(image, np.pad(source, ((4, 4), (4, 4), (0, 0)))[
        t:t + 8, left:left + 8]) for t in range(9) for left in range(9))
        for image, source in zip(a, x))
    assert 16 <= flipped <= 48  # about half are mirrored


def test_eval_every_curve_subsets_and_final_full_set_numbers() -> None:
    data = tiny_data()
    result = train(config(epochs=5, eval_every=2, curve_examples=40, hessian=False,
                          input_grad_checkpoints=2), data, quiet=True)
    evaluated = [r["epoch"] for r in result.history if r["evaluated"]]
    assert evaluated == [2, 4, 5]  # every 2nd and the last
    assert all("test_acc" not in r for r in result.history if not r["evaluated"])
    assert all(r["curve_examples"] == {"train": 40, "test": 40}
               for r in result.history if r["evaluated"])
    assert [r["epoch"] for r in result.history if r.get("input_grad")] == [2, 5]
    steps = -(-96 // 32)
    assert result.final["updates"] == 5 * steps
    assert [r["updates"] for r in result.history] == [steps * e for e in range(1, 6)]
    model = result.model
    loss, acc = metrics.evaluate(model, data.x_test, data.y_test)
    assert result.final["test_acc"] == acc and result.final["test_loss"] == loss


def test_warmup_ramps_the_learning_rate_linearly() -> None:
    from specnorm_np.optim import SGD, MultiStepLR

    class Holder:
        lr = 0.4

    schedule = MultiStepLR(Holder(), total=10, warmup=4)
    assert [round(schedule.lr_at(t), 12) for t in range(10)] == \
        [0.1, 0.2, 0.3, 0.4, 0.4, 0.04, 0.04, 0.04, 0.004, 0.004]
    assert MultiStepLR(Holder(), total=10).lr_at(0) == 0.4  # no warm-up by default
    with pytest.raises(ValueError, match="warmup must be an int in"):
        MultiStepLR(Holder(), total=10, warmup=10)
    del SGD


def test_a_finite_blow_up_counts_as_divergence() -> None:
    from specnorm_np.train import DIVERGED_LOSS, check_finite

    check_finite(DIVERGED_LOSS)  # at the limit: still a (bad) loss
    with pytest.raises(TrainingDiverged, match="3e\\+35, above 10000"):
        check_finite(3e35)
    with pytest.raises(TrainingDiverged, match="is nan"):
        check_finite(float("nan"))


def test_divergence_first_seen_in_evaluation_names_the_parameter(tmp_path, monkeypatch) -> None:
    """An update that makes a weight Inf without a NaN loss in its own step: the evaluation
    after the epoch sees it; the error says which parameter and keeps the last checkpoint."""
    path = tmp_path / "checkpoint.npz"
    trainer = Trainer(config(model="mlp", width=16, epochs=3, hessian=False), tiny_data(),
                      checkpoint_path=path, quiet=True)
    original = Trainer.train_step

    def poisoned(self, xb, yb):
        values = original(self, xb, yb)
        if self.epoch == 1 and self.updates % self.steps_per_epoch == 0:  # epoch 2's last step
            self.model.layers[1].weight.data[0, 0] = np.inf
        return values

    monkeypatch.setattr(Trainer, "train_step", poisoned)
    with pytest.raises(TrainingDiverged) as info:
        trainer.run()
    message = str(info.value)
    assert "epoch 2, evaluation" in message and "Linear (layer 1).weight (1 NaN/Inf)" in message
    assert "last good checkpoint (epoch 1)" in message
    assert load_checkpoint(path)["epoch"] == 1


@pytest.mark.parametrize("field, value, expected", [
    ("hessian_examples", -5, "hessian_examples must be an integer >= 1"),
    ("metric_examples", -1, "metric_examples must be an integer >= 1"),
    ("hessian_iterations", 0, "hessian_iterations must be an integer >= 1"),
    ("eval_every", 0, "eval_every must be an integer >= 1"),
    ("width", 0, "width must be an integer >= 1"),
    ("lr", -1.0, "lr must be a finite number > 0"),
    ("lr", float("nan"), "lr must be a finite number > 0"),
    ("warmup_epochs", 3, "warmup_epochs \\(3\\) must be fewer than epochs \\(3\\)"),
])
def test_config_values_are_checked(field, value, expected) -> None:
    with pytest.raises(ValueError, match=expected):
        config(**{field: value})
