"""The benchmark harness: correctness only (speed is never asserted in tests).

Checked here: the NumPy and PyTorch reference networks are the same function once the weights
are copied (same parameter count, same logits in training and evaluation mode, same loss and
input gradient), a float32 training step stays float32 throughout, the harness runs one step
on a tiny batch and produces its table and JSON, and the memory probe runs in a subprocess.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from specnorm_np import bench
from specnorm_np.bench import memory
from specnorm_np.bench.networks import (
    NETWORKS,
    build_numpy,
    build_torch,
    copy_weights_to_torch,
    count_parameters,
)
from specnorm_np.bench.steps import NumpyTrainer, TorchTrainer, make_batch

ALL_NETS = list(NETWORKS)


def _same_function_setup(name: str, batch: int = 3):
    torch = pytest.importorskip("torch")
    ours = build_numpy(name, seed=1)
    theirs = build_torch(name, seed=2).double()
    copy_weights_to_torch(name, ours, theirs)
    ours.astype(np.float64)
    x, y = make_batch(batch, seed=3)
    x = x.astype(np.float64)
    tx = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    return torch, ours, theirs, x, y, tx


@pytest.mark.parametrize("name", ALL_NETS)
def test_numpy_and_torch_networks_compute_the_same_function(name: str) -> None:
    torch, ours, theirs, x, y, tx = _same_function_setup(name)
    assert count_parameters(ours) == count_parameters(theirs)
    assert len(ours.parameters()) == len(list(theirs.parameters()))

    # training mode (BatchNorm normalises with the batch statistics): logits, loss, dL/dx
    from specnorm_np.nn import SoftmaxCrossEntropy

    logits = ours.train().forward(x)
    loss, dlogits = SoftmaxCrossEntropy()(logits, y)
    dx = ours.backward(dlogits)
    tx.requires_grad_(True)
    torch_logits = theirs.train()(tx)
    torch_loss = torch.nn.functional.cross_entropy(torch_logits, torch.from_numpy(y))
    torch_loss.backward()
    np.testing.assert_allclose(logits, torch_logits.detach().numpy(), rtol=1e-9, atol=1e-9)
    assert loss == pytest.approx(float(torch_loss.detach()), rel=1e-10)
    torch_dx = tx.grad.numpy().transpose(0, 2, 3, 1)  # back to (N, H, W, C)
    np.testing.assert_allclose(dx, torch_dx, rtol=1e-8, atol=1e-12)

    # evaluation mode, after one training-mode pass updated BatchNorm's running statistics
    eval_logits = ours.eval().forward(x)
    with torch.no_grad():
        torch_eval_logits = theirs.eval()(tx).numpy()
    np.testing.assert_allclose(eval_logits, torch_eval_logits, rtol=1e-9, atol=1e-9)


def test_copy_reorders_flattened_features() -> None:
    """A single wrong permutation would still give equal parameter counts: test the values."""
    torch = pytest.importorskip("torch")
    ours = build_numpy("mlp", seed=0)
    theirs = build_torch("mlp", seed=0)
    copy_weights_to_torch("mlp", ours, theirs)
    # feature (h=0, w=1, c=2) is column 1*3 + 2 = 5 here and column 2*1024 + 0*32 + 1 there
    np.testing.assert_array_equal(
        ours.layers[1].weight.data[:, 5], theirs[1].weight.detach().numpy()[:, 2 * 1024 + 1]
    )
    assert torch.equal(theirs[3].bias, torch.from_numpy(ours.layers[3].bias.data))


class _Float64Watch(np.ndarray):
    """An ndarray view that records every float64 array derived from it.

    Ufuncs, matmul, reshapes and views of a subclass array return the subclass, and NumPy calls
    ``__array_finalize__`` on each, so a float64 result anywhere downstream of the watched
    inputs and weights is noticed, even if a later step casts it back to float32.
    """

    seen: list[tuple[int, ...]] = []

    def __array_finalize__(self, obj: object) -> None:
        if self.dtype == np.float64:
            _Float64Watch.seen.append(self.shape)


@pytest.mark.parametrize("name", ALL_NETS)
def test_float32_training_step_stays_float32(name: str) -> None:
    trainer = NumpyTrainer(name, seed=0)
    x, y = make_batch(4, seed=0)
    for p in trainer.params:
        p.data = p.data.view(_Float64Watch)
    _Float64Watch.seen = []
    trainer.train_step(x.view(_Float64Watch), y)
    trainer.train_step(x.view(_Float64Watch), y)  # second step: momentum buffers exist
    logits = trainer.infer(x.view(_Float64Watch))
    assert _Float64Watch.seen == [], f"float64 arrays of shapes {_Float64Watch.seen} appeared"
    assert logits.dtype == np.float32
    for p in trainer.params:
        assert p.data.dtype == np.float32, p
        assert p.grad.dtype == np.float32, p
        for key, value in p.state.items():
            assert getattr(value, "dtype", np.float32) == np.float32, (p, key)
    for module in trainer.model.modules():
        for buffer_name, value in module.named_buffers():
            assert value.dtype == np.float32, buffer_name


def test_run_one_tiny_step_and_report() -> None:
    results = bench.run(batch=2, threads=1, nets=["mlp", "cnn"], steps=1, warmup=0,
                        memory_batches=())
    assert set(results["networks"]) == {"mlp", "cnn"}
    for name, entry in results["networks"].items():
        train = entry["train"]
        assert train["numpy"]["median_seconds"] > 0
        assert train["numpy"]["images_per_second"] == pytest.approx(
            2 / train["numpy"]["median_seconds"])
        # the share is by ablation (can be slightly negative from noise), the phase share not
        ablation = train["regularizer_ablation"]["numpy"]
        assert ablation["pairs"] == bench.runner.MIN_SHARE_PAIRS
        assert train["regularizer_share"] == pytest.approx(
            ablation["median_difference_seconds"] / ablation["median_seconds_with"])
        assert 0 <= train["regularizer_share_phase"] < 1
        assert np.isfinite(train["final_loss"]["numpy"])
        assert set(train["numpy"]["phases_seconds"]) >= {"forward", "backward", "total"}
        if bench.torch_available():
            assert entry["parameters"]["numpy"] == entry["parameters"]["torch"]
            ratio = train["numpy"]["median_seconds"] / train["torch"]["median_seconds"]
            assert train["ratio"] == pytest.approx(ratio)
            assert train["met"] == (ratio <= bench.TARGETS[name][0])
    table = bench.format_table(results)
    assert "mlp" in table and "inference" in table and "spectral share" in table


def test_command_line_json(capsys: pytest.CaptureFixture[str]) -> None:
    code = bench.main(["--nets", "mlp", "--batch", "2", "--steps", "1", "--warmup", "0",
                       "--threads", "1", "--no-memory", "--no-torch", "--json"])
    assert code == 0
    results = json.loads(capsys.readouterr().out)
    assert results["settings"]["batch"] == 2 and results["settings"]["torch"] is False
    assert list(results["networks"]) == ["mlp"]


def test_bad_arguments_name_what_was_expected() -> None:
    with pytest.raises(ValueError, match="nets must be among"):
        bench.run(nets=["resnet"], memory_batches=())
    with pytest.raises(ValueError, match="steps >= 1"):
        bench.run(nets=["mlp"], steps=0, memory_batches=())


def test_memory_probe_runs_in_its_own_process() -> None:
    result = memory.measure("mlp", "numpy", batch=2, threads=1, steps=1)
    assert result["network"] == "mlp" and result["batch"] == 2
    # the MLP's weights alone are ~7 MB of float32, so the peak must exceed the baseline
    weights_bytes = 4 * count_parameters(build_numpy("mlp"))
    assert result["peak_bytes"] >= result["baseline_bytes"] + weights_bytes > 0


def test_torch_regularizer_does_the_libraries_power_step() -> None:
    """Both sides of the benchmark do the same regularizer work: one normalized power step from
    the stored v, then grad += λσuvᵀ (checked in float64 against the library's functions)."""
    torch = pytest.importorskip("torch")
    from specnorm_np.bench.steps import TorchSpectralRegularizer
    from specnorm_np.spectral.power_iteration import power_iteration

    rng = np.random.default_rng(5)
    weight = torch.from_numpy(rng.standard_normal((4, 3, 2, 2)))
    weight.grad = torch.from_numpy(rng.standard_normal((4, 3, 2, 2)))
    before = weight.grad.numpy().copy()
    regularizer = TorchSpectralRegularizer([weight], lam=0.3, seed=0)
    regularizer.vectors[0] = regularizer.vectors[0].double()
    v0 = regularizer.vectors[0].numpy().copy()
    regularizer.add_grad()
    sigma, u, v = power_iteration(weight.detach().numpy(), v0 / np.linalg.norm(v0), 1)
    np.testing.assert_allclose(regularizer.vectors[0].numpy(), v, rtol=1e-12)
    np.testing.assert_allclose(weight.grad.numpy() - before,
                               0.3 * float(sigma) * np.outer(u, v).reshape(4, 3, 2, 2),
                               rtol=1e-10, atol=1e-13)


def test_paired_share_arithmetic_with_a_fake_clock(monkeypatch) -> None:
    """Median paired difference over median step, with each pair's order alternating."""
    from specnorm_np.bench import runner

    clock = [0.0]
    monkeypatch.setattr(runner.time, "perf_counter", lambda: clock[0])
    calls = []

    def with_it():
        calls.append("with")
        clock[0] += 1.1

    def without_it():
        calls.append("without")
        clock[0] += 1.0

    result = runner._paired_share(with_it, without_it, warmup=1, pairs=4)
    assert calls[:4] == ["with", "without", "without", "with"]
    assert len(calls) == 10
    assert result["share"] == pytest.approx(0.1 / 1.1)
    assert result["median_seconds_with"] == pytest.approx(1.1)
    assert result["pairs"] == 4
    assert result["share_interval"] == pytest.approx([0.1 / 1.1, 0.1 / 1.1])  # no spread


def test_median_interval_is_the_binomial_order_statistics() -> None:
    """n = 100: k = floor((101 − 1.96·10)/2) = 40, so the interval is [d_(40), d_(61)]; n = 30:
    k = 10; it holds the true median of a sample in at least about 95% of draws."""
    from specnorm_np.bench import runner

    values = list(range(100, 0, -1))  # order does not matter
    assert runner._median_interval(values) == (40, 61)
    assert runner._median_interval(list(range(30))) == (9, 20)  # d_(10), d_(21)
    assert runner._median_interval([3.0, 1.0, 2.0]) == (1.0, 3.0)  # tiny samples: full range
    rng = np.random.default_rng(0)
    covered = [lo <= 0.0 <= hi for lo, hi in
               (runner._median_interval(rng.standard_normal(60)) for _ in range(2000))]
    assert 0.93 <= np.mean(covered) <= 0.99


def test_a_step_without_the_regularizer_skips_it_on_the_same_trainer(monkeypatch) -> None:
    """The share's ablation steps one trainer with and without the regularizer (the same arrays),
    so ``train_step(..., regularize=False)`` must skip exactly the regularizer, on both sides."""
    trainer = NumpyTrainer("mlp", seed=0)
    x, y = make_batch(3, seed=0)
    calls = []
    original = trainer.regularizer.add_grad
    monkeypatch.setattr(trainer.regularizer, "add_grad",
                        lambda model: (calls.append(model), original(model)))
    trainer.train_step(x, y, regularize=False)
    assert calls == []
    before = {name: state.v.copy() for name, state in trainer.regularizer.states.items()}
    trainer.train_step(x, y)
    assert calls == [trainer.model] and before == {}  # the first regularized step made states
    if bench.torch_available():
        theirs = TorchTrainer("mlp", seed=0)
        tx, ty = theirs.to_input(x, y)
        vectors = [v.clone() for v in theirs.regularizer.vectors]
        theirs.train_step(tx, ty, regularize=False)
        assert all(bool((a == b).all()) for a, b in zip(vectors, theirs.regularizer.vectors))
        theirs.train_step(tx, ty)
        assert not any(bool((a == b).all()) for a, b in zip(vectors, theirs.regularizer.vectors))
