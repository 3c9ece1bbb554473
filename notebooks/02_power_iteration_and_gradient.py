# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 2. Power iteration and the gradient λσuvᵀ
#
# The spectral norm regularizer adds $\frac{\lambda}{2}\sum_\ell\sigma(W_\ell)^2$ to the loss.
# Training needs its gradient at every SGD step, for every layer, cheaply. This notebook
#
# 1. derives $\nabla_W \tfrac12\sigma(W)^2 = \sigma\,u_1v_1^T$ and checks it numerically;
# 2. shows the normalized power iteration converging to $\sigma_1, u_1, v_1$;
# 3. watches **one step per call** keep up with a weight that changes slowly during training,
#    as the paper does, and why the vector must be kept between steps;
# 4. runs the paper's Algorithm 1 **as printed** (without normalization) and shows it
#    estimating $1/\sigma$, with vectors that overflow or vanish;
# 5. verifies the library's `SpectralNormRegularizer` gradient with `gradcheck`, for a
#    Linear weight and a convolution kernel;
# 6. shows where the term λσuvᵀ could be added almost for free: inside the Linear layer's own
#    weight-gradient product (an exhibit in plain NumPy; the library keeps the two apart).
#
# **Run time** (full setting, on this project's 2-core CPU): about 5 s on an idle machine (5 s
# measured; 38 s while other jobs loaded it). Set `SPECNORM_NB_QUICK=1` for the quick setting
# the test suite uses.

# %% Parameters
import os

QUICK = os.environ.get("SPECNORM_NB_QUICK", "0") == "1"
SEED = 0
TRAIN_SIZE = 1000 if QUICK else 2000  # images for the training run of section 3
EPOCHS = 2 if QUICK else 4
HIDDEN = 64 if QUICK else 128
print(f"QUICK={QUICK}: train={TRAIN_SIZE}, epochs={EPOCHS}, hidden={HIDDEN}")

# %%
import matplotlib.pyplot as plt
import numpy as np

from specnorm_np import gradcheck, nn
from specnorm_np.spectral import (
    as_matrix,
    literal_algorithm1,
    power_iteration,
    top_singular_triplet,
)

rng = np.random.default_rng(SEED)


def matrix_with_spectrum(singular_values, rows, cols, seed):
    """A random (rows, cols) matrix with the given singular values (random singular vectors)."""
    gen = np.random.default_rng(seed)
    left, _ = np.linalg.qr(gen.standard_normal((rows, rows)))
    right, _ = np.linalg.qr(gen.standard_normal((cols, cols)))
    k = len(singular_values)
    return (left[:, :k] * np.asarray(singular_values)) @ right[:, :k].T


# %% [markdown]
# ## 1. The gradient of σ²/2
#
# Write the SVD $W = \sum_i \sigma_i u_i v_i^T$ with unit vectors, so
# $\sigma_1 = u_1^T W v_1$. Perturb $W$ by $dW$; $u_1$ and $v_1$ move too, but to first order
# that does not matter:
#
# $$d\sigma_1 = du_1^T W v_1 + u_1^T\,dW\,v_1 + u_1^T W\,dv_1
#   = \sigma_1\,du_1^T u_1 + u_1^T\,dW\,v_1 + \sigma_1\,v_1^T dv_1 = u_1^T\,dW\,v_1,$$
#
# because $Wv_1 = \sigma_1u_1$, $W^Tu_1 = \sigma_1v_1$, and a unit vector's change is orthogonal
# to it ($u^Tdu = \tfrac12 d\|u\|^2 = 0$). Hence $\nabla_W\sigma_1 = u_1v_1^T$ and
#
# $$\nabla_W \tfrac{\lambda}{2}\sigma_1(W)^2 = \lambda\,\sigma_1\,u_1v_1^T.$$
#
# It holds when $\sigma_1 > \sigma_2$ (otherwise $u_1, v_1$ are not unique and $\sigma_1$ has a
# kink). `gradcheck.check_function` compares it with central differences of the exact σ from
# an SVD, in float64, and raises if they disagree.

