"""Module, Parameter and Sequential: structure, modes, state dicts, devices and dtypes."""

from __future__ import annotations

import numpy as np
import pytest

from specnorm_np import nn
from specnorm_np.backend import get_array_module
from specnorm_np.optim import SGD
from specnorm_np.testing import strict


def small_model(seed: int = 0) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(5, 4, rng=seed),
        nn.BatchNorm1d(4),
        nn.ReLU(),
        nn.Dropout(0.2, seed=seed),
        nn.Linear(4, 3, bias=False, rng=seed + 1),
    )


def test_parameters_order_and_names() -> None:
    model = small_model()
    names = [name for name, _ in model.named_parameters()]
    assert names == ["0.weight", "0.bias", "1.weight", "1.bias", "4.weight"]
    params = model.parameters()
    assert params[0] is model[0].weight and params[-1] is model[4].weight
    assert [p.regularize for p in params] == [True, False, False, False, True]
    assert model[4].bias is None


def test_nested_module_parameters_and_labels() -> None:
    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.first = nn.Linear(3, 3, rng=1)
            self.inner = nn.Sequential(nn.ReLU(), nn.Linear(3, 2, rng=2))

    block = Block()
    assert [n for n, _ in block.named_parameters()] == [
        "first.weight", "first.bias", "inner.1.weight", "inner.1.bias"
    ]
    assert [type(m).__name__ for m in block.modules()] == [
        "Block", "Linear", "Sequential", "ReLU", "Linear"
    ]
    assert block.inner[1].label == "Linear (layer 1)"
    assert "Linear(3, 2, bias=True)" in repr(block)


def test_a_submodule_overriding_named_parameters_keeps_its_rule() -> None:
    """The tree walk honours a child's own named_parameters (e.g. one that hides a frozen
    parameter), at any depth, as a walk calling named_parameters level by level would."""
    class Frozen(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layer = nn.Linear(2, 2, rng=0)

        def named_parameters(self, prefix: str = ""):
            return iter([(prefix + "layer.bias", self.layer.bias)])  # the weight is hidden

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(3, 2, rng=1)
            self.inner = nn.Sequential(nn.ReLU(), Frozen())

    net = Net()
    assert [n for n, _ in net.named_parameters()] == ["a.weight", "a.bias", "inner.1.layer.bias"]
    assert net.parameters()[-1] is net.inner[1].layer.bias


def test_sequential_rejects_non_modules() -> None:
    with pytest.raises(TypeError, match="argument 1"):
        nn.Sequential(nn.ReLU(), lambda x: x)


def test_train_eval_recursion() -> None:
    model = small_model()
    assert all(m.training for m in model.modules())
    assert model.eval() is model
    assert not any(m.training for m in model.modules())
    model.train()
    assert all(m.training for m in model.modules())


def test_state_dict_round_trip_restores_outputs() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 5)).astype(np.float32)
    source = small_model(seed=0)
    source.forward(x)  # moves the BatchNorm running statistics away from their start
    source.eval()
    state = source.state_dict()
    assert list(state) == ["0.weight", "0.bias", "1.weight", "1.bias", "4.weight",
                           "1.running_mean", "1.running_var"]
    assert all(isinstance(v, np.ndarray) for v in state.values())
    state["0.weight"][0, 0] += 1.0  # a copy: editing it does not touch the model
    assert source[0].weight.data[0, 0] != state["0.weight"][0, 0]
    state = source.state_dict()

    target = small_model(seed=7).eval()
    assert not np.allclose(target.forward(x), source.forward(x))
    target.load_state_dict(state)
    np.testing.assert_array_equal(target.forward(x), source.forward(x))
    np.testing.assert_array_equal(target[1].running_var, source[1].running_var)
    assert target[0].weight.data.dtype == np.float32


def test_load_state_dict_errors_name_the_entry() -> None:
    model = small_model()
    state = model.state_dict()
    missing = dict(state)
    del missing["1.running_var"]
    with pytest.raises(KeyError, match="1.running_var"):
        model.load_state_dict(missing)
    extra = dict(state, **{"9.weight": np.zeros(2)})
    with pytest.raises(KeyError, match="9.weight"):
        model.load_state_dict(extra)
    wrong = dict(state, **{"0.weight": np.zeros((4, 6), dtype=np.float32)})
    with pytest.raises(ValueError, match=r"'0.weight'.*\(4, 6\).*\(4, 5\)"):
        model.load_state_dict(wrong)


