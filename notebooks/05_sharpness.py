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
# # 5. Sharpness: the top Hessian eigenvalue
#
# A popular explanation of why large-batch training generalizes worse (Keskar et al., 2017):
# it ends in *sharp* minima, where the loss rises steeply in some direction of parameter
# space. Keskar et al. measured sharpness as the largest rise of the training loss within a
# small box of radius ε around the minimum (their "ε-sharpness", found by a constrained
# maximization), not by an eigenvalue. A closely related local measure, used here as in the
# paper, is the largest eigenvalue $\lambda_{\max}$ of the Hessian of the training loss with
# respect to the parameters. Yoshida & Miyato measured it and found
# that their best-generalizing models, the spectrally regularized ones, had the **largest**
# $\lambda_{\max}$ (their Fig. 3): sharpness did not predict generalization.
#
# This notebook
#
# 1. computes Hessian-vector products by finite differences of exact gradients, and checks
#    them against a Hessian known in closed form;
# 2. finds $\lambda_{\max}$ by power iteration on those products, cross-checked with Lanczos
#    (`scipy.sparse.linalg.eigsh`);
# 3. measures $\lambda_{\max}$ for models trained with and without regularization at two batch
#    sizes, and tests, from the data, whether it tracks the generalization gap;
# 4. shows why sharpness is a slippery measure: rescaling the layers of a ReLU network leaves
#    the function unchanged but moves $\lambda_{\max}$ at will (Dinh et al., 2017);
# 5. ends with exercises and a summary.
#
# **Run time** (full setting, on this project's 2-core CPU): about 25 s on an idle machine (23 s
# measured; 263 s while other jobs loaded it). Set `SPECNORM_NB_QUICK=1` for the quick setting
# the test suite uses.

# %% Parameters
import os

QUICK = os.environ.get("SPECNORM_NB_QUICK", "0") == "1"
SEED = 0
METHODS = ["vanilla", "decay", "spectral"]
WIDTH = 32 if QUICK else 128  # hidden width of the MLP
TRAIN_SIZE = 300 if QUICK else 3000
TEST_SIZE = 300 if QUICK else 2000
BATCH_SIZES = [32, 150] if QUICK else [64, 1000]
EPOCHS = 2 if QUICK else 10
LARGE_BATCH_EPOCHS = 2 if QUICK else 20
HESSIAN_EXAMPLES = 100 if QUICK else 300  # examples the Hessian's loss averages over
HESSIAN_ITERATIONS = 8 if QUICK else 30  # power-iteration steps (each: 2 gradients)
HVP_STEP = 1e-6  # finite-difference step h of the Hessian-vector products (see section 2)
print(f"QUICK={QUICK}: MLP width {WIDTH}, {TRAIN_SIZE} training images, batch sizes "
      f"{BATCH_SIZES}, Hessian on {HESSIAN_EXAMPLES} examples")

# %%
import matplotlib.pyplot as plt
import numpy as np
from scipy.sparse.linalg import eigsh

from specnorm_np import nn
from specnorm_np.metrics import (
    hessian_operator,
    hessian_top_eigenvalue,
    make_hessian_vector_product,
)

rng = np.random.default_rng(SEED)

# %% [markdown]
# ## 1. Hessian-vector products without forming the Hessian
#
# A network with $P$ parameters has a $P\times P$ Hessian: far too big to store. But its product
# with a vector is the directional derivative of the gradient, which two backward passes give:
#
# $$Hv \approx \frac{\nabla L(\theta + hv) - \nabla L(\theta - hv)}{2h}, \qquad \|v\| = 1,$$
#
# with an error of order $h^2$ times the third derivatives of the loss. Those do not vanish even
# where no ReLU switches between the two points: softmax cross-entropy is not quadratic in the
# logits, and the logits are products of weights of different layers. What vanishes there is
# only the much larger error of crossing a kink, where the gradient jumps (section 2).
#
# A check with a known answer: for a linear softmax classifier $z = Wx + b$ with mean
# cross-entropy, the Hessian is $\frac1n\sum_i J_i^T\,(\mathrm{diag}(p_i) - p_ip_i^T)\,J_i$,
# where $p_i$ are the predicted probabilities and $J_i = [I_k\otimes x_i^T,\ I_k]$ is the
# Jacobian of $z_i$ with respect to $(W, b)$. Build the whole Hessian column by column from
# finite-difference products and compare.