# %%
W = rng.standard_normal((12, 20))
sigma, u, v = top_singular_triplet(W)


def half_sigma_squared() -> float:
    return 0.5 * float(np.linalg.svd(W, compute_uv=False)[0]) ** 2


result = gradcheck.check_function(half_sigma_squared, W, sigma * np.outer(u, v),
                                  owner="σ²/2", tensor="W")
print(result)

# %% [markdown]
# ## 2. Normalized power iteration
#
# From a unit vector $v$, one step is
#
# $$u = \frac{Wv}{\|Wv\|},\qquad v \leftarrow \frac{W^Tu}{\|W^Tu\|},\qquad
#   \sigma = u^TWv = \|W^Tu\|.$$
#
# Each step multiplies the component of $v$ along $v_i$ by $\sigma_i^2$, so after $t$ steps the
# direction error shrinks like $(\sigma_2/\sigma_1)^{2t}$ and the σ estimate, a Rayleigh
# quotient, like $(\sigma_2/\sigma_1)^{4t}$. The estimate is never above $\sigma_1$.

# %%
fig, ax = plt.subplots(figsize=(6, 3.4))
for ratio, color in ((0.5, "tab:green"), (0.8, "tab:blue"), (0.95, "tab:red")):
    spectrum = np.concatenate([[1.0], np.linspace(ratio, 0.05, 39)])
    M = matrix_with_spectrum(spectrum, 40, 60, seed=1)
    v_t = rng.standard_normal(60)
    v_t /= np.linalg.norm(v_t)
    errors = []
    for _ in range(60):
        sigma_t, u_t, v_t = power_iteration(M, v_t, iterations=1)
        assert float(sigma_t) <= 1.0 + 1e-12  # a Rayleigh quotient never overshoots σ₁
        errors.append(max(1.0 - float(sigma_t), 1e-17))
    steps = np.arange(1, 61)
    ax.semilogy(steps, errors, color=color, label=f"σ₂/σ₁ = {ratio}")
    ax.semilogy(steps, errors[9] * ratio ** (4 * (steps - 10)), color=color, ls=":", lw=1)
    if ratio <= 0.8:
        assert errors[-1] < 1e-12, (ratio, errors[-1])
ax.set_ylim(1e-16, 2)
ax.set_xlabel("power-iteration steps t")
ax.set_ylabel("relative error of σ (σ₁ = 1)")
ax.set_title("Convergence; dotted: slope (σ₂/σ₁)^{4t}")
ax.legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# Run long enough, the power iteration agrees with `numpy.linalg.svd` on tall, wide and conv
# kernels alike (a kernel of shape (out, kh, kw, in) is viewed as the out × (kh·kw·in) matrix
# `as_matrix(kernel)`, one row per output channel, as the paper does).

# %%
for shape in [(30, 200), (200, 30), (16, 3, 3, 8)]:
    weight = rng.standard_normal(shape)
    v0 = rng.standard_normal(as_matrix(weight).shape[1])
    sigma_pi, u_pi, v_pi = power_iteration(weight, v0 / np.linalg.norm(v0), iterations=500)
    sigma_svd = np.linalg.svd(as_matrix(weight), compute_uv=False)[0]
    assert np.isclose(float(sigma_pi), sigma_svd, rtol=1e-10), shape
    print(f"{str(shape):>16}: power iteration σ = {float(sigma_pi):.12f}, SVD σ = {sigma_svd:.12f}")

# %% [markdown]
# ## 3. One step per SGD step
#
# The paper performs a *single* power-iteration step per SGD step and keeps $v$ from one step
# to the next. SGD changes $W$ only a little per step, so the previous $v$ is already close to
# the new top singular vector and one more step keeps it there: the iterations accumulate over
# training. We train an MLP with the regularizer and, at every step, compare its σ with the
# exact one from an SVD of the same weights; and we compare with a one-step estimate from a
# fresh random vector (what you get if you forget to keep $v$).

