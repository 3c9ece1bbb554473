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
#    as the paper does, and why the vector must be kept between steps: σ, and the gradient
#    λσuvᵀ itself against the exact λσ₁u₁v₁ᵀ, and what happens when σ₁ ≈ σ₂;
# 4. runs the paper's Algorithm 1 **as printed** (without normalization) and shows it
#    estimating $1/\sigma$, with vectors that overflow or vanish;
# 5. verifies the library's `SpectralNormRegularizer` gradient with `gradcheck`, for a
#    Linear weight and a convolution kernel;
# 6. shows where the term λσuvᵀ could be added almost for free: inside the Linear layer's own
#    weight-gradient product (an exhibit in plain NumPy; the library keeps the two apart);
# 7. trains one network four ways, without a penalty, with weight decay, with the spectral
#    penalty and with spectral normalization ($W/\sigma$), and compares their spectra;
# 8. ends with exercises (a power-iteration step, the penalty's gradient, a prediction, the
#    backward pass of spectral normalization) and a summary.
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
# quotient, like $(\sigma_2/\sigma_1)^{4t}$. The estimate is never above $\sigma_1$ (a
# Rayleigh quotient $u^TWv$ of unit vectors cannot exceed the largest singular value), so the
# plot shows $1-\sigma_t$ on a log scale. The cell checks the *rate*: from step 10 to step 20
# the error must shrink by $(\sigma_2/\sigma_1)^{40}$ up to a factor of four (the singular
# values just below $\sigma_2$ make it a little faster early on); the vectors' rate
# $(\sigma_2/\sigma_1)^{20}$ would miss that by a factor of about 90 at $\sigma_2/\sigma_1 = 0.8$.

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
        errors.append(max(1.0 - float(sigma_t), 1e-17))
    steps = np.arange(1, 61)
    if ratio >= 0.8:  # (at 0.5 the error reaches rounding level within ten steps)
        shrink, predicted = errors[19] / errors[9], ratio ** 40
        assert predicted / 4 < shrink < predicted * 4, (ratio, shrink, predicted)
        print(f"σ₂/σ₁ = {ratio}: error ×{shrink:.2e} from step 10 to 20, predicted "
              f"(σ₂/σ₁)^40 = {predicted:.2e}")
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
# fresh random vector (what you get if you forget to keep $v$). What training uses is not σ but
# the gradient term $\lambda\sigma uv^T$, so we also compare that term, read off `.grad` before
# and after `add_grad`, with the exact $\lambda\sigma_1u_1v_1^T$ (relative Frobenius error).

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
term_error = {name: [] for name in names}  # ‖λσuvᵀ − λσ₁u₁v₁ᵀ‖_F / ‖λσ₁u₁v₁ᵀ‖_F
batch_size = 64
for _ in range(EPOCHS):
    order = rng.permutation(len(x_train))
    for start in range(0, len(order) - batch_size + 1, batch_size):
        batch = order[start:start + batch_size]
        loss, dlogits = loss_fn(model.forward(x_train[batch]), y_train[batch])
        model.backward(dlogits)
        before = {name: weights[name].grad.astype(np.float64) for name in names}
        regularizer.add_grad(model)  # one power step per weight, then += λσuvᵀ
        for name in names:
            weight = weights[name].data.astype(np.float64)
            left, singular, right = np.linalg.svd(weight, full_matrices=False)
            exact = singular[0]
            exact_term = regularizer.lam * exact * np.outer(left[:, 0], right[0])
            term = weights[name].grad.astype(np.float64) - before[name]
            term_error[name].append(np.linalg.norm(term - exact_term) / np.linalg.norm(exact_term))
            estimate = regularizer.sigmas()[name]
            fresh = rng.standard_normal(weight.shape[1])
            fresh_sigma, _, _ = power_iteration(weight, fresh / np.linalg.norm(fresh), 1)
            persistent_error[name].append(abs(exact - estimate) / exact)
            fresh_error[name].append(abs(exact - float(fresh_sigma)) / exact)
        optimizer.step()