# %%
n, d, k = 40, 6, 4
x_small = rng.standard_normal((n, d))
y_small = rng.integers(0, k, n)
linear = nn.Sequential(nn.Linear(d, k, rng=SEED, dtype=np.float64))

logits = linear.forward(x_small)
probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
probabilities /= probabilities.sum(axis=1, keepdims=True)
exact = np.zeros((k * d + k, k * d + k))
for x_i, p_i in zip(x_small, probabilities):
    jacobian = np.hstack([np.kron(np.eye(k), x_i[None, :]), np.eye(k)])  # (k, k·d + k)
    exact += jacobian.T @ (np.diag(p_i) - np.outer(p_i, p_i)) @ jacobian / n

hvp, size = make_hessian_vector_product(linear, x_small, y_small)
by_products = np.column_stack([hvp(column) for column in np.eye(size)])
assert np.allclose(by_products, exact, atol=1e-7), np.abs(by_products - exact).max()
print(f"{size} parameters: finite-difference Hessian matches the closed form to "
      f"{np.abs(by_products - exact).max():.1e}")

top_exact = np.linalg.eigvalsh(exact)[-1]
top_power = hessian_top_eigenvalue(linear, x_small, y_small, iterations=200, tolerance=1e-10)
assert np.isclose(top_power["eigenvalue"], top_exact, rtol=1e-5)
print(f"λ_max: eigvalsh {top_exact:.6f}, power iteration {top_power['eigenvalue']:.6f} "
      f"({top_power['iterations']} products)")

# %% [markdown]
# ## 2. Training the models
#
# Vanilla, weight decay and spectral regularization, each at a small and a large batch size
# (learning rate 10× larger for the large batch, as in the paper), with the library's trainer.
# Then $\lambda_{\max}$ of the *data* loss (without the regularizer) on a fixed set of
# training and of test examples, by power iteration on finite-difference Hessian-vector
# products (the step $h$ is discussed below).

# %%
from specnorm_np.data import DatasetError
from specnorm_np.experiments.compare import build_configs
from specnorm_np.experiments.datasets import DataSpec, load_splits
from specnorm_np.train import train

spec = DataSpec("cifar10", train_size=TRAIN_SIZE, test_size=TEST_SIZE, data_seed=SEED)
try:
    data = load_splits(spec)
except DatasetError as error:
    print("CIFAR-10 is not on this machine, so this notebook uses scikit-learn's 8x8 digits "
          f"(set SPECNORM_DATA to the folder that holds cifar-10-batches-py).\n{error}")
    data = load_splits(DataSpec("digits", train_size=None, test_size=None, data_seed=SEED))
configs = build_configs(METHODS, BATCH_SIZES, [SEED], lr=0.01, epochs=EPOCHS,
                        large_batch_epochs=LARGE_BATCH_EPOCHS, model="mlp", width=WIDTH,
                        input_grad_checkpoints=0, hessian=False)
x_h, y_h = data.x_train[:HESSIAN_EXAMPLES], data.y_train[:HESSIAN_EXAMPLES]
x_ht, y_ht = data.x_test[:HESSIAN_EXAMPLES], data.y_test[:HESSIAN_EXAMPLES]
rows, models = [], {}
for config in configs:
    result = train(config, data, quiet=True)
    models[(config.method, config.batch_size)] = result.model
    last = result.history[-1]
    sharpness = {split: hessian_top_eigenvalue(result.model, x, y, iterations=HESSIAN_ITERATIONS,
                                               seed=SEED, step=HVP_STEP)
                 for split, x, y in (("train", x_h, y_h), ("test", x_ht, y_ht))}
    rows.append({"method": config.method, "batch": config.batch_size,
                 "test_acc": last["test_acc"], "gap": last["gap"],
                 "hessian_train": sharpness["train"]["eigenvalue"],
                 "hessian_test": sharpness["test"]["eigenvalue"],
                 "converged": sharpness["train"]["converged"] and sharpness["test"]["converged"]})