def test_astype_casts_parameters_buffers_and_state() -> None:
    model = small_model()
    model[0].weight.state["momentum_buffer"] = np.ones((4, 5), dtype=np.float32)
    model.astype(np.float64)
    assert all(p.data.dtype == np.float64 for p in model.parameters())
    assert model[1].running_mean.dtype == np.float64
    assert model[0].weight.state["momentum_buffer"].dtype == np.float64
    x = np.random.default_rng(1).standard_normal((3, 5))
    assert model.forward(x).dtype == np.float64


def test_to_device_moves_parameters_buffers_and_optimizer_state() -> None:
    rng = np.random.default_rng(2)
    x = rng.standard_normal((8, 5)).astype(np.float32)
    labels = rng.integers(0, 3, 8)
    model = small_model()
    reference = small_model()
    loss = nn.SoftmaxCrossEntropy()
    optimizers = [SGD(m.parameters(), lr=0.1, momentum=0.9, nesterov=True)
                  for m in (model, reference)]
    for m, opt in zip((model, reference), optimizers):
        _, dlogits = loss(m.forward(x), labels)
        m.backward(dlogits)
        opt.step()

    model.to("gpu", module=strict.xp)
    for p in model.parameters():
        assert get_array_module(p.data) is strict.xp
        assert get_array_module(p.grad) is strict.xp
        assert get_array_module(p.state["momentum_buffer"]) is strict.xp
    assert get_array_module(model[1].running_mean) is strict.xp

    # a second step on the "device" matches the same step on the host
    _, dlogits = loss(model.forward(strict.asarray(x)), strict.asarray(labels))
    model.backward(dlogits)
    optimizers[0].step()
    _, dlogits = loss(reference.forward(x), labels)
    reference.backward(dlogits)
    optimizers[1].step()
    for p, q in zip(model.parameters(), reference.parameters()):
        np.testing.assert_allclose(p.data.get(), q.data, rtol=1e-6, atol=1e-6)

    model.to("cpu")
    assert all(isinstance(p.data, np.ndarray) for p in model.parameters())
    assert all(isinstance(p.state["momentum_buffer"], np.ndarray) for p in model.parameters())
    assert isinstance(model[1].running_var, np.ndarray)


def test_to_rejects_unknown_device_and_clears_cache() -> None:
    model = small_model()
    model.forward(np.ones((2, 5), dtype=np.float32))
    with pytest.raises(ValueError, match="device must be 'cpu' or 'gpu'"):
        model.to("tpu")
    model.to("cpu")
    with pytest.raises(RuntimeError, match="backward\\(\\) called before forward"):
        model.backward(np.ones((2, 3), dtype=np.float32))


def test_zero_grad_clears_gradients() -> None:
    model = small_model()
    model.forward(np.ones((3, 5), dtype=np.float32))
    model.backward(np.ones((3, 3), dtype=np.float32))
    assert all(p.grad is not None for p in model.parameters())
    model.zero_grad()
    assert all(p.grad is None for p in model.parameters())


def test_parameter_repr_and_shape() -> None:
    p = nn.Parameter(np.zeros((2, 3), dtype=np.float32), "weight", regularize=True)
    assert p.shape == (2, 3)
    assert repr(p) == "Parameter('weight', shape=(2, 3), dtype=float32, weight)"


# ---- backward_weights: parameter gradients without dL/dx ------------------------------------
class _Spy(nn.Module):
    """A parameter-free identity layer that counts its backward calls."""

    def __init__(self) -> None:
        super().__init__()
        self.backward_calls = 0

    def forward(self, x):
        return x

    def backward(self, dy):
        self.backward_calls += 1
        return dy


@pytest.mark.parametrize("name, input_shape", [("mlp", (8, 8, 1)), ("vgg-bn", (8, 8, 1)),
                                               ("nin", (8, 8, 1))])
def test_backward_weights_gives_the_same_parameter_gradients(backend, rng, name, input_shape):
    from specnorm_np.models import build_model

    x = rng.standard_normal((3, *input_shape))
    dlogits = rng.standard_normal((3, 10))
    grads = []
    for weights_only in (False, True):
        model = backend.to(build_model(name, input_shape, seed=1).astype(np.float64))
        model.forward(backend.asarray(x))
        if weights_only:
            assert model.backward_weights(backend.asarray(dlogits)) is None
        else:
            model.backward(backend.asarray(dlogits))
        grads.append({n: backend.host(p.grad) for n, p in model.named_parameters()})
    assert grads[0].keys() == grads[1].keys()
    for key in grads[0]:
        assert np.array_equal(grads[0][key], grads[1][key]), key