fig, (ax, ax_term) = plt.subplots(1, 2, figsize=(11, 3.6))
for name, color in zip(names, ("tab:blue", "tab:orange", "tab:green")):
    ax.semilogy(persistent_error[name], color=color, label=f"{name}: v kept between steps")
    ax.semilogy(fresh_error[name], color=color, ls=":", alpha=0.6,
                label=f"{name}: fresh random v")
    ax_term.semilogy(term_error[name], color=color, label=name)
ax.set_xlabel("SGD step (one power-iteration step each)")
ax.set_ylabel("relative error of σ vs SVD")
ax.set_title(f"MLP on {DATASET}: σ with one step per SGD step")
ax.legend(fontsize=7, ncol=2)
ax_term.set_xlabel("SGD step")
ax_term.set_ylabel("‖λσuvᵀ − λσ₁u₁v₁ᵀ‖_F / ‖λσ₁u₁v₁ᵀ‖_F")
ax_term.set_title("the gradient term itself (v kept)")
ax_term.legend(fontsize=7)
plt.tight_layout()
plt.show()

for name in names:
    final_kept = np.median(persistent_error[name][-20:])
    final_fresh = np.median(fresh_error[name][-20:])
    final_term, first_term = np.median(term_error[name][-20:]), np.median(term_error[name][:5])
    print(f"{name}: relative error over the last 20 steps, kept v {final_kept:.1e}, "
          f"fresh v {final_fresh:.1e}; gradient term {final_term:.1e} (first 5 steps "
          f"{first_term:.1e})")
    assert final_kept < final_fresh, name
    assert final_term > 3 * final_kept, name  # the term is much less accurate than σ

# %% [markdown]
# So σ is right to a few percent or better, but the gradient term $\lambda\sigma uv^T$ that
# training actually adds can be far from $\lambda\sigma_1u_1v_1^T$: a relative error near 1
# means that $uv^T$ is mostly made of other singular directions. σ is a Rayleigh quotient,
# second-order accurate in the vector's error, while $uv^T$ is only first-order accurate, and
# the top singular values of these weights are crowded (a random initial weight has a
# continuous Marchenko–Pastur spectrum), so the vector has not settled on $v_1$ in a few hundred
# steps. What the one-step method penalises is therefore the top singular *subspace* rather
# than $\sigma_1$ alone. In the limit $\sigma_1 = \sigma_2$ the
# penalty is not differentiable at all: $u_1, v_1$ are not unique and every unit vector of the
# top singular subspace is as good. A fixed matrix with $\sigma_2/\sigma_1 = 0.99$ shows what
# the one-step iteration does there: σ is right to a fraction of a percent within a few
# steps (it can never be further off than $\sigma_1-\sigma_2$ once the small singular values
# are gone), while $uv^T$ is still a mixture of $u_1v_1^T$ and $u_2v_2^T$ after fifty steps,
# since the $v_2$ component shrinks only like $0.99^{2t}$.
#
# For training this is harmless: the mixed term still points at the top of the spectrum and
# pushes down σ₁ and σ₂ together, both nearly as large, which is what a penalty on the largest
# singular value should do. It is a reason not to read the one-step $u, v$ as *the* singular
# vectors of a layer whose top singular values are crowded.

# %%
spectrum = np.concatenate([[1.0, 0.99], np.linspace(0.6, 0.05, 18)])
crowded = matrix_with_spectrum(spectrum, 20, 30, seed=3)
left, _, right = np.linalg.svd(crowded)
v_t = rng.standard_normal(30)
v_t /= np.linalg.norm(v_t)
sigma_error, direction_error = [], []
for _ in range(200):
    sigma_t, u_t, v_t = power_iteration(crowded, v_t, iterations=1)
    sigma_error.append(1.0 - float(sigma_t))
    direction_error.append(np.linalg.norm(np.outer(u_t, v_t) - np.outer(left[:, 0], right[0])))