# %%
from specnorm_np.data import DatasetError
from specnorm_np.experiments.datasets import DataSpec, load_splits
from specnorm_np.models import build_model
from specnorm_np.optim import SGD
from specnorm_np.regularizers import SpectralNormRegularizer

try:
    data = load_splits(DataSpec("cifar10", train_size=TRAIN_SIZE, test_size=100, data_seed=SEED))
except DatasetError as error:
    print("CIFAR-10 is not on this machine, so this notebook uses scikit-learn's 8x8 digits "
          f"(set SPECNORM_DATA to the folder that holds cifar-10-batches-py).\n{error}")
    data = load_splits(DataSpec("digits", train_size=None, test_size=None, data_seed=SEED))
DATASET, x_train, y_train = data.name, data.x_train, data.y_train

model = build_model("mlp", x_train.shape[1:], 10, seed=SEED, width=HIDDEN)
regularizer = SpectralNormRegularizer(lam=0.01, power_iterations=1, seed=SEED)
optimizer = SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
loss_fn = nn.SoftmaxCrossEntropy()
names = [name for name, p in model.named_parameters() if p.regularize]
weights = dict(model.named_parameters())
persistent_error = {name: [] for name in names}
fresh_error = {name: [] for name in names}
batch_size = 64
for _ in range(EPOCHS):
    order = rng.permutation(len(x_train))
    for start in range(0, len(order) - batch_size + 1, batch_size):
        batch = order[start:start + batch_size]
        loss, dlogits = loss_fn(model.forward(x_train[batch]), y_train[batch])
        model.backward(dlogits)
        regularizer.add_grad(model)  # one power step per weight, then += λσuvᵀ
        for name in names:
            weight = weights[name].data.astype(np.float64)
            exact = np.linalg.svd(weight, compute_uv=False)[0]
            estimate = regularizer.sigmas()[name]
            fresh = rng.standard_normal(weight.shape[1])
            fresh_sigma, _, _ = power_iteration(weight, fresh / np.linalg.norm(fresh), 1)
            persistent_error[name].append(abs(exact - estimate) / exact)
            fresh_error[name].append(abs(exact - float(fresh_sigma)) / exact)
        optimizer.step()

fig, ax = plt.subplots(figsize=(7, 3.6))
for name, color in zip(names, ("tab:blue", "tab:orange", "tab:green")):
    ax.semilogy(persistent_error[name], color=color, label=f"{name}: v kept between steps")
    ax.semilogy(fresh_error[name], color=color, ls=":", alpha=0.6,
                label=f"{name}: fresh random v")
ax.set_xlabel("SGD step (one power-iteration step each)")
ax.set_ylabel("relative error of σ vs SVD")
ax.set_title(f"MLP on {DATASET}: one step per SGD step is enough")
ax.legend(fontsize=7, ncol=2)
plt.tight_layout()
plt.show()

for name in names:
    final_kept = np.median(persistent_error[name][-20:])
    final_fresh = np.median(fresh_error[name][-20:])
    print(f"{name}: relative error over the last 20 steps, kept v {final_kept:.1e}, "
          f"fresh v {final_fresh:.1e}")
    assert final_kept < final_fresh, name