def test_backward_weights_stops_at_the_first_layer_with_parameters(monkeypatch, rng):
    import specnorm_np.nn.conv as conv_module

    def not_needed(*args, **kwargs):
        raise AssertionError("conv2d_input_grad must not run in backward_weights")

    spy = _Spy()
    inner = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1, rng=0, dtype=np.float64), nn.ReLU())
    model = nn.Sequential(spy, inner, nn.Flatten(), nn.Linear(3 * 4 * 5, 2, rng=1,
                                                             dtype=np.float64))
    model.forward(rng.standard_normal((2, 4, 5, 2)))
    monkeypatch.setattr(conv_module, "conv2d_input_grad", not_needed)
    model.backward_weights(rng.standard_normal((2, 2)))
    assert spy.backward_calls == 0
    assert inner[0].weight.grad.shape == (3, 3, 3, 2)
    with pytest.raises(AssertionError, match="must not run"):
        model.backward(rng.standard_normal((2, 2)))


def test_backward_weights_of_a_parameter_free_model_does_nothing(rng):
    spy = _Spy()
    model = nn.Sequential(spy, nn.ReLU())
    model.forward(rng.standard_normal((2, 3)))
    assert model.backward_weights(rng.standard_normal((2, 3))) is None
    assert spy.backward_calls == 0
    # a layer without an override (ReLU) falls back to backward and discards dL/dx
    relu = nn.ReLU()
    relu.forward(rng.standard_normal((2, 3)))
    assert relu.backward_weights(np.ones((2, 3))) is None


def test_backward_weights_checks_the_upstream_gradient():
    layer = nn.Linear(3, 2, rng=0)
    layer.forward(np.ones((4, 3), np.float32))
    with pytest.raises(ValueError, match="Linear"):
        layer.backward_weights(np.ones((4, 3), np.float32))


# ---- the layer contract: backward is a pure function of forward's cache and dy ------------------
def _layer_cases():
    """(name, layer, input shape) for every layer family, float64, in training mode."""
    from specnorm_np.spectral import SpectralNorm

    return [
        ("Linear", nn.Linear(6, 4, rng=0, dtype=np.float64), (3, 6)),
        ("Conv2d s1 p1", nn.Conv2d(2, 3, 3, padding=1, rng=0, dtype=np.float64), (2, 5, 4, 2)),
        ("Conv2d s2 p0", nn.Conv2d(2, 3, (3, 2), stride=2, rng=0, dtype=np.float64),
         (2, 7, 6, 2)),
        ("MaxPool2d overlapping", nn.MaxPool2d(3, stride=2), (2, 7, 5, 2)),
        ("AvgPool2d", nn.AvgPool2d(2), (2, 4, 6, 3)),
        ("GlobalAvgPool2d", nn.GlobalAvgPool2d(), (2, 3, 5, 4)),
        ("BatchNorm1d", nn.BatchNorm1d(5, dtype=np.float64), (4, 5)),
        ("BatchNorm2d", nn.BatchNorm2d(3, dtype=np.float64), (2, 3, 4, 3)),
        ("ReLU", nn.ReLU(), (3, 7)),
        ("LeakyReLU", nn.LeakyReLU(0.1), (3, 7)),
        ("Dropout", nn.Dropout(0.4, seed=1), (3, 7)),
        ("Flatten", nn.Flatten(), (2, 3, 2, 2)),
        ("SpectralNorm(Linear)", SpectralNorm(nn.Linear(5, 3, rng=0, dtype=np.float64)), (4, 5)),
    ]


def _grads(module) -> dict:
    return {n: p.grad.copy() for n, p in module.named_parameters()}


@pytest.mark.parametrize("case", range(len(_layer_cases())),
                         ids=[c[0] for c in _layer_cases()])
def test_every_layer_backward_twice_gives_identical_gradients(case) -> None:
    _, layer, shape = _layer_cases()[case]
    rng = np.random.default_rng(case)
    x = rng.standard_normal(shape)
    layer.train()
    y = layer.forward(x)
    dy = rng.standard_normal(y.shape)
    dx1, grads1 = layer.backward(dy.copy()), _grads(layer)
    dx2, grads2 = layer.backward(dy.copy()), _grads(layer)
    np.testing.assert_array_equal(dx1, dx2)
    assert grads1.keys() == grads2.keys()
    for name in grads1:
        np.testing.assert_array_equal(grads1[name], grads2[name], err_msg=name)