print(f"{'method':>9} {'B':>5} {'test acc':>8} {'gap':>6} {'λ_max train':>11} {'λ_max test':>10}")
for row in rows:
    print(f"{row['method']:>9} {row['batch']:>5} {row['test_acc']:8.3f} {row['gap']:6.3f} "
          f"{row['hessian_train']:11.3f} {row['hessian_test']:10.3f}"
          + ("" if row["converged"] else "  (power iteration not converged)"))

# %% [markdown]
# A second opinion: Lanczos (`eigsh`) on the same Hessian-vector products, for the
# largest-magnitude eigenvalue. This is also where the finite-difference step $h$ matters. A
# ReLU network's gradient is only *piecewise* smooth: if a unit's pre-activation changes sign
# between $\theta - hv$ and $\theta + hv$, the gradient jumps, and the quotient
# $(\nabla L(\theta+hv) - \nabla L(\theta-hv))/2h$ reports a spurious curvature of order
# $1/h$. Lanczos is good at finding exactly such directions. A small step (in float64) makes
# a crossing unlikely, at little cost in round-off; but a network has thousands of units, and
# in a long CIFAR-10 run (README, "Large batch") even $h = 10^{-6}$ gave estimates from −5512
# to +20213. The library's remedy, on by default: **freeze the activation pattern**. The
# Hessian at $\theta$ is that of the network whose ReLU masks and max-pool choices are held at
# their values at $\theta$ (the pattern is constant near almost every $\theta$), and that
# network is smooth in $\theta$, so no step crosses a kink (`freeze_pattern=True`). Below,
# the unfrozen products with a large step next to the frozen ones.

# %%
model = models[("vanilla", BATCH_SIZES[0])]
power = hessian_top_eigenvalue(model, x_h, y_h, iterations=200, tolerance=1e-6,
                               step=HVP_STEP)["largest_magnitude"]
for step, freeze in ((1e-3, False), (1e-3, True), (HVP_STEP, True)):
    lanczos = eigsh(hessian_operator(model, x_h, y_h, step=step, freeze_pattern=freeze), k=1,
                    which="LM", tol=1e-6, return_eigenvectors=False)[0]
    verdict = "agrees" if np.isclose(power, lanczos, rtol=1e-3) else "does NOT agree"
    print(f"h = {step:.0e}, pattern {'frozen' if freeze else 'free'}: largest-magnitude "
          f"eigenvalue by eigsh {lanczos:.5f}, power iteration (h = {HVP_STEP:.0e}, frozen) "
          f"{power:.5f}: {verdict}")
    if freeze:
        assert np.isclose(power, lanczos, rtol=1e-3), (step, power, lanczos)

# %% [markdown]
# ## 3. Does sharpness predict the generalization gap?
#
# The paper's Fig. 3 in our setting: $\lambda_{\max}$ on training and on test examples per
# method and batch size, then the gap against $\lambda_{\max}$ across all runs.

# %%
COLORS = {"vanilla": "tab:blue", "decay": "tab:green", "adversarial": "tab:red",
          "spectral": "c"}
fig, axes = plt.subplots(1, 3, figsize=(15, 4))
width = 0.8 / len(METHODS)
for ax, split in zip(axes[:2], ("train", "test")):
    for j, method in enumerate(METHODS):
        heights = [next(r[f"hessian_{split}"] for r in rows
                        if r["method"] == method and r["batch"] == b) for b in BATCH_SIZES]
        ax.bar(np.arange(len(BATCH_SIZES)) + (j - (len(METHODS) - 1) / 2) * width, heights,
               width, color=COLORS[method], label=method)
    ax.set_xticks(range(len(BATCH_SIZES)), [f"B = {b}" for b in BATCH_SIZES])
    ax.set_ylabel("top Hessian eigenvalue λ_max (loss units / parameter²)")
    ax.set_title(f"λ_max of the mean loss on {split} examples")
    ax.legend(fontsize=8)