# %% [markdown]
# ## 4. The printed Algorithm 1, taken literally
#
# The paper's Algorithm 1 writes the update as $u \leftarrow Wv$, $v \leftarrow W^Tu$,
# $\sigma \leftarrow \|u\|/\|v\|$, with **no normalization**. Taken literally:
#
# * σ is computed *after* $v$ was replaced by $W^TWv$, so at the top singular vector it is
#   $\|\sigma_1u_1\| / \|\sigma_1^2v_1\| = 1/\sigma_1$, not $\sigma_1$;
# * the vectors are multiplied by about $\sigma_1^2$ per step: they overflow when
#   $\sigma_1 > 1$ and vanish when $\sigma_1 < 1$;
# * a hook that renormalizes $v$ before each single step (as one public Chainer implementation
#   does) adds $\lambda\cdot\tfrac{1}{\sigma_1}\cdot\sigma_1u_1\cdot\sigma_1^2v_1^T
#   = \lambda\sigma_1^2u_1v_1^T$: the gradient of $\tfrac{\lambda}{3}\sigma_1^3$, a different
#   penalty.
#
# The library keeps the literal version, `literal_algorithm1`, as an exhibit.

# %%
spectrum = np.concatenate([[1.0], np.linspace(0.6, 0.05, 19)])
base = matrix_with_spectrum(spectrum, 20, 30, seed=2)
_, u1, v1 = top_singular_triplet(base)
for scale in (3.0, 0.5):
    sigma_literal, _, _ = literal_algorithm1(scale * base, v1, iterations=1)
    assert np.isclose(float(sigma_literal), 1 / scale, rtol=1e-10)
    print(f"σ₁ = {scale}: the literal update reports σ = {float(sigma_literal):.4f} = 1/σ₁")

fig, ax = plt.subplots(figsize=(6, 3.4))
with np.errstate(over="ignore", invalid="ignore", under="ignore", divide="ignore"):
    for scale, color in ((3.0, "tab:red"), (0.5, "tab:blue")):
        v_t, norms = v1 + 0.1 * rng.standard_normal(30), []
        for _ in range(400):
            _, u_t, v_t = literal_algorithm1(scale * base, v_t, iterations=1)
            norms.append(float(np.linalg.norm(v_t)))
        norms = np.array(norms)
        finite = np.isfinite(norms) & (norms > 0)
        ax.semilogy(np.flatnonzero(finite) + 1, norms[finite], color=color,
                    label=f"σ₁ = {scale}: ‖v‖ after t steps")
        limit = "overflows to inf" if scale > 1 else "underflows to 0"
        where = np.flatnonzero(~finite)
        assert where.size, f"expected ‖v‖ to leave the float range for σ₁ = {scale}"
        print(f"σ₁ = {scale}: ‖v‖ {limit} after {where[0] + 1} literal steps")
ax.set_xlabel("literal Algorithm 1 steps t")
ax.set_ylabel("‖v‖ (log scale; float64 range)")
ax.set_title("Without normalization the vector leaves the float range")
ax.legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# The third point, checked with `gradcheck`: starting from the unit vector $v_1$, the
# literal one-step update produces $\lambda\sigma u v^T$ equal to the gradient of
# $\frac{\lambda}{3}\sigma_1^3$, and **not** to that of $\frac{\lambda}{2}\sigma_1^2$.

# %%
lam = 0.01
M = 3.0 * base
_, u1, v1 = top_singular_triplet(M)
sigma_literal, u_literal, v_literal = literal_algorithm1(M, v1, iterations=1)
literal_grad = lam * float(sigma_literal) * np.outer(u_literal, v_literal)


def cubic_penalty() -> float:
    return lam / 3 * float(np.linalg.svd(M, compute_uv=False)[0]) ** 3


def intended_penalty() -> float:
    return lam / 2 * float(np.linalg.svd(M, compute_uv=False)[0]) ** 2


print("literal update vs (λ/3)σ³:", gradcheck.check_function(cubic_penalty, M, literal_grad,
                                                            owner="literal", tensor="W"))
try:
    gradcheck.check_function(intended_penalty, M, literal_grad, owner="literal", tensor="W")
    raise AssertionError("the literal update should not be the gradient of (λ/2)σ²")
except gradcheck.GradcheckError as error:
    print("literal update vs (λ/2)σ²: fails, as expected:\n ", str(error)[:150], "...")