print(f"σ₂/σ₁ = 0.99, after 50 steps: relative error of σ {sigma_error[49]:.1e}, "
      f"‖uvᵀ − u₁v₁ᵀ‖_F {direction_error[49]:.2f}; after 200 steps {sigma_error[-1]:.1e} and "
      f"{direction_error[-1]:.2f}")
assert sigma_error[49] < 0.01 and direction_error[49] > 0.1
assert direction_error[-1] < direction_error[49]  # it does converge, slowly

# %% [markdown]
# ## 4. The printed Algorithm 1, taken literally
#
# The paper's Algorithm 1 writes the update as $u \leftarrow Wv$, $v \leftarrow W^Tu$,
# $\sigma \leftarrow \|u\|/\|v\|$, with **no normalization**. Taken literally:
#
# * σ is computed *after* $v$ was replaced by $W^TWv$, so at the top singular vector it is
#   $\|\sigma_1u_1\| / \|\sigma_1^2v_1\| = 1/\sigma_1$, not $\sigma_1$;
# * the vectors are multiplied by about $\sigma_1^2$ per step: they grow without bound when
#   $\sigma_1 > 1$ and shrink to zero when $\sigma_1 < 1$. The first thing to break is the norm
#   $\|v\| = \sqrt{\sum_i v_i^2}$ as NumPy computes it: the *sum of squares* overflows to
#   inf once the entries pass about $10^{154}$ (or underflows to 0 below about $10^{-162}$),
#   while every entry is still an ordinary finite, non-zero float;
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
        # replay to the first failing step: the entries themselves are still fine there
        v_t = v1 + 0.1 * rng.standard_normal(30)
        for _ in range(where[0] + 1):
            _, _, v_t = literal_algorithm1(scale * base, v_t, iterations=1)
        largest = float(np.abs(v_t).max())
        assert np.all(np.isfinite(v_t)) and largest > 0
        print(f"σ₁ = {scale}: the sum of squares inside ‖v‖ {limit} after {where[0] + 1} literal "
              f"steps, while the largest entry is still a finite {largest:.1e}")
ax.set_xlabel("literal Algorithm 1 steps t")
ax.set_ylabel("‖v‖ (log scale, while Σv² is representable)")
ax.set_title("Without normalization ‖v‖ cannot even be computed")
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
# after `model.backward`. The exhibit below checks the algebra against what the library
# computes: a Linear layer's backward followed by `add_grad` (with `exact=True`, so that both
# sides use the exact $u_1, v_1$).

# %%
dy_rows, x_rows = rng.standard_normal((5, 6)), rng.standard_normal((5, 7))
small_layer = nn.Linear(7, 6, bias=False, rng=SEED, dtype=np.float64)
sigma_s, u_s, v_s = top_singular_triplet(small_layer.weight.data)
a, b = 0.01 * sigma_s * u_s, v_s  # the regularizer's term is the outer product a bᵀ
folded = np.vstack([dy_rows, a]).T @ np.vstack([x_rows, b])  # one product, N + 1 "examples"

small_layer.forward(x_rows)
small_layer.backward(dy_rows)  # sets weight.grad = dyᵀx
SpectralNormRegularizer(lam=0.01, exact=True).add_grad(small_layer)  # += λσuvᵀ, in place
print("largest difference between the folded product and backward + add_grad:",
      np.abs(folded - small_layer.weight.grad).max())
assert np.allclose(folded, small_layer.weight.grad, rtol=1e-12, atol=1e-14)

