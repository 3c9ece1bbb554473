# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 6. From CPU to GPU
#
# Every computation in specnorm_np asks its input which array module to use:
#
# ```python
# xp = get_array_module(x)   # numpy for NumPy arrays, cupy for CuPy arrays
# y = xp.maximum(x, 0)
# ```
#
# There is no global "device" setting: the device follows the data. Moving a model is
# `model.to("gpu")` (parameters, gradients, optimizer state, buffers), moving data is
# `to_device(x, "gpu")`, and the same training code then runs on CuPy. This notebook
#
# 1. checks whether this machine has a usable GPU (CuPy installed *and* a CUDA device that
#    runs a kernel) and, if it has, trains the same model on both devices and compares;
# 2. shows how the project tests device-agnostic code **without** a GPU: a strict, CuPy-like
#    array type that refuses every silent conversion to NumPy, so a stray `np.` call on
#    device data fails in CI exactly where it would fail on a GPU.
#
# **Run time** (full setting, on this project's 2-core CPU): a few seconds without a GPU on an
# idle machine (1.2 s measured; 27 s while other jobs loaded it). Set `SPECNORM_NB_QUICK=1` for
# the quick setting the test suite uses.

# %% Parameters
import os

QUICK = os.environ.get("SPECNORM_NB_QUICK", "0") == "1"
SEED = 0
STEPS = 3 if QUICK else 5  # training steps per device
BATCH = 32 if QUICK else 64
WIDTH = 8 if QUICK else 16  # channels of the first conv block of the small CNN
print(f"QUICK={QUICK}: {STEPS} steps of batch {BATCH}, CNN width {WIDTH}")

# %%
import time

import numpy as np

from specnorm_np import nn
from specnorm_np.backend import gpu_available, to_device, to_numpy
from specnorm_np.models import build_model
from specnorm_np.optim import SGD
from specnorm_np.regularizers import SpectralNormRegularizer

HAVE_GPU = gpu_available()
if HAVE_GPU:
    import cupy

    print(f"A usable GPU was found: {cupy.cuda.runtime.getDeviceProperties(0)['name']}")
else:
    print("No usable GPU on this machine (CuPy is not installed, or no CUDA device can run a "
          "kernel). Everything below runs on the CPU; the GPU comparison is skipped.")

# %% [markdown]
# ## 1. The same training steps on each device
#
# A small CNN with the spectral regularizer and Nesterov SGD, a few steps on a random batch.
# The function below contains no device-specific line: it receives arrays on some device and
# a model on the same device.

# %%
rng = np.random.default_rng(SEED)
x_host = rng.standard_normal((BATCH, 32, 32, 3)).astype(np.float32)
y_host = rng.integers(0, 10, BATCH)


def train_steps(model, x, y, steps):
    """`steps` SGD steps on one batch; returns the losses (Python floats)."""
    loss_fn = nn.SoftmaxCrossEntropy()
    regularizer = SpectralNormRegularizer(lam=0.01, seed=SEED)
    optimizer = SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    losses = []
    for _ in range(steps):
        loss, dlogits = loss_fn(model.forward(x), y)
        model.backward(dlogits)
        regularizer.add_grad(model)
        optimizer.step()
        losses.append(loss)
    return losses


start = time.perf_counter()
cpu_model = build_model("vgg", (32, 32, 3), 10, seed=SEED, width=WIDTH)
cpu_losses = train_steps(cpu_model, x_host, y_host, STEPS)
cpu_seconds = (time.perf_counter() - start) / STEPS
print(f"CPU: loss {cpu_losses[0]:.4f} -> {cpu_losses[-1]:.4f}, {cpu_seconds * 1e3:.0f} ms/step")
assert cpu_losses[-1] < cpu_losses[0], "a few steps on one batch must lower its loss"

# %%
if HAVE_GPU:
    gpu_model = build_model("vgg", (32, 32, 3), 10, seed=SEED, width=WIDTH).to("gpu")
    x_gpu, y_gpu = to_device(x_host, "gpu"), to_device(y_host, "gpu")
    train_steps(gpu_model, x_gpu, y_gpu, 1)  # warm-up: CUDA kernels compile on first use
    gpu_model = build_model("vgg", (32, 32, 3), 10, seed=SEED, width=WIDTH).to("gpu")
    start = time.perf_counter()
    gpu_losses = train_steps(gpu_model, x_gpu, y_gpu, STEPS)
    cupy.cuda.Device().synchronize()
    gpu_seconds = (time.perf_counter() - start) / STEPS
    print(f"GPU: loss {gpu_losses[0]:.4f} -> {gpu_losses[-1]:.4f}, "
          f"{gpu_seconds * 1e3:.0f} ms/step ({cpu_seconds / gpu_seconds:.1f}× the CPU's speed)")
    # float32 on different hardware sums in different orders: equal up to rounding
    assert np.allclose(gpu_losses, cpu_losses, rtol=1e-3), (gpu_losses, cpu_losses)
    back = gpu_model.to("cpu")
    assert all(isinstance(p.data, np.ndarray) for p in back.parameters())
    print("Same losses on both devices; the model moved back to the CPU.")
