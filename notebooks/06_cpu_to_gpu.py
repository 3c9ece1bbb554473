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
#    device data fails in CI exactly where it would fail on a GPU;
# 3. ends with exercises (device-agnostic functions, a fair timing) and a summary.
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


# Timed like the GPU below: one warm-up step on a throwaway model (first-call costs), the model
# built before the clock starts, so that the two times measure the same thing.
train_steps(build_model("vgg", (32, 32, 3), 10, seed=SEED, width=WIDTH), x_host, y_host, 1)
cpu_model = build_model("vgg", (32, 32, 3), 10, seed=SEED, width=WIDTH)
start = time.perf_counter()
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
    cupy.cuda.Device().synchronize()  # the copy to the device is not part of a step
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

# %% [markdown]
# ## Exercises
#
# Each exercise is a function to complete, followed by a grader cell that checks it. In the
# book the reference solution is collapsed under the exercise; `make exercises` writes a copy of
# this notebook without the solutions to `build/exercises/`. The graders run your functions on
# NumPy *and* on the strict backend, so a stray `np.` call on device data fails there.

# %%
def returned(value, what: str, exercise: str):
    """``value`` as given, or a failure saying that the exercise is not done yet."""
    if value is None:
        raise AssertionError(f"{exercise}: `{what}` is still None. Write your code where it "
                             "says `# YOUR CODE HERE`, run that cell, then this one again.")
    return value


# %% [markdown]
# ```{exercise} A device-agnostic softmax
# :label: ex-portable-softmax
#
# Write `softmax(logits)` for a 2-D array (rows are examples), numerically stable (subtract
# each row's maximum), using only `xp = get_array_module(logits)`. The result must stay on the
# logits' device.
# ```

# %% tags=["solution", "hide-input"]
def softmax(logits):
    """Row-wise softmax of a (N, K) array on its own device."""
    probabilities = None
    ### BEGIN SOLUTION
    xp = get_array_module(logits)
    shifted = logits - logits.max(axis=1, keepdims=True)
    exponentials = xp.exp(shifted)
    probabilities = exponentials / exponentials.sum(axis=1, keepdims=True)
    ### END SOLUTION
    return probabilities


# %% tags=["grader"]
logits_host = np.random.default_rng(61).standard_normal((5, 7)) * 30
expected_softmax = np.exp(logits_host - logits_host.max(axis=1, keepdims=True))
expected_softmax /= expected_softmax.sum(axis=1, keepdims=True)
for where, array in (("numpy", logits_host), ("strict", strict.asarray(logits_host))):
    got = returned(softmax(array), "probabilities", "Exercise 1 (softmax)")
    assert get_array_module(got) is get_array_module(array), (
        f"Exercise 1 ({where}): the result left the device ({type(got).__name__})")
    assert np.allclose(to_numpy(got), expected_softmax), f"Exercise 1 ({where}): wrong values"
print("Exercise 1 passed: the same code on NumPy and on the strict backend.")


# %% [markdown]
# ```{exercise} Clip each row's norm, on any device
# :label: ex-clip-rows
#
# Write `clip_rows(g, max_norm)`: scale every row of `g` whose ℓ2 norm exceeds `max_norm` down
# to norm `max_norm`, leave the others unchanged, device-agnostically (no `np.` on the data).
# ```

# %% tags=["solution", "hide-input"]
def clip_rows(g, max_norm: float):
    """Rows of ``g`` (N, D) rescaled to norm at most ``max_norm``, on ``g``'s device."""
    clipped = None
    ### BEGIN SOLUTION
    xp = get_array_module(g)
    norms = xp.sqrt((g * g).sum(axis=1, keepdims=True))
    clipped = g * xp.minimum(1.0, max_norm / xp.maximum(norms, 1e-12))
    ### END SOLUTION
    return clipped


# %% tags=["grader"]
rows_host = np.random.default_rng(62).standard_normal((6, 4)) * np.arange(1, 7)[:, None]
norms_host = np.linalg.norm(rows_host, axis=1)
for where, array in (("numpy", rows_host), ("strict", strict.asarray(rows_host))):
    got = returned(clip_rows(array, 5.0), "clipped", "Exercise 2 (clip_rows)")
    assert get_array_module(got) is get_array_module(array), (
        f"Exercise 2 ({where}): the result left the device")
    got_host = to_numpy(got)
    new_norms = np.linalg.norm(got_host, axis=1)
    assert np.allclose(new_norms, np.minimum(norms_host, 5.0)), (
        f"Exercise 2 ({where}): row norms {np.round(new_norms, 3)}, expected "
        f"{np.round(np.minimum(norms_host, 5.0), 3)}")
    assert np.allclose(got_host / new_norms[:, None], rows_host / norms_host[:, None]), (
        f"Exercise 2 ({where}): the rows' directions must not change")
print("Exercise 2 passed: rows clipped, directions kept, on both backends.")


# %% [markdown]
# ```{exercise} A fair time per step
# :label: ex-fair-timing
#
# Section 1 times both devices the same way. Write `seconds_per_step(make_model, step, steps,
# warmup)`: build the model with `make_model()` and run `warmup` calls of `step(model)`
# *before* starting the clock (`time.perf_counter`), then return the mean wall time of `steps`
# further calls. The grader uses a model that is slow to build and a first call that is slow.
# ```

# %% tags=["solution", "hide-input"]
def seconds_per_step(make_model, step, steps: int, warmup: int = 1):
    """Mean seconds of one ``step(model)``, excluding model building and warm-up calls."""
    seconds = None
    ### BEGIN SOLUTION
    model = make_model()
    for _ in range(warmup):
        step(model)
    start = time.perf_counter()
    for _ in range(steps):
        step(model)
    seconds = (time.perf_counter() - start) / steps
    ### END SOLUTION
    return seconds


# %% tags=["grader"]
def slow_to_build():
    time.sleep(0.3)
    return {"calls": 0}


def slow_first_call(model):
    model["calls"] += 1
    time.sleep(0.3 if model["calls"] == 1 else 0.01)


measured_step = returned(seconds_per_step(slow_to_build, slow_first_call, steps=5, warmup=1),
                         "seconds", "Exercise 3 (seconds_per_step)")
assert 0.009 < measured_step < 0.05, (
    f"Exercise 3: {measured_step * 1e3:.0f} ms per step, but a step takes 10 ms; building the "
    "model (300 ms) and the first call (300 ms) must stay outside the clock")
print(f"Exercise 3 passed: {measured_step * 1e3:.1f} ms per step (the step itself sleeps 10 ms).")

# %% [markdown]
# ## Summary
#
# * The device follows the data: `xp = get_array_module(x)` inside every computation, models
#   moved with `model.to(...)`, data with `to_device`; no global device switch.
# * Timings compare like with like only if both exclude model building, first-call costs and
#   host-device copies, and the GPU is synchronized before the clock stops.
# * Without a GPU, the strict backend catches every silent conversion to NumPy, and gives the
#   CPU's numbers for a whole training step; checkpoints are host arrays on any device.