for row in rows:
    axes[2].scatter(row["hessian_train"], row["gap"], color=COLORS[row["method"]],
                    marker="o" if row["batch"] == BATCH_SIZES[0] else "s", s=50)
axes[2].scatter([], [], marker="o", color="gray", label=f"B = {BATCH_SIZES[0]}")
axes[2].scatter([], [], marker="s", color="gray", label=f"B = {BATCH_SIZES[1]}")
axes[2].set_xlabel("λ_max on training examples")
axes[2].set_ylabel("generalization gap at the end (train − test accuracy)")
axes[2].set_title("Gap against sharpness, all runs (colours as left)")
axes[2].legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# The claims, tested on these runs (one seed each, so small differences mean little):

# %%
from scipy.stats import pearsonr  # noqa: E402


def value(method: str, batch: int, key: str) -> float:
    return next(r[key] for r in rows if r["method"] == method and r["batch"] == batch)


small, large = BATCH_SIZES
statements = []
vanilla_small = value("vanilla", small, "hessian_train")
vanilla_large = value("vanilla", large, "hessian_train")
statements.append(
    f"Keskar et al. (larger batch, sharper minimum) for vanilla: "
    f"{'holds' if vanilla_large > vanilla_small else 'does not hold'} here (λ_max "
    f"{vanilla_small:.3g} at B={small}, {vanilla_large:.3g} at B={large}).")
for batch in BATCH_SIZES:
    sharpest = max(METHODS, key=lambda m: value(m, batch, "hessian_train"))
    smallest_gap = min(METHODS, key=lambda m: value(m, batch, "gap"))
    statements.append(
        f"B={batch}: the sharpest model is {sharpest}, the smallest gap is {smallest_gap}'s; "
        f"the paper found spectral the sharpest: "
        f"{'agrees' if sharpest == 'spectral' else 'does not agree'}.")
hessians = np.array([r["hessian_train"] for r in rows])
gaps = np.array([r["gap"] for r in rows])
correlation = pearsonr(hessians, gaps)
r, p = correlation.statistic, correlation.pvalue
if p >= 0.05:
    relation = ("no significant correlation in these few runs: they cannot tell whether "
                "sharpness tracks the gap (the paper reports its sharpest models generalizing "
                "best, not an absence of relation)")
elif r > 0:
    relation = "sharper models have larger gaps: sharpness predicts the gap here, unlike the paper"
else:
    relation = ("sharper models have *smaller* gaps, the opposite of the sharp-minimum story, as "
                "with the paper's regularized models")
statements.append(f"Across the {len(rows)} runs, Pearson r(λ_max train, gap) = {r:+.2f} "
                  f"(p = {p:.2g}): {relation}.")
for statement in statements:
    print("•", statement)
if QUICK:
    print("(Quick setting: two epochs on a few hundred images; the statements only show the "
          "mechanics.)")