@pytest.mark.parametrize("model_name", ["mlp", "vgg", "vgg-bn", "nin"])
@pytest.mark.parametrize("regularizer", [None, "decay", "spectral", "spectral-operator"])
def test_every_model_backward_twice_gives_identical_gradients(model_name, regularizer) -> None:
    """With a regularizer in the step too: forward, backward, add_grad; then backward and add_grad
    again with the regularizer's vectors reset to the same point give the same gradients."""
    import copy

    from specnorm_np.models import build_model
    from specnorm_np.regularizers import SpectralNormRegularizer, WeightDecay

    model = build_model(model_name, (8, 8, 3), 10, seed=1, width=4).astype(np.float64)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 8, 8, 3))
    model.train()
    y = model.forward(x)
    dy = rng.standard_normal(y.shape)
    reg = {None: None, "decay": WeightDecay(lam=0.1),
           "spectral": SpectralNormRegularizer(lam=0.1, seed=2),
           "spectral-operator": SpectralNormRegularizer(lam=0.1, seed=2, mode="operator")}[
        regularizer]
    results = []
    for _ in range(2):
        step_reg = copy.deepcopy(reg)  # the same power-iteration state both times
        dx = model.backward(dy)
        if step_reg is not None:
            step_reg.add_grad(model)
        results.append((dx.copy(), _grads(model)))
    (dx1, grads1), (dx2, grads2) = results
    np.testing.assert_array_equal(dx1, dx2)
    for name in grads1:
        np.testing.assert_array_equal(grads1[name], grads2[name], err_msg=name)


def test_nn_imports_nothing_of_the_regularizers_or_the_spectral_toolkit() -> None:
    """Layers know nothing of regularizers (DESIGN.md): no module under specnorm_np/nn imports
    specnorm_np.spectral, specnorm_np.regularizers, the optimizers or the trainer (checked on
    every import statement of the source, including those inside functions)."""
    import ast
    from pathlib import Path

    import specnorm_np.nn as package

    forbidden = ("specnorm_np.spectral", "specnorm_np.regularizers", "specnorm_np.train",
                 "specnorm_np.optim")
    for path in Path(package.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                assert not name.startswith(forbidden), f"{path.name} imports {name}"


def test_importing_the_library_loads_numpy_only() -> None:
    """``import specnorm_np`` pulls in no SciPy, matplotlib, tqdm, joblib or Dask: they are
    imported where they are used (a fresh interpreter, so earlier tests do not interfere)."""
    import subprocess
    import sys

    heavy = ("scipy", "matplotlib", "tqdm", "joblib", "dask", "sklearn", "threadpoolctl")
    code = ("import sys, specnorm_np; "
            f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({heavy!r})))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True).stdout
    assert loaded.strip() == "[]", loaded


@pytest.mark.parametrize("case", range(len(_layer_cases())),
                         ids=[c[0] for c in _layer_cases()])
def test_every_layer_refuses_an_upstream_gradient_of_another_dtype(case) -> None:
    """A float64 dy on a float32 layer is refused by backward (and backward_weights) as forward
    refuses a float64 x, with or without parameters; the right dtype passes."""
    name, layer, shape = _layer_cases()[case]
    layer.astype(np.float32)
    rng = np.random.default_rng(case)
    y = layer.forward(rng.standard_normal(shape).astype(np.float32))
    for backward in (layer.backward, layer.backward_weights):
        with pytest.raises(ValueError, match="upstream gradient dtype float64 does not match"):
            backward(rng.standard_normal(y.shape))
    dx = layer.backward(rng.standard_normal(y.shape).astype(np.float32))
    assert dx.dtype == np.float32, name


@pytest.mark.parametrize("case", range(len(_layer_cases())),
                         ids=[c[0] for c in _layer_cases()])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_every_layer_passes_an_empty_batch(case, mode) -> None:
    """N = 0 through forward and backward: empty outputs of the right shapes, zero parameter
    gradients, and (BatchNorm) running statistics left alone."""
    name, layer, shape = _layer_cases()[case]
    layer.train(mode == "train")
    buffers = {n: b.copy() for n, b in layer.named_buffers()}
    x = np.zeros((0, *shape[1:]))
    y = layer.forward(x)
    full = layer.forward(np.ones(shape)) if mode == "eval" else None
    assert y.shape[0] == 0 and (full is None or y.shape[1:] == full.shape[1:]), name
    y = layer.forward(x)
    dx = layer.backward(np.zeros(y.shape))
    assert dx.shape == x.shape and dx.dtype == np.float64, name
    for pname, p in layer.named_parameters():
        assert p.grad.shape == p.data.shape and not p.grad.any(), f"{name} {pname}"
    for bname, value in layer.named_buffers():  # (SpectralNorm's u, v do not depend on data)
        if bname.startswith("running_"):
            np.testing.assert_array_equal(value, buffers[bname], err_msg=f"{name} {bname}")