# %% [markdown]
# ## 7. Weight decay, the spectral penalty and spectral normalization, side by side
#
# Three ways to keep a layer's σ in check, with very different effects on the rest of its
# spectrum $\sigma_1 \ge \sigma_2 \ge \dots$:
#
# * **weight decay** adds $\frac{\lambda}{2}\lVert W\rVert_F^2 = \frac{\lambda}{2}\sum_i\sigma_i^2$,
#   gradient $\lambda W = \lambda\sum_i\sigma_iu_iv_i^T$: it shrinks *every* $\sigma_i$ by the
#   same factor per step;
# * the **spectral penalty** adds $\frac{\lambda}{2}\sigma_1^2$, gradient
#   $\lambda\sigma_1u_1v_1^T$: it shrinks only $\sigma_1$, a soft pressure on the top;
# * **spectral normalization** (the library's `SpectralNorm` wrapper, Miyato et al. 2018) uses
#   $W/\sigma_1(W)$ in the forward pass: the layer's σ is 1, always, a hard constraint, and the
#   shape of the rest of the spectrum is left to the data.
#
# We train the same MLP four ways on the data of section 3 and compare the singular values of
# its middle weight. The penalties are stronger than the paper's (decay λ = 0.01, spectral
# λ = 0.1) so that the few hundred steps of this notebook show their effect.

# %%
from specnorm_np.regularizers import WeightDecay
from specnorm_np.spectral import SpectralNorm