# %% [markdown]
# ## 4. Why λ_max is slippery: the same function, any sharpness you like
#
# A ReLU is positively homogeneous, $\mathrm{relu}(cz) = c\,\mathrm{relu}(z)$ for $c > 0$. So
# multiplying the first layer's weights and bias by $c$ and dividing the next layer's weights
# by $c$ leaves the network's function, and hence every accuracy and every gap, exactly
# unchanged. The Hessian is not invariant: the second layer's weights became $c$ times
# smaller, so the loss is $c^2$ times more curved in their direction (and the first layer's
# curvature scales by $1/c^2$). This is the paper's explanation in its mildest form: a
# network with small weights is sensitive to *parameter* perturbations even when it is
# insensitive to *input* perturbations; spectral regularization keeps weights small. That
# sharpness measures are not invariant to such reparametrizations, so that a sharp minimum can
# be made flat without changing the function, is the argument of Dinh, Pascanu, Bengio & Bengio
# ("Sharp minima can generalize for deep nets", ICML 2017). Precisely: with $\theta' = S\theta$
# ($S$ diagonal: $c$ on the first layer, $1/c$ on the second layer's weights, 1 elsewhere) the
# loss is $L'(\theta') = L(S^{-1}\theta')$, so $H' = S^{-1}HS^{-1}$, and for any direction $d$
# inside the second layer's weights $d^TH'd = c^2\,d^THd$ (inside the first layer, $c^{-2}$).
# The cell asserts that scaling on the Hessian-vector products.

# %%
import copy  # noqa: E402

reference = model.eval().forward(x_h)
sizes = [p.data.size for p in model.parameters()]
offsets = np.concatenate([[0], np.cumsum(sizes)])
# parameters in order: first Linear (weight, bias), second Linear (weight, bias), ...
probe_second = np.zeros(offsets[-1])
probe_second[offsets[2]:offsets[3]] = rng.standard_normal(sizes[2])
probe_first = np.zeros(offsets[-1])
probe_first[offsets[0]:offsets[1]] = rng.standard_normal(sizes[0])
base_hvp, _ = make_hessian_vector_product(model, x_h, y_h, step=HVP_STEP)
curvature = {name: float(d @ base_hvp(d)) for name, d in (("second", probe_second),
                                                           ("first", probe_first))}
print(f"{'c':>6} {'max |Δ logits|':>15} {'λ_max (train)':>14}")
lambdas = {}
for c in (0.25, 1.0, 4.0):
    rescaled = copy.deepcopy(model)
    first, second = [layer for layer in rescaled if isinstance(layer, nn.Linear)][:2]
    first.weight.data *= c
    first.bias.data *= c
    second.weight.data /= c
    change = float(np.abs(rescaled.eval().forward(x_h) - reference).max())
    assert change < 1e-3 * float(np.abs(reference).max()), change
    lambdas[c] = hessian_top_eigenvalue(rescaled, x_h, y_h, iterations=HESSIAN_ITERATIONS,
                                        seed=SEED, step=HVP_STEP)["eigenvalue"]
    rescaled_hvp, _ = make_hessian_vector_product(rescaled, x_h, y_h, step=HVP_STEP)
    second = float(probe_second @ rescaled_hvp(probe_second)) / curvature["second"]
    first = float(probe_first @ rescaled_hvp(probe_first)) / curvature["first"]
    assert np.isclose(second, c**2, rtol=1e-3) and np.isclose(first, c**-2, rtol=1e-3), (c, second,
                                                                                         first)
    print(f"{c:6.2f} {change:15.2e} {lambdas[c]:14.4f}   curvature along the second layer ×"
          f"{second:.4g} (c² = {c**2:.4g}), along the first ×{first:.4g} (c⁻² = {c**-2:.4g})")
print(f"Same function, λ_max from {min(lambdas.values()):.3g} to {max(lambdas.values()):.3g}.")

# %% [markdown]
# So a comparison of $\lambda_{\max}$ across differently regularized models compares, in
# part, the *scale* of their weights. That is why the paper's observation (regularized models
# sharper, yet better) does not contradict the sensitivity argument of notebook 1, which is
# about inputs and is invariant to this rescaling.

# %% [markdown]
# ## Exercises
#
# Each exercise is a function to complete, followed by a grader cell that checks it. In the
# book the reference solution is collapsed under the exercise; `make exercises` writes a copy of
# this notebook without the solutions to `build/exercises/`, where you write your own code at
# `# YOUR CODE HERE` and run the grader.

# %%
def returned(value, what: str, exercise: str):
    """``value`` as given, or a failure saying that the exercise is not done yet."""
    if value is None:
        raise AssertionError(f"{exercise}: `{what}` is still None. Write your code where it "
                             "says `# YOUR CODE HERE`, run that cell, then this one again.")
    return value