# %% [markdown]
# ## 5. The regularizer's gradient, checked numerically
#
# `SpectralNormRegularizer` keeps one unit vector per weight and, in `add_grad`, advances it by
# `power_iterations` steps and adds $\lambda\sigma uv^T$ (reshaped to the weight's shape) to
# the weight's `.grad`. We check that this is the gradient of the *true*
# $\frac{\lambda}{2}\sigma_1(W)^2$ (exact σ from an SVD inside the finite differences):
#
# * with `exact=True` (σ, u, v from an SVD), on a Linear weight and on a 3×3 conv kernel;
# * with the power iteration run to convergence (`power_iterations=300`).
#
# Biases are not regularized: their gradient must stay untouched.

# %%
tiny = nn.Sequential(
    nn.Conv2d(3, 4, 3, padding=1, rng=SEED, dtype=np.float64), nn.ReLU(), nn.Flatten(),
    nn.Linear(4 * 5 * 5, 6, rng=SEED + 1, dtype=np.float64),
)
params = dict(tiny.named_parameters())
for options in ({"exact": True}, {"power_iterations": 300}):
    reg = SpectralNormRegularizer(lam=0.01, **options)
    for p in tiny.parameters():
        p.grad = np.zeros_like(p.data)
    reg.add_grad(tiny)
    for name, p in tiny.named_parameters():
        if not p.regularize:
            assert not p.grad.any(), f"{name} is not a weight and must not be touched"
            continue

        def true_penalty(p=p) -> float:
            return 0.005 * float(np.linalg.svd(as_matrix(p.data), compute_uv=False)[0]) ** 2

        check = gradcheck.check_function(true_penalty, p.data, p.grad, owner=str(options),
                                         tensor=name, tol=1e-6)
        print(f"{str(options):>25} {name:>9} {str(p.shape):>14}: max relative error "
              f"{check.max_error:.1e}")

# %% [markdown]
# ## 6. A cheaper place for λσuvᵀ: inside the layer's own weight-gradient product
#
# Adding $\lambda\sigma uv^T$ to `W.grad` after the backward pass reads and writes the whole
# gradient once more. For a big Linear weight that pass costs more than the power iteration
# itself. But a Linear layer's weight gradient is already a sum of rank-one matrices, one per
# example:
#
# $$\frac{\partial L}{\partial W} = dy^T x = \sum_{n=1}^{N} dy_n\, x_n^T,$$
#
# so $\lambda\sigma uv^T$ is just one more "example", with $dy_{N+1} = \lambda\sigma u$ and
# $x_{N+1} = v$. Append one row to each factor, and the matrix product that computes the
# gradient anyway adds the regularizer's term for free.
#
# The weights do not change between the forward pass and the optimizer step, so the power
# iteration could run *before* the backward pass and hand each Linear layer its term. The
# library does **not** do this: it would make the layers know about the regularizer and make a
# second backward pass give a different gradient (an earlier version did, and saved about
# 0.4 ms per MLP step). `add_grad` instead adds the term in place, a block of rows at a time,
# after `model.backward`. The exhibit below only checks the algebra.

# %%
dy_rows, x_rows = rng.standard_normal((5, 6)), rng.standard_normal((5, 7))
W_small = rng.standard_normal((6, 7))
v0_s = rng.standard_normal(7)
sigma_s, u_s, v_s = power_iteration(W_small, v0_s / np.linalg.norm(v0_s), 50)
a, b = 0.01 * sigma_s * u_s, v_s  # the regularizer's term is the outer product a bᵀ
folded = np.vstack([dy_rows, a]).T @ np.vstack([x_rows, b])  # one product, N + 1 "examples"
separate = dy_rows.T @ x_rows
separate += np.outer(a, b)  # what add_grad does (in place)
print("largest difference between folded and separate:", np.abs(folded - separate).max())
assert np.allclose(folded, separate, rtol=1e-12, atol=1e-15)
