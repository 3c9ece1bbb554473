"""The array-module selection and the strict CuPy-like test backend."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from specnorm_np import nn
from specnorm_np.backend import device_of, get_array_module, gpu_available, to_device, to_numpy
from specnorm_np.testing import strict
from specnorm_np.testing.strict import StrictArray, StrictBackendError


def test_strict_refuses_implicit_conversion() -> None:
    s = strict.asarray(np.arange(6.0).reshape(2, 3))
    assert not isinstance(s, np.ndarray)
    with pytest.raises(TypeError, match="implicit conversion .* not allowed"):
        np.asarray(s)
    with pytest.raises(TypeError, match="numpy.mean called on a strict-backend"):
        np.mean(s)
    with pytest.raises(TypeError):
        np.exp(s)


def test_strict_refuses_host_arrays_in_operations() -> None:
    s = strict.asarray(np.ones(3))
    host = np.ones(3)
    for operation in (lambda: s + host, lambda: host * s, lambda: s[np.array([0, 1])],
                      lambda: strict.xp.maximum(s, host), lambda: s @ host):
        with pytest.raises(StrictBackendError, match="host numpy.ndarray of shape"):
            operation()

    def assign() -> None:
        s[...] = host

    with pytest.raises(StrictBackendError):
        assign()


def test_strict_behaves_like_an_array() -> None:
    host = np.arange(12.0).reshape(3, 4)
    s = strict.asarray(host)
    total = s.sum()
    assert isinstance(total, StrictArray) and total.shape == ()  # 0-d, as in CuPy
    assert float(total) == 66.0
    np.testing.assert_array_equal((s * 2 + 1).get(), host * 2 + 1)
    np.testing.assert_array_equal(strict.xp.maximum(s, 5.0).get(), np.maximum(host, 5.0))
    assert isinstance(strict.xp.zeros((2, 2)), StrictArray)
    np.testing.assert_array_equal(s.T.get(), host.T)
    s[0, 0] = -1.0
    assert s.get()[0, 0] == -1.0 and host[0, 0] == 0.0  # asarray copied the host data


def test_get_array_module() -> None:
    host, device = np.ones(2), strict.asarray(np.ones(2))
    assert get_array_module(host) is np
    assert get_array_module(device) is strict.xp
    assert get_array_module(None, 3.0, host, device) is strict.xp
    assert get_array_module() is np
    assert get_array_module(None, 1) is np
    assert device_of(host) == "cpu" and device_of(device) == "gpu"


def test_to_device_and_to_numpy() -> None:
    host = np.arange(4, dtype=np.float32)
    device = to_device(host, "gpu", module=strict.xp)
    assert isinstance(device, StrictArray) and device.dtype == np.float32
    assert to_device(device, "gpu", module=strict.xp) is device  # already there
    back = to_numpy(device)
    assert isinstance(back, np.ndarray)
    np.testing.assert_array_equal(back, host)
    assert to_numpy(host) is host
    assert to_device(host, "cpu") is host
    np.testing.assert_array_equal(to_device(device, "cpu"), host)
    with pytest.raises(ValueError, match="device must be 'cpu' or 'gpu', got 'cuda'"):
        to_device(host, "cuda")


@pytest.mark.skipif(importlib.util.find_spec("cupy") is not None,
                    reason="CuPy is installed: GPU availability depends on the machine")
def test_no_gpu_without_cupy() -> None:
    assert gpu_available() is False
    with pytest.raises(RuntimeError, match="no usable GPU"):
        to_device(np.ones(2), "gpu")


@pytest.mark.gpu
def test_layers_on_real_cupy_match_numpy() -> None:
    import cupy

    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 6)).astype(np.float32)
    labels = rng.integers(0, 3, 4)
    models = [nn.Sequential(nn.Linear(6, 5, rng=1), nn.BatchNorm1d(5), nn.ReLU(),
                            nn.Dropout(0.3, seed=2), nn.Linear(5, 3, rng=3)) for _ in range(2)]
    gpu_model = models[1].to("gpu")
    assert isinstance(gpu_model[0].weight.data, cupy.ndarray)
    loss = nn.SoftmaxCrossEntropy()
    host_loss, host_grad = loss(models[0].forward(x), labels)
    gpu_loss, gpu_grad = loss(gpu_model.forward(cupy.asarray(x)), cupy.asarray(labels))
    assert gpu_loss == pytest.approx(host_loss, rel=1e-5)
    np.testing.assert_allclose(models[0].backward(host_grad),
                               gpu_model.backward(gpu_grad).get(), rtol=1e-4, atol=1e-6)