# %% [markdown]
# ```{exercise} A Hessian-vector product from two gradients
# :label: ex-hvp
#
# Write `hessian_vector_product(gradient, theta, v, h)`: the central difference
# $(\nabla L(\theta + hv) - \nabla L(\theta - hv))/(2h)$, where `gradient(theta)` returns
# $\nabla L(\theta)$. The grader uses a cubic loss whose Hessian is known, and a step large
# enough that a one-sided difference would be visibly wrong.
# ```

# %% tags=["solution", "hide-input"]
def hessian_vector_product(gradient, theta: np.ndarray, v: np.ndarray, h: float):
    """H(θ)·v by central differences of the gradient."""
    product = None
    ### BEGIN SOLUTION
    product = (gradient(theta + h * v) - gradient(theta - h * v)) / (2 * h)
    ### END SOLUTION
    return product


# %% tags=["grader"]
grader_rng = np.random.default_rng(51)
A_sym = grader_rng.standard_normal((6, 6))
A_sym = A_sym + A_sym.T
theta_g = grader_rng.standard_normal(6)


def cubic_gradient(theta):  # L(θ) = ½θᵀAθ + Σθᵢ³/3, so ∇L = Aθ + θ², H = A + 2·diag(θ)
    return A_sym @ theta + theta**2


exact_hessian = A_sym + 2 * np.diag(theta_g)
for column in range(6):
    e = np.eye(6)[column]
    got = np.asarray(returned(hessian_vector_product(cubic_gradient, theta_g, e, 1e-2),
                              "product", "Exercise 1 (hessian_vector_product)"), dtype=float)
    assert np.allclose(got, exact_hessian[:, column], atol=1e-8), (
        f"Exercise 1: H·e_{column} is off by {np.abs(got - exact_hessian[:, column]).max():.1e};"
        " a central difference is exact for a cubic loss, a one-sided one is not")
print("Exercise 1 passed: central differences of the gradient give H·v.")


# %% [markdown]
# ```{exercise} The eigenvalue of largest magnitude, by power iteration
# :label: ex-top-eigenvalue
#
# Write `largest_magnitude_eigenvalue(apply, size, iterations)`: power iteration on a
# symmetric operator given as `apply(v) = A v`, from a seeded random unit vector, returning
# the Rayleigh quotient $v^TAv$ of the final unit vector. Keep the *sign*: the Hessian of a
# non-convex loss can have a negative eigenvalue of largest magnitude.
# ```

# %% tags=["solution", "hide-input"]
def largest_magnitude_eigenvalue(apply, size: int, iterations: int):
    """The eigenvalue of largest |λ| of a symmetric operator, signed."""
    eigenvalue = None
    ### BEGIN SOLUTION
    v = np.random.default_rng(0).standard_normal(size)
    v /= np.linalg.norm(v)
    for _ in range(iterations):
        w = apply(v)
        v = w / np.linalg.norm(w)
    eigenvalue = float(v @ apply(v))
    ### END SOLUTION
    return eigenvalue


# %% tags=["grader"]
basis, _ = np.linalg.qr(np.random.default_rng(52).standard_normal((8, 8)))
for spectrum_g in ([5.0, -2.0, 1.0, 0.5, 0.3, -0.1, 0.05, 0.0],
                   [-6.0, 3.0, 2.5, 1.0, -0.5, 0.2, 0.1, 0.0]):
    A_g = (basis * spectrum_g) @ basis.T
    got = returned(largest_magnitude_eigenvalue(lambda v, A_g=A_g: A_g @ v, 8, 200),
                   "eigenvalue", "Exercise 2 (largest_magnitude_eigenvalue)")
    assert np.isclose(float(got), spectrum_g[0], rtol=1e-6), (
        f"Exercise 2: expected {spectrum_g[0]}, got {float(got):.6f} (is the sign kept?)")