def train_four_ways(method: str) -> nn.Sequential:
    net = build_model("mlp", x_train.shape[1:], 10, seed=SEED, width=HIDDEN)
    if method == "normalized":
        net = nn.Sequential(*[SpectralNorm(layer, seed=SEED) if isinstance(layer, nn.Linear)
                              else layer for layer in net])
    penalty = {"decay": WeightDecay(lam=0.01), "spectral": SpectralNormRegularizer(lam=0.1),
               }.get(method)
    opt = SGD(net.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    order_rng = np.random.default_rng(SEED)
    net.train()
    for _ in range(EPOCHS):
        order = order_rng.permutation(len(x_train))
        for start in range(0, len(order) - batch_size + 1, batch_size):
            batch = order[start:start + batch_size]
            _, dlogits = loss_fn(net.forward(x_train[batch]), y_train[batch])
            net.backward(dlogits)
            if penalty is not None:
                penalty.add_grad(net)
            opt.step()
    return net.eval()


def middle_weight(net: nn.Sequential) -> np.ndarray:
    """The weight the middle Linear layer really applies (W/σ for spectral normalization)."""
    layers = [layer for layer in net if isinstance(layer, (nn.Linear, SpectralNorm))]
    middle = layers[1]
    if isinstance(middle, SpectralNorm):
        return middle.layer.weight.data.astype(np.float64) / float(middle.sigma)
    return middle.weight.data.astype(np.float64)


spectra, accuracies = {}, {}
for method in ("vanilla", "decay", "spectral", "normalized"):
    net = train_four_ways(method)
    accuracies[method] = float((net.forward(x_train).argmax(axis=1) == y_train).mean())
    spectra[method] = np.linalg.svd(middle_weight(net), compute_uv=False)  # after the eval pass

fig, ax = plt.subplots(figsize=(6.5, 3.6))
for method, color in zip(spectra, ("tab:blue", "tab:green", "c", "tab:purple")):
    ax.plot(spectra[method], color=color, label=f"{method} (train acc {accuracies[method]:.2f})")
ax.set_xlabel("index i (descending)")
ax.set_ylabel("singular value σᵢ of the middle weight")
ax.set_title("Decay shrinks all σᵢ, the penalty the top, normalization fixes σ₁ = 1")
ax.legend(fontsize=8)
plt.tight_layout()
plt.show()

base_spectrum = spectra["vanilla"]
print(f"{'method':>10} {'σ₁':>7} {'median σᵢ':>10} {'σ₁ / vanilla':>13} {'median / vanilla':>17}")
shrink = {}
for method, values in spectra.items():
    shrink[method] = (values[0] / base_spectrum[0], np.median(values) / np.median(base_spectrum))
    print(f"{method:>10} {values[0]:7.3f} {np.median(values):10.3f} {shrink[method][0]:13.3f} "
          f"{shrink[method][1]:17.3f}")
# the penalty shrinks the top more than the bulk; decay shrinks the bulk more than the penalty
assert shrink["spectral"][0] < shrink["spectral"][1] - 0.02, shrink["spectral"]
assert shrink["decay"][1] < shrink["spectral"][1], (shrink["decay"], shrink["spectral"])
# normalization holds the applied weight's σ₁ at 1 (up to the one-step estimate's lag)
assert abs(spectra["normalized"][0] - 1.0) < 0.05, spectra["normalized"][0]

# %% [markdown]
# ## Exercises
#
# Each exercise is a function to complete, followed by a grader cell that checks it. In the
# book the reference solution is collapsed under the exercise; `make exercises` writes a copy of
# this notebook without the solutions to `build/exercises/`, where you write your own code at
# `# YOUR CODE HERE` and run the grader.

# %%
def returned(value, what: str, exercise: str) -> np.ndarray:
    """``value`` as a float64 array, or a failure saying that the exercise is not done yet."""
    if value is None:
        raise AssertionError(f"{exercise}: `{what}` is still None. Write your code where it "
                             "says `# YOUR CODE HERE`, run that cell, then this one again.")
    return np.asarray(value, dtype=np.float64)


# %% [markdown]
# ```{exercise} One normalized power-iteration step
# :label: ex-power-step
#
# Write `power_step(matrix, v)`: from a unit vector `v`, return `(sigma, u, v_next)` with
# $u = Wv/\|Wv\|$, $v_{\text{next}} = W^Tu/\|W^Tu\|$ and $\sigma = \|W^Tu\|$ (section 2). Do
# not call the library's `power_iteration`; the grader compares with it.
# ```

# %% tags=["solution", "hide-input"]
def power_step(matrix: np.ndarray, v: np.ndarray):
    """One step of the normalized power iteration on a 2-D ``matrix`` from a unit ``v``."""
    sigma = u = v_next = None
    ### BEGIN SOLUTION
    u = matrix @ v
    u = u / np.linalg.norm(u)
    v_next = matrix.T @ u
    sigma = np.linalg.norm(v_next)
    v_next = v_next / sigma
    ### END SOLUTION
    return sigma, u, v_next


# %% tags=["grader"]
grader_rng = np.random.default_rng(11)
for shape in [(5, 9), (9, 5)]:
    A = grader_rng.standard_normal(shape)
    start = grader_rng.standard_normal(shape[1])
    start /= np.linalg.norm(start)
    result = power_step(A, start)
    sigma_1, u_1, v_1 = (returned(value, what, "Exercise 1 (power_step)")
                         for value, what in zip(result, ("sigma", "u", "v_next")))
    sigma_ref, u_ref, v_ref = power_iteration(A, start, iterations=1)
    assert u_1.shape == (shape[0],) and v_1.shape == (shape[1],), (
        f"Exercise 1: u must have shape {(shape[0],)} and v_next {(shape[1],)}, got "
        f"{u_1.shape} and {v_1.shape}")
    assert np.isclose(np.linalg.norm(u_1), 1) and np.isclose(np.linalg.norm(v_1), 1), (
        "Exercise 1: u and v_next must be unit vectors (divide by their norms)")
    assert np.isclose(float(sigma_1), float(sigma_ref), rtol=1e-10), (
        f"Exercise 1: sigma = {float(sigma_1):.6f}, expected ‖Wᵀu‖ = {float(sigma_ref):.6f}")
    assert np.allclose(u_1, u_ref) and np.allclose(v_1, v_ref), (
        "Exercise 1: u or v_next differs from one normalized step (u = Wv/‖Wv‖ first, then "
        "v_next from Wᵀu)")
print("Exercise 1 passed: one step matches the library's power_iteration(…, iterations=1).")


# %% [markdown]
# ```{exercise} The penalty's gradient for a convolution kernel
# :label: ex-penalty-gradient
#
# Write `penalty_gradient(kernel, lam)` for a kernel of shape (out, kh, kw, in): the gradient of
# $\frac{\lambda}{2}\sigma(W_{\text{mat}})^2$, with $W_{\text{mat}}$ = `kernel.reshape(out, -1)`,
# in the kernel's own shape. Use an exact SVD for $\sigma_1, u_1, v_1$. The grader is the
# library's `gradcheck.check_function` against central differences of the penalty.
# ```

# %% tags=["solution", "hide-input"]
def penalty_gradient(kernel: np.ndarray, lam: float):
    """Gradient of (λ/2)·σ(kernel.reshape(out, -1))², shape of ``kernel``."""
    gradient = None
    ### BEGIN SOLUTION
    matrix = kernel.reshape(kernel.shape[0], -1)
    left, singular, right = np.linalg.svd(matrix, full_matrices=False)
    gradient = (lam * singular[0] * np.outer(left[:, 0], right[0])).reshape(kernel.shape)
    ### END SOLUTION
    return gradient


# %% tags=["grader"]
grader_kernel = np.random.default_rng(12).standard_normal((4, 3, 3, 2))
grader_gradient = returned(penalty_gradient(grader_kernel, 0.01), "gradient",
                           "Exercise 2 (penalty_gradient)")
assert grader_gradient.shape == grader_kernel.shape, (
    f"Exercise 2: the gradient must have the kernel's shape {grader_kernel.shape}, got "
    f"{grader_gradient.shape}; reshape λσuvᵀ back")


def grader_penalty() -> float:
    matrix = grader_kernel.reshape(grader_kernel.shape[0], -1)
    return 0.005 * float(np.linalg.svd(matrix, compute_uv=False)[0]) ** 2


print("Exercise 2 passed:", gradcheck.check_function(
    grader_penalty, grader_kernel, grader_gradient, owner="Exercise 2 (penalty_gradient)",
    tensor="kernel", tol=1e-6))


# %% [markdown]
# ```{exercise} Predict the spectrum after one step
# :label: ex-predict-step
#
# One plain gradient step $W \leftarrow W - \eta\,g$ with only the regularizer's gradient $g$:
# $\lambda W$ for weight decay, the exact $\lambda\sigma_1u_1v_1^T$ for the spectral penalty.
# Write `singular_values_after_step(singular_values, lam, lr, method)` that *predicts* the new
# singular values (descending) from the old ones, for `method` "decay" or "spectral", without
# looking at any matrix. The grader takes the real steps and compares.
# ```

# %% tags=["solution", "hide-input"]
def singular_values_after_step(singular_values: np.ndarray, lam: float, lr: float,
                               method: str):
    """Predicted singular values (descending) after W ← W − lr·(gradient of the penalty)."""
    predicted = None
    ### BEGIN SOLUTION
    predicted = np.array(singular_values, dtype=np.float64)
    if method == "decay":
        predicted = predicted * (1 - lr * lam)
    else:
        predicted[0] *= 1 - lr * lam
    predicted = np.sort(predicted)[::-1]
    ### END SOLUTION
    return predicted


# %% tags=["grader"]
A = matrix_with_spectrum([3.0, 2.0, 1.5, 0.5], 6, 8, seed=13)
before_step = np.linalg.svd(A, compute_uv=False)[:4]
s1, u1_a, v1_a = top_singular_triplet(A)
for method, gradient in (("decay", 0.5 * A), ("spectral", 0.5 * s1 * np.outer(u1_a, v1_a))):
    for lr in (0.1, 0.9):  # with lr = 0.9 the spectral step pushes σ₁ below σ₂
        actual = np.linalg.svd(A - lr * gradient, compute_uv=False)[:4]
        guess = returned(singular_values_after_step(before_step, 0.5, lr, method),
                         "predicted", "Exercise 3 (singular_values_after_step)")
        assert guess.shape == actual.shape, (
            f"Exercise 3: expected {actual.shape[0]} values, got shape {guess.shape}")
        assert np.allclose(guess, actual, atol=1e-9), (
            f"Exercise 3 ({method}, lr = {lr}): predicted {np.round(guess, 4)}, the real step "
            f"gives {np.round(actual, 4)}")
print("Exercise 3 passed: decay scales every σᵢ by (1 − ηλ); the penalty only σ₁ (and the "
      "order can change).")


# %% [markdown]
# ```{exercise} The backward pass of spectral normalization
# :label: ex-normalization-backward
#
# Spectral normalization uses $\bar W = W/\sigma_1(W)$. Given $G = \partial L/\partial\bar W$,
# write `normalization_backward(weight, upstream)` returning $\partial L/\partial W$ (exact
# $\sigma_1, u_1, v_1$ by SVD). Hint: $\partial\sigma_1/\partial W = u_1v_1^T$ (section 1). The
# grader checks it with `gradcheck` against $L(W) = \langle W/\sigma_1(W),\, G\rangle$.
# ```

# %% tags=["solution", "hide-input"]
def normalization_backward(weight: np.ndarray, upstream: np.ndarray):
    """dL/dW for W̄ = W/σ₁(W), given upstream = dL/dW̄ (both of the weight's 2-D shape)."""
    grad = None
    ### BEGIN SOLUTION
    left, singular, right = np.linalg.svd(weight, full_matrices=False)
    sigma_1 = singular[0]
    coefficient = float((upstream * weight).sum()) / sigma_1
    grad = (upstream - coefficient * np.outer(left[:, 0], right[0])) / sigma_1
    ### END SOLUTION
    return grad


# %% tags=["grader"]
grader_rng = np.random.default_rng(14)
W_grader, G_grader = grader_rng.standard_normal((5, 7)), grader_rng.standard_normal((5, 7))
analytic = returned(normalization_backward(W_grader, G_grader), "grad",
                    "Exercise 4 (normalization_backward)")


def normalized_loss() -> float:
    return float((W_grader / np.linalg.svd(W_grader, compute_uv=False)[0] * G_grader).sum())


print("Exercise 4 passed:", gradcheck.check_function(
    normalized_loss, W_grader, analytic, owner="Exercise 4 (normalization_backward)",
    tensor="W", tol=1e-6))

# %% [markdown]
# ## Summary
#
# * $\nabla_W\frac{\lambda}{2}\sigma_1(W)^2 = \lambda\sigma_1u_1v_1^T$ wherever
#   $\sigma_1 > \sigma_2$; the penalty has a kink where they meet.
# * The *normalized* power iteration converges like $(\sigma_2/\sigma_1)^{2t}$ (vectors) and
#   $(\sigma_2/\sigma_1)^{4t}$ (σ); one step per SGD step suffices because the vector is kept
#   and the weights move slowly for σ; the gradient term $\lambda\sigma uv^T$ is far less
#   accurate where the top singular values are crowded, so in practice the method presses on
#   the top singular subspace rather than on $\sigma_1$ alone.
# * The printed Algorithm 1 has no normalization: it estimates $1/\sigma_1$, its vectors cannot
#   even be normed after a few hundred steps, and a one-step version of it penalises
#   $\frac{\lambda}{3}\sigma_1^3$.
# * The library's `SpectralNormRegularizer` adds the exact gradient of the true penalty
#   (checked with `gradcheck`) to weights only, never to biases.
# * Weight decay shrinks every singular value, the spectral penalty only the top one, and
#   spectral normalization pins $\sigma_1$ at 1: a soft pressure against a hard constraint.