else:
    print("Skipped: no GPU. (On a machine with CUDA: pip install 'specnorm_np[gpu]'.)")

# %% [markdown]
# ## 2. Testing device-agnostic code without a GPU
#
# Most machines that run the test suite (including CI) have no GPU, yet the code must not
# contain a stray `np.` call on data, which would crash on CuPy (CuPy arrays refuse implicit
# conversion to NumPy). The library ships `specnorm_np.testing.strict`: an array type that
# wraps NumPy but behaves like `cupy.ndarray` where it matters:
#
# * `numpy.asarray(x)`, NumPy functions and ufuncs called on it raise `TypeError`;
# * mixing a host `numpy.ndarray` into its operations raises `StrictBackendError` (a
#   `TypeError`);
# * its module `strict.xp` mirrors NumPy's namespace, and `get_array_module` returns it.
#
# `model.to("gpu", module=strict.xp)` moves a model onto this pretend device. The test suite
# runs every layer test on NumPy *and* on the strict backend.

# %%
from specnorm_np.backend import get_array_module
from specnorm_np.testing import strict
from specnorm_np.testing.strict import StrictBackendError

device_array = strict.asarray(x_host[:2])
assert get_array_module(device_array) is strict.xp and get_array_module(x_host) is np
print(f"{type(device_array).__name__} of shape {device_array.shape}: get_array_module returns "
      "strict.xp for it (and numpy for NumPy arrays)")


def relu_not_portable(x):
    return np.maximum(x, 0)  # always NumPy: wrong for device data


def relu_portable(x):
    xp = get_array_module(x)  # the data's own module
    return xp.maximum(x, 0)


try:
    relu_not_portable(device_array)
    raise AssertionError("the strict backend should have refused numpy.maximum")
except TypeError as error:  # as NumPy ufuncs on a CuPy array do
    print("np.maximum on a device array ->", type(error).__name__, ":", str(error)[:90], "...")
try:
    device_array + x_host[:2]
    raise AssertionError("the strict backend should have refused a host array")
except StrictBackendError as error:
    print("device array + host array   ->", type(error).__name__, ":", str(error)[:90], "...")
portable = relu_portable(device_array)
assert np.array_equal(to_numpy(portable), np.maximum(x_host[:2], 0))
print("xp.maximum with xp = get_array_module(x): works, result stays on the device:",
      type(portable).__name__)

# %% [markdown]
# The whole training step (forward, loss, backward, spectral regularizer, Nesterov update) on
# the strict backend: it must run without a single implicit conversion, and, since the strict
# arrays compute with NumPy underneath, give the CPU's numbers (up to float32 rounding: on
# NumPy arrays the regularizer uses an in-place BLAS rank-one update, elsewhere an outer
# product).

# %%
strict_model = build_model("vgg", (32, 32, 3), 10, seed=SEED, width=WIDTH)
strict_model.to("gpu", module=strict.xp)
assert all(type(p.data).__name__ == "StrictArray" for p in strict_model.parameters())
strict_losses = train_steps(strict_model, strict.asarray(x_host), strict.asarray(y_host), STEPS)
assert np.allclose(strict_losses, cpu_losses, rtol=1e-5), (strict_losses, cpu_losses)
print(f"strict backend: the same {STEPS} losses as on the CPU: "
      f"{[round(v, 5) for v in strict_losses]} vs {[round(v, 5) for v in cpu_losses]}")

state = strict_model.state_dict()  # checkpoints are host (NumPy) copies, device-independent
assert all(isinstance(v, np.ndarray) for v in state.values())
restored = build_model("vgg", (32, 32, 3), 10, seed=SEED + 1, width=WIDTH)
restored.load_state_dict(state)
assert np.array_equal(restored.eval().forward(x_host[:4]),
                      to_numpy(strict_model.eval().forward(strict.asarray(x_host[:4]))))
print("state_dict on the device -> host arrays -> a CPU model: identical predictions.")

# %% [markdown]
# In the project's own tests this is the `backend` fixture (`tests/conftest.py`): a test that
# takes it runs twice, on NumPy and on the strict backend, and real CuPy tests (marker `gpu`)
# run only where `gpu_available()` is true, reported as skipped, with the reason, elsewhere.