print("Exercise 2 passed: power iteration finds the largest-magnitude eigenvalue, signed.")


# %% [markdown]
# ```{exercise} Predict the Hessian after rescaling the layers
# :label: ex-rescaled-hessian
#
# Section 4 multiplied the first layer's parameters by $c$ and divided the second layer's
# weights by $c$. In general, with $\theta' = s\odot\theta$ for a vector of positive scales
# $s$ and the *same function*, write `rescaled_hessian(hessian, scales)` that predicts the
# Hessian at $\theta'$ from the one at $\theta$. The grader measures both on a tiny network,
# with the library's Hessian-vector products, and compares.
# ```

# %% tags=["solution", "hide-input"]
def rescaled_hessian(hessian: np.ndarray, scales: np.ndarray):
    """Hessian of L'(θ') = L(θ'/s) at θ' = s⊙θ, from the Hessian of L at θ."""
    predicted = None
    ### BEGIN SOLUTION
    predicted = hessian / np.outer(scales, scales)
    ### END SOLUTION
    return predicted


# %% tags=["grader"]
tiny_rng = np.random.default_rng(53)
x_tiny, y_tiny = tiny_rng.standard_normal((30, 3)), tiny_rng.integers(0, 2, 30)
tiny = nn.Sequential(nn.Linear(3, 4, rng=54, dtype=np.float64), nn.ReLU(),
                     nn.Linear(4, 2, rng=55, dtype=np.float64))


def full_hessian(net) -> np.ndarray:
    product, size_t = make_hessian_vector_product(net, x_tiny, y_tiny)
    return np.column_stack([product(column) for column in np.eye(size_t)])


c_t = 3.0
rescaled_tiny = copy.deepcopy(tiny)
rescaled_tiny[0].weight.data *= c_t
rescaled_tiny[0].bias.data *= c_t
rescaled_tiny[2].weight.data /= c_t
scale_vector = np.concatenate([np.full(12, c_t), np.full(4, c_t), np.full(8, 1 / c_t),
                               np.ones(2)])  # weight (4×3), bias (4), weight (2×4), bias (2)
measured = full_hessian(rescaled_tiny)
predicted_t = np.asarray(returned(rescaled_hessian(full_hessian(tiny), scale_vector),
                                  "predicted", "Exercise 3 (rescaled_hessian)"), dtype=float)
assert predicted_t.shape == measured.shape, (
    f"Exercise 3: expected a {measured.shape} matrix, got {predicted_t.shape}")
assert np.allclose(predicted_t, measured, atol=1e-6 * np.abs(measured).max()), (
    f"Exercise 3: the prediction is off by {np.abs(predicted_t - measured).max():.2e} "
    f"(entries up to {np.abs(measured).max():.2e}); L'(θ') = L(θ'/s): apply the chain rule twice")
print(f"Exercise 3 passed: λ_max {np.linalg.eigvalsh(full_hessian(tiny))[-1]:.4f} becomes "
      f"{np.linalg.eigvalsh(measured)[-1]:.4f} for the same function, as predicted.")

# %% [markdown]
# ## Summary
#
# * Hessian-vector products come from two gradients,
#   $(\nabla L(\theta+hv) - \nabla L(\theta-hv))/2h$, with an $O(h^2)$ error from third
#   derivatives; freezing the activation pattern removes the far larger error of stepping
#   across a ReLU kink.
# * Power iteration and Lanczos on those products give $\lambda_{\max}$ without forming the
#   Hessian; they agree once the pattern is frozen.
# * Whether $\lambda_{\max}$ tracks the generalization gap is tested on the runs, not assumed;
#   the paper found its best-generalizing (spectral) models the sharpest.
# * $\lambda_{\max}$ is not a property of the function: rescaling layers of a ReLU network
#   changes curvature by $c^{\pm2}$ along those layers while every prediction stays the same
#   (Dinh et al., 2017), whereas the input sensitivity of notebook 1 is unchanged.
