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
# # 3. Convolution as a matrix
#
# The paper regularizes convolutions by viewing a kernel with $b$ output channels as a
# $b \times (k_h k_w a)$ matrix and penalising *its* σ. This notebook explains why that matrix
# is natural, and what it is not:
#
# 1. **im2col**: a convolution is a Linear layer applied to every image patch, with the kernel's
#    matrix view as its weight;
# 2. **col2im** is the adjoint (transpose) of im2col, which is why it *adds* (`+=`) overlapping
#    patches, and how the convolution's input gradient is computed;
# 3. the convolution itself is a (big, sparse) matrix acting on whole images; its spectral
#    norm, the true **operator norm**, is not σ of the reshaped kernel. We compute it three
#    ways (power iteration through the layer, the FFT formula for circular padding, the dense
#    matrix) and compare it with the reshaped σ on kernels of a CNN trained on real images.
#
# **Run time** (full setting, on this project's 2-core CPU): about 30 s on an idle machine (27 s
# measured; 80 s while other jobs loaded it). Set `SPECNORM_NB_QUICK=1` for the quick setting
# the test suite uses.

# %% Parameters
import os

QUICK = os.environ.get("SPECNORM_NB_QUICK", "0") == "1"
SEED = 0
TRAIN_SIZE = 500 if QUICK else 2000  # images for the CNN of section 5
EPOCHS = 1 if QUICK else 3
WIDTH = 8 if QUICK else 16  # channels of the first conv block
POWER_STEPS = 100 if QUICK else 200  # power-iteration steps for operator norms
print(f"QUICK={QUICK}: train={TRAIN_SIZE}, epochs={EPOCHS}, width={WIDTH}")

# %%
import matplotlib.pyplot as plt
import numpy as np

from specnorm_np import nn
from specnorm_np.ops import col2im, conv2d_naive, im2col

rng = np.random.default_rng(SEED)
np.set_printoptions(linewidth=110, precision=3, suppress=True)

# %% [markdown]
# ## 1. im2col: one row per patch
#
# Activations are channels-last, (N, H, W, C), and kernels (out, kh, kw, in). Output position
# $(p, q)$ of a convolution reads one kh×kw×in window of the (zero-padded) input. `im2col`
# copies every window into one row of a *patch matrix*, flattened in (kh, kw, in) order. The
# kernel's matrix view `W_mat = kernel.reshape(out, -1)` flattens each output channel's filter
# in the same order, so
#
# $$Y_{\text{mat}} = \text{patches}\; W_{\text{mat}}^T \qquad
#   (N H' W' \times kh\,kw\,in)\cdot(kh\,kw\,in \times out),$$
#
# a Linear layer applied to every patch. On a tiny 4×5 image with 2 channels:

# %%
x = np.arange(1 * 4 * 5 * 2, dtype=np.float64).reshape(1, 4, 5, 2)
kernel = rng.standard_normal((3, 3, 3, 2))  # (out=3, kh=3, kw=3, in=2)
patches = im2col(x, kernel_size=3, stride=1, padding=1)
print("input (N, H, W, C):", x.shape, " patches:", patches.shape,
      " W_mat:", kernel.reshape(3, -1).shape)
print("patch of output position (0, 0): the 3x3x2 window around pixel (0, 0), zero padded")
print(patches[0].reshape(3, 3, 2)[..., 0], "(channel 0)")

y_matrix = (patches @ kernel.reshape(3, -1).T).reshape(1, 4, 5, 3)
layer = nn.Conv2d(2, 3, 3, padding=1, bias=False, dtype=np.float64)
layer.weight.data[...] = kernel
assert np.allclose(y_matrix, conv2d_naive(x, kernel, padding=1))
assert np.allclose(y_matrix, layer.forward(x))
print("patches @ W_matᵀ == loop convolution == nn.Conv2d: yes")

for stride, padding in [(2, 0), (2, 1), ((1, 2), (0, 1))]:
    cols = im2col(x, 3, stride, padding)
    out = conv2d_naive(x, kernel, stride=stride, padding=padding)
    assert np.allclose((cols @ kernel.reshape(3, -1).T).reshape(out.shape), out)
    print(f"stride {stride}, padding {padding}: patches {cols.shape} -> output {out.shape}")

# %% [markdown]
# ## 2. col2im is the adjoint of im2col
#
# im2col is a linear map $P$ from images to patch matrices. Its transpose $P^T$ must satisfy
# $\langle Px, c\rangle = \langle x, P^Tc\rangle$ for all $x$, $c$. $P$ *copies* a pixel into
# every patch that contains it, so $P^T$ must *add up* all the patch entries that came from
# that pixel: that is `col2im`, and the reason it writes with `+=`. With stride 1 and a 3×3
# kernel an interior pixel sits in 9 patches; `col2im(im2col(x))` is therefore not $x$ but $x$
# times that count.
#
# The adjoint is exactly what backpropagation needs: with $Y_{\text{mat}} = PX\,W^T_{\text{mat}}$,
# the gradient with respect to the input is $P^T(dY_{\text{mat}}\,W_{\text{mat}})$ =
# `col2im(dy_mat @ W_mat)`.

# %%
x = rng.standard_normal((2, 6, 7, 3))
for stride, padding in [(1, 1), (2, 0), (2, 1)]:
    cols = im2col(x, 3, stride, padding)
    c = rng.standard_normal(cols.shape)
    lhs = float((cols * c).sum())
    rhs = float((x * col2im(c, x.shape, 3, stride, padding)).sum())
    assert np.isclose(lhs, rhs, rtol=1e-12), (stride, padding)
    print(f"stride {stride}, padding {padding}: ⟨im2col(x), c⟩ = {lhs:+.6f} = "
          f"⟨x, col2im(c)⟩ = {rhs:+.6f}")


def col2im_overwriting(cols, input_shape, k, stride, padding):
    """A WRONG col2im that assigns (=) instead of adding: later patches overwrite earlier."""
    n, h, w, ch = input_shape
    ho, wo = (h + 2 * padding - k) // stride + 1, (w + 2 * padding - k) // stride + 1
    windows = cols.reshape(n, ho, wo, k, k, ch)
    padded = np.zeros((n, h + 2 * padding, w + 2 * padding, ch))
    for i in range(k):
        for j in range(k):
            padded[:, i:i + stride * (ho - 1) + 1:stride, j:j + stride * (wo - 1) + 1:stride] = \
                windows[:, :, :, i, j]
    return padded[:, padding:padding + h, padding:padding + w]


cols = im2col(x, 3, 1, 1)
c = rng.standard_normal(cols.shape)
wrong = float((x * col2im_overwriting(c, x.shape, 3, 1, 1)).sum())
right = float((cols * c).sum())
print(f"with '=' instead of '+=': ⟨x, col2im(c)⟩ = {wrong:+.6f}, not {right:+.6f}")
assert not np.isclose(wrong, right)

# the convolution's input gradient is col2im(dy_mat @ W_mat)
layer = nn.Conv2d(3, 4, 3, stride=2, padding=1, bias=False, dtype=np.float64, rng=SEED)
y = layer.forward(x)
dy = rng.standard_normal(y.shape)
dx_col2im = col2im(dy.reshape(-1, 4) @ layer.weight.data.reshape(4, -1), x.shape, 3, 2, 1)
assert np.allclose(layer.backward(dy), dx_col2im)
print("Conv2d.backward == col2im(dy_mat @ W_mat): yes")

fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
for ax, (stride, padding) in zip(axes, [(1, 1), (2, 0)]):
    ones = np.ones((1, 9, 9, 1))
    counts = col2im(im2col(ones, 3, stride, padding), ones.shape, 3, stride, padding)[0, :, :, 0]
    image = ax.imshow(counts, cmap="viridis", vmin=0)
    ax.set_title(f"3×3 kernel, stride {stride}, padding {padding}")
    ax.set_xlabel("pixel column")
    ax.set_ylabel("pixel row")
    fig.colorbar(image, ax=ax, label="patches containing the pixel")
fig.suptitle("col2im(im2col(1)): how many patches each pixel is copied into")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 3. The convolution as one matrix, and its operator norm
#
# On images of a fixed size the whole convolution is a linear map
# $A: \mathbb{R}^{H W \cdot in} \to \mathbb{R}^{H' W' \cdot out}$, a sparse, block-banded
# matrix (`conv_as_dense_matrix` builds it by convolving the basis images). Its spectral norm
# $\|A\|_2$ bounds how much the *layer* can amplify an image perturbation: the quantity the
# paper's argument is about. The paper instead penalises $\sigma(W_{\text{mat}})$. They are
# related: for stride 1, $A = \sum_t K_t S_t$ over the $T = k_hk_w$ taps ($K_t$ the out×in
# matrix of tap $t$, $S_t$ a shift), which gives
#
# $$\|A\|_2 \le \sqrt{k_h k_w}\;\sigma(W_{\text{mat}}),$$
#
# and for circular padding (on images at least as large as the kernel) also
# $\sigma(W_{\text{mat}}) \le \|A\|_2$: averaged over the Fourier frequencies, the per-frequency
# matrices of section 3 below give exactly $W_{\text{mat}}W_{\text{mat}}^T$. So for a 3×3 kernel
# the true operator norm lies anywhere between $\sigma(W_{\text{mat}})$ and
# $3\,\sigma(W_{\text{mat}})$, and the reshaped σ alone does not tell where. The consequence
# for the paper's argument: $\prod_\ell\sigma(W_{\text{mat},\ell})$ is *not* a Lipschitz bound
# of a CNN. A valid bound is $\prod_\ell\|A_\ell\|_2$, or, from the reshaped σ alone,
# $\prod_\ell\sqrt{k_hk_w}\,\sigma(W_{\text{mat},\ell})$, up to $3^L$ times larger for $L$ 3×3
# layers.
#
# Three independent ways to get $\|A\|_2$:
#
# * **dense matrix** + SVD (small images only);
# * **power iteration** through the layer's forward pass and its adjoint, the input-gradient
#   pass (`conv_operator_norm`), any size, stride and padding;
# * for **circular** padding and stride 1, the 2-D FFT of the kernel: the operator is
#   block-diagonalised by the Fourier transform and its singular values are those of one small
#   out×in matrix per frequency (Sedghi, Gupta & Long, 2019), `conv_singular_values_fft`.

# %%
from specnorm_np.spectral import (
    conv_as_dense_matrix,
    conv_as_linear_operator,
    conv_operator_norm,
    conv_singular_values_fft,
)

kernel = rng.standard_normal((4, 3, 3, 3))
hw = (8, 8)
dense = conv_as_dense_matrix(kernel, hw, stride=1, padding=1)
image = rng.standard_normal((1, *hw, 3))
assert np.allclose(dense @ image.reshape(-1), conv2d_naive(image, kernel, padding=1).reshape(-1))
print(f"dense matrix of a 3x3 conv, 3->4 channels, on 8x8 images: {dense.shape}, "
      f"{np.mean(dense != 0):.1%} non-zero")

sigma_matrix = np.linalg.svd(kernel.reshape(4, -1), compute_uv=False)[0]
singular_zero = np.linalg.svd(dense, compute_uv=False)
power_zero = conv_operator_norm(kernel, hw, stride=1, padding=1, iterations=2000)
circular = conv_as_dense_matrix(kernel, hw, boundary="circular")
singular_circular = np.linalg.svd(circular, compute_uv=False)
singular_fft = conv_singular_values_fft(kernel, hw)

assert np.isclose(power_zero, singular_zero[0], rtol=1e-6)
assert np.allclose(singular_fft, singular_circular, rtol=1e-9, atol=1e-9)
# σ(W_mat) ≤ ‖A_circular‖ ≤ 3·σ(W_mat) holds by the algebra above; for this random kernel the
# reshaped σ underestimates the operator norm clearly (a claim that could be false):
assert singular_circular[0] > 1.2 * sigma_matrix and singular_zero[0] > 1.2 * sigma_matrix
print(f"σ(W_mat) = {sigma_matrix:.4f}; zero padding: dense SVD {singular_zero[0]:.4f}, power "
      f"iteration {power_zero:.4f}; circular: dense SVD {singular_circular[0]:.4f}, "
      f"FFT {singular_fft[0]:.4f}; bound √9·σ(W_mat) = {3 * sigma_matrix:.4f}")

fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
axes[0].spy(dense[:64, :64], markersize=1.5)
axes[0].set_title("top-left 64×64 block of A (zero padding)")
axes[0].set_xlabel("input index (row, col, channel flattened)")
axes[0].set_ylabel("output index")
axes[1].plot(singular_zero, label="zero padding (dense SVD)")
axes[1].plot(singular_fft, "--", label="circular padding (FFT)")
axes[1].axhline(sigma_matrix, color="k", ls=":", label="σ(W_mat), the paper's σ")
axes[1].axhline(3 * sigma_matrix, color="tab:red", ls=":", label="√(kh·kw)·σ(W_mat)")
axes[1].set_xlabel("index (descending)")
axes[1].set_ylabel("singular value of the convolution")
axes[1].set_title("All singular values of one conv on 8×8 images")
axes[1].legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 4. The interval: a certified upper bound next to the power iteration's lower bound
#
# The reshaped σ is **neither bound** of the zero-padded operator norm. It is usually far below
# ‖A‖ (the taps add up coherently at some frequency), but on small inputs, where most taps only
# ever see padding, it can be above: on a 1×1 input a 3×3 conv with padding 1 uses only its
# centre tap, so ‖A‖ = σ(K_centre) ≤ σ(W_mat). Power iteration gives a lower bound with a
# witness vector; for a *certified* upper bound we embed the layer in a circular convolution:
#
# * **circular embedding.** Put the H×W input at offset (p_h, p_w) on a periodic grid of
#   N_h = H + p_h rows (N_w = W + p_w columns; rounded up to a multiple of the stride). No data
#   pixel then wraps into a padding position that a window reads, so the zero-padded conv is a
#   *restriction* of the circular one, A = P·C·E, and ‖A‖ ≤ ‖C‖
#   (`specnorm_np.spectral.bounds.circular_grid` has the proof, and shows the grid is the
#   smallest that works);
# * **exact per frequency.** ‖C‖ is the largest σ of one small matrix per output frequency (the
#   2-D DFT of the kernel); with stride s the s² input frequencies that alias onto one output
#   frequency are grouped into one out × (s²·in) matrix (polyphase), so strided layers stay tight;
# * **the certificate.** `conv_operator_bounds` returns [lower, upper] with a documented round-off
#   margin; Gram iteration (Delattre et al. 2023) gives a second certified upper bound without an
#   SVD.

# %%
from specnorm_np.spectral import SpectralNorm, conv_operator_bounds
from specnorm_np.spectral.bounds import circular_grid, frequency_blocks

# reshaped σ above the true norm: a 1x1 input sees only the centre tap
kernel = rng.standard_normal((8, 3, 3, 8))
tiny = conv_operator_bounds(kernel, (1, 1), 1, 1, exact=True)
sigma_matrix = np.linalg.svd(kernel.reshape(8, -1), compute_uv=False)[0]
assert tiny.exact < sigma_matrix
# ... and below it at 8x8
small = conv_operator_bounds(kernel, (8, 8), 1, 1, exact=True)
assert small.lower > sigma_matrix
print(f"σ(W_mat) = {sigma_matrix:.3f}; ‖A‖ on 1x1 inputs {tiny.exact:.3f} (below it), on 8x8 "
      f"inputs in [{small.lower:.3f}, {small.upper:.3f}] (above it)")

# the circular bound on the smallest grid, against the dense SVD of the zero-padded conv
hw, pad = (6, 5), (1, 1)
grid = circular_grid(hw, 1, pad)
blocks = frequency_blocks(kernel, grid, 1)
top_block = np.linalg.svd(blocks, compute_uv=False)[:, 0].max()
exact_zero = np.linalg.svd(conv_as_dense_matrix(kernel, hw, 1, pad), compute_uv=False)[0]
assert exact_zero <= top_block
print(f"grid {grid} for a {hw} input with padding {pad}: ‖A‖ = {exact_zero:.4f} <= ‖C‖ = "
      f"{top_block:.4f}")

# %% [markdown]
# How tight is the interval? Random 16→16 3×3 kernels with padding 1 (the models' layers),
# stride 1 and 2, at growing input sizes; the exact norm by dense SVD where it fits.

# %%
sizes = (8, 12) if QUICK else (8, 12, 16, 24, 32)
table = []
for stride in (1, 2):
    for size in sizes:
        kernel = rng.standard_normal((16, 3, 3, 16)) / 12.0
        bounds = conv_operator_bounds(kernel, (size, size), stride, 1, exact=size <= 8)
        if bounds.exact is not None:
            assert bounds.lower <= bounds.exact <= bounds.upper
        assert bounds.gram_upper >= bounds.upper * (1 - 1e-9)
        table.append((stride, size, bounds.reshaped_sigma, bounds.lower, bounds.upper,
                      bounds.exact))
        print(f"stride {stride}, {size:>2}x{size:<2}: reshaped σ {bounds.reshaped_sigma:.3f}, "
              f"‖A‖ in [{bounds.lower:.4f}, {bounds.upper:.4f}] (width "
              f"{bounds.upper / bounds.lower - 1:.2%})"
              + ("" if bounds.exact is None else f", dense SVD {bounds.exact:.4f}"))
widths = {s: [r[4] / r[3] - 1 for r in table if r[0] == s] for s in (1, 2)}
assert widths[1][-1] < widths[1][0]  # the boundary effect shrinks as the input grows

fig, ax = plt.subplots(figsize=(6, 3.2))
for stride, marker in ((1, "o-"), (2, "s--")):
    ax.plot(sizes, np.array(widths[stride]) * 100, marker, label=f"stride {stride}")
ax.set(xlabel="input size H = W", ylabel="upper / lower − 1 (%)",
       title="Width of the certified interval, 3×3 kernels, padding 1")
ax.legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# The certificate settles a question users of spectral normalization keep asking (PyTorch
# issue #99149): dividing a kernel by its reshaped σ does **not** make the convolution
# 1-Lipschitz. The certified *lower* bound below is a proof, with a witness image.

# %%
conv = nn.Conv2d(16, 16, 7, padding=3, rng=SEED, dtype=np.float64)
normalized_layer = SpectralNorm(conv, power_iterations=50)
normalized_layer.forward(rng.standard_normal((2, 12, 12, 16)))  # converges u, v
normalized_layer.eval()
bounds = conv_operator_bounds(normalized_layer, power_iterations=POWER_STEPS)
witness = bounds.witness
gain = np.linalg.norm(normalized_layer.forward(witness)
                      - normalized_layer.forward(np.zeros_like(witness)))
assert abs(bounds.reshaped_sigma - 1) < 1e-3 and bounds.lower > 1.3
assert gain >= bounds.lower  # the witness really is amplified that much by the layer
print(f"SpectralNorm'd 7x7 conv at 12x12: reshaped σ = {bounds.reshaped_sigma:.4f}, true norm in "
      f"[{bounds.lower:.3f}, {bounds.upper:.3f}]: the layer amplifies its witness image "
      f"{gain:.3f}×")

# %% [markdown]
# ## 5. On kernels of a trained CNN
#
# Random kernels are one thing; what about kernels that learnt image features? We train the
# library's small VGG-style CNN on CIFAR-10 (or on digits when CIFAR-10 is absent), with and
# without the spectral penalty, and compare, layer by layer, at the layer's real input size:
#
# * `σ(W_mat)`, the paper's reshaped σ;
# * the operator norm by power iteration (zero padding, as the layer computes), with
#   `POWER_STEPS` steps: a lower bound that approaches ‖A‖ slowly, since the top singular
#   values of a convolution are crowded together (the table shows how close it got);
# * the same by `scipy.sparse.linalg.svds` (Lanczos) on `conv_as_linear_operator`, an
#   independent algorithm;
# * the FFT operator norm of the circular convolution on the padded size, an upper bound for the
#   zero-padded one (a zero-padded convolution is a restriction of a circular one);
# * the bound $\sqrt{k_hk_w}\,\sigma(W_{\text{mat}})$.

# %%
from scipy.sparse.linalg import svds

from specnorm_np.data import DatasetError
from specnorm_np.experiments.datasets import DataSpec, load_splits
from specnorm_np.train import TrainConfig, train

try:
    data = load_splits(DataSpec("cifar10", train_size=TRAIN_SIZE, test_size=1000, data_seed=SEED))
except DatasetError as error:
    print("CIFAR-10 is not on this machine, so this notebook uses scikit-learn's 8x8 digits "
          f"(set SPECNORM_DATA to the folder that holds cifar-10-batches-py).\n{error}")
    data = load_splits(DataSpec("digits", train_size=None, test_size=None, data_seed=SEED))
DATASET = data.name

models = {}
for method in ("vanilla", "spectral"):
    config = TrainConfig(method=method, model="vgg", width=WIDTH, epochs=EPOCHS, batch_size=64,
                         input_grad_checkpoints=0, hessian=False, seed=SEED)
    result = train(config, data, quiet=True)
    models[method] = result.model
    last = result.history[-1]
    print(f"{method:>8}: train accuracy {last['train_acc']:.3f}, test accuracy "
          f"{last['test_acc']:.3f} after {EPOCHS} epochs on {len(data.y_train)} {DATASET} images")

# %%
rows = []
for method, model in models.items():
    model.eval().forward(data.x_test[:2])  # records every conv layer's input size
    for index, layer in enumerate(model):
        if not isinstance(layer, nn.Conv2d):
            continue
        kernel = layer.weight.data.astype(np.float64)
        (kh, kw), (ph, pw) = layer.kernel_size, layer.padding
        sigma_matrix = np.linalg.svd(kernel.reshape(kernel.shape[0], -1), compute_uv=False)[0]
        power = conv_operator_norm(kernel, layer.input_hw, layer.stride, layer.padding,
                                   iterations=POWER_STEPS)
        operator = conv_as_linear_operator(kernel, layer.input_hw, layer.stride, layer.padding)
        lanczos = svds(operator, k=1, return_singular_vectors=False, random_state=SEED)[0]
        padded_hw = (layer.input_hw[0] + 2 * ph, layer.input_hw[1] + 2 * pw)
        fft_circular = conv_singular_values_fft(kernel, padded_hw)[0]
        bound = np.sqrt(kh * kw) * sigma_matrix
        # the power iteration approaches ‖A‖ from below; conv spectra are crowded at the top,
        # so it converges slowly: demand agreement with Lanczos to 3%
        assert lanczos * 0.97 <= power <= lanczos * (1 + 1e-9), (method, index, power, lanczos)
        # (power ≤ √(kh·kw)·σ(W_mat) and Lanczos ≤ the circular FFT norm hold by the algebra)
        rows.append((method, f"{index}: {kernel.shape[3]}→{kernel.shape[0]} @ "
                     f"{layer.input_hw[0]}×{layer.input_hw[1]}", sigma_matrix, power, lanczos,
                     fft_circular, bound))

print(f"{'method':>8} {'layer':>20} {'σ(W_mat)':>9} {'‖A‖ power':>10} {'‖A‖ svds':>9} "
      f"{'FFT circ.':>9} {'3·σ(W_mat)':>10} {'‖A‖/σ(W_mat)':>12}")
for method, name, sigma_matrix, power, lanczos, fft_circular, bound in rows:
    print(f"{method:>8} {name:>20} {sigma_matrix:9.3f} {power:10.3f} {lanczos:9.3f} "
          f"{fft_circular:9.3f} {bound:10.3f} {power / sigma_matrix:12.2f}")

# %%
fig, ax = plt.subplots(figsize=(7, 3.6))
for offset, (method, color) in enumerate((("vanilla", "tab:blue"), ("spectral", "tab:cyan"))):
    mine = [r for r in rows if r[0] == method]
    positions = np.arange(len(mine)) + 0.2 * (2 * offset - 1)
    ax.bar(positions, [r[3] / r[2] for r in mine], width=0.4, color=color, label=method)
ax.axhline(3.0, color="tab:red", ls=":", label="bound √(kh·kw) = 3")
ax.axhline(1.0, color="k", ls=":", lw=1)
ax.set_xticks(range(len(mine)), [r[1] for r in mine], rotation=15, fontsize=8)
ax.set_xlabel("conv layer: channels @ input size")
ax.set_ylabel("‖A‖₂ / σ(W_mat)")
ax.set_title(f"Operator norm over the paper's σ, trained on {DATASET}")
ax.legend(fontsize=8)
plt.tight_layout()
plt.show()

ratios = np.array([r[3] / r[2] for r in rows])
print(f"Across these trained conv layers the true operator norm is {ratios.min():.2f}× to "
      f"{ratios.max():.2f}× the reshaped σ: penalising σ(W_mat) controls ‖A‖ only up to this "
      "layer-dependent factor (never more than √(kh·kw) = 3).")

# %% [markdown]
# The library's regularizer can also penalise the true operator norm directly:
# `SpectralNormRegularizer(mode="operator")` runs its persistent power iteration through each
# conv layer's forward and adjoint at the layer's input size (the training method
# `spectral-operator`). Notebook 4 compares the paper's method with the baselines.

# %% [markdown]
# ## 6. BatchNorm makes the kernel's scale meaningless
#
# In the `vgg-bn` model every convolution is followed by BatchNorm. In training mode BatchNorm
# subtracts each channel's batch mean and divides by its batch standard deviation, so scaling
# the kernel before it by $c > 0$ scales the conv output, its mean and its standard deviation
# by $c$, and changes nothing after the normalization (up to BatchNorm's ε):
#
# $$\mathrm{BN}(c\,A x) = \mathrm{BN}(A x), \qquad
#   \sigma(c\,W_{\text{mat}}) = c\,\sigma(W_{\text{mat}}).$$
#
# The function is unchanged while the penalty $\frac{\lambda}{2}\sigma^2$ scales by $c^2$. So for
# a conv layer before BatchNorm the penalty does not constrain what the network computes (the
# sensitivity of conv + BN depends on $\gamma$ and on the batch statistics, not on the kernel's
# scale): the optimizer can satisfy it by shrinking the kernel without any change in the
# function. What it does change is the *training dynamics*. Scale invariance means the loss
# gradient is orthogonal to the kernel, $\langle\nabla_K L, K\rangle = 0$, and shrinks like $1/c$,
# so a smaller kernel takes relatively larger steps: with BatchNorm the penalty acts on the
# effective learning rate, much as weight decay does (van Laarhoven, 2017). The cell checks all
# three statements with the library's layers.

# %%
bn_rng = np.random.default_rng(SEED + 5)
x_bn = bn_rng.standard_normal((8, 6, 6, 3))
upstream = bn_rng.standard_normal((8, 6, 6, 4))
conv_bn = nn.Conv2d(3, 4, 3, padding=1, bias=False, rng=SEED, dtype=np.float64)
batch_norm = nn.BatchNorm2d(4, dtype=np.float64)
kernel_0 = conv_bn.weight.data.copy()
outputs, gradients = {}, {}
for c in (1.0, 0.5, 4.0):
    conv_bn.weight.data[...] = c * kernel_0
    outputs[c] = batch_norm.forward(conv_bn.forward(x_bn))  # training mode: batch statistics
    conv_bn.backward(batch_norm.backward(upstream))
    gradients[c] = conv_bn.weight.grad.copy()
    sigma_c = np.linalg.svd(conv_bn.weight.data.reshape(4, -1), compute_uv=False)[0]
    cosine = float((gradients[c] * conv_bn.weight.data).sum()
                   / (np.linalg.norm(gradients[c]) * np.linalg.norm(conv_bn.weight.data)))
    print(f"c = {c}: σ(W_mat) = {sigma_c:.3f}, max |output − output at c = 1| = "
          f"{np.abs(outputs[c] - outputs.get(1.0, outputs[c])).max():.1e}, "
          f"‖∇_K L‖ = {np.linalg.norm(gradients[c]):.4f}, cos(∇_K L, K) = {cosine:+.1e}")
    assert abs(cosine) < 1e-4, "the loss gradient is orthogonal to the kernel (up to ε)"
for c in (0.5, 4.0):
    assert np.allclose(outputs[c], outputs[1.0], atol=1e-3), c  # same function
    ratio = np.linalg.norm(gradients[c]) / np.linalg.norm(gradients[1.0])
    assert np.isclose(ratio, 1 / c, rtol=1e-3), (c, ratio)  # gradient ∝ 1/c

# %% [markdown]
# ## Exercises
#
# Each exercise is a function to complete, followed by a grader cell that checks it. In the
# book the reference solution is collapsed under the exercise; `make exercises` writes a copy of
# this notebook without the solutions to `build/exercises/`, where you write your own code at
# `# YOUR CODE HERE` and run the grader. Exercises 2 and 3 are backward passes: their grader is
# the library's `gradcheck.check_function`.

# %%
from specnorm_np import gradcheck


def returned(value, what: str, exercise: str) -> np.ndarray:
    """``value`` as a float64 array, or a failure saying that the exercise is not done yet."""
    if value is None:
        raise AssertionError(f"{exercise}: `{what}` is still None. Write your code where it "
                             "says `# YOUR CODE HERE`, run that cell, then this one again.")
    return np.asarray(value, dtype=np.float64)


# %% [markdown]
# ```{exercise} col2im, the adjoint of im2col
# :label: ex-col2im
#
# Write `my_col2im(cols, input_shape, k, stride, padding)` for a square k×k kernel:
# the transpose of `im2col(x, k, stride, padding)`, mapping a patch matrix of shape
# (N·H'·W', k·k·C) back to an image batch of shape `input_shape` = (N, H, W, C). The grader
# checks $\langle \text{im2col}(x), c\rangle = \langle x, \text{my\_col2im}(c)\rangle$ for
# several strides and paddings (section 2 says why `+=`).
# ```

# %% tags=["solution", "hide-input"]
def my_col2im(cols: np.ndarray, input_shape: tuple, k: int, stride: int, padding: int):
    """Adjoint of im2col: (N·H'·W', k·k·C) -> (N, H, W, C), overlapping entries summed."""
    image = None
    ### BEGIN SOLUTION
    n, h, w, ch = input_shape
    ho, wo = (h + 2 * padding - k) // stride + 1, (w + 2 * padding - k) // stride + 1
    windows = cols.reshape(n, ho, wo, k, k, ch)
    padded = np.zeros((n, h + 2 * padding, w + 2 * padding, ch))
    for i in range(k):
        for j in range(k):
            padded[:, i:i + stride * (ho - 1) + 1:stride,
                   j:j + stride * (wo - 1) + 1:stride] += windows[:, :, :, i, j]
    image = padded[:, padding:padding + h, padding:padding + w]
    ### END SOLUTION
    return image


# %% tags=["grader"]
grader_rng = np.random.default_rng(31)
x_grader = grader_rng.standard_normal((2, 7, 6, 3))
for k_g, stride_g, padding_g in [(3, 1, 1), (3, 2, 0), (2, 2, 1), (3, 2, 1)]:
    patches_g = im2col(x_grader, k_g, stride_g, padding_g)
    c_g = grader_rng.standard_normal(patches_g.shape)
    back = returned(my_col2im(c_g, x_grader.shape, k_g, stride_g, padding_g), "image",
                    "Exercise 1 (my_col2im)")
    assert back.shape == x_grader.shape, (
        f"Exercise 1: expected shape {x_grader.shape}, got {back.shape}")
    lhs, rhs = float((patches_g * c_g).sum()), float((x_grader * back).sum())
    assert np.isclose(lhs, rhs, rtol=1e-10), (
        f"Exercise 1 (k={k_g}, stride={stride_g}, padding={padding_g}): ⟨im2col(x), c⟩ = "
        f"{lhs:.6f} but ⟨x, my_col2im(c)⟩ = {rhs:.6f}. Overlapping patches must add up.")
print("Exercise 1 passed: my_col2im is the adjoint of im2col for every stride and padding.")


# %% [markdown]
# ```{exercise} Max-pool backward
# :label: ex-maxpool-backward
#
# Write `maxpool_backward(x, dy, k, stride)` for a channels-last max-pool with k×k windows:
# route each upstream entry of `dy` (N, H', W', C) to the position of its window's maximum in
# `x` (N, H, W, C), and *add* where windows overlap (stride < k). The grader compares with
# central differences of $\langle \text{MaxPool2d}(x), dy\rangle$, on inputs without ties.
# ```

# %% tags=["solution", "hide-input"]
def maxpool_backward(x: np.ndarray, dy: np.ndarray, k: int, stride: int):
    """dL/dx of a k×k max-pool with the given stride, shape of ``x``."""
    dx = None
    ### BEGIN SOLUTION
    n, h, w, ch = x.shape
    ho, wo = dy.shape[1], dy.shape[2]
    dx = np.zeros_like(x)
    for p in range(ho):
        for q in range(wo):
            window = x[:, p * stride:p * stride + k, q * stride:q * stride + k, :]
            flat = window.reshape(n, k * k, ch)
            best = flat.argmax(axis=1)  # (n, ch)
            rows, cols = np.unravel_index(best, (k, k))
            for b in range(n):
                for c in range(ch):
                    dx[b, p * stride + rows[b, c], q * stride + cols[b, c], c] += dy[b, p, q, c]
    ### END SOLUTION
    return dx


# %% tags=["grader"]
for k_g, stride_g in [(2, 2), (3, 2)]:
    pool = nn.MaxPool2d(k_g, stride=stride_g)
    x_pool = np.random.default_rng(32).permutation(2 * 7 * 7 * 3).reshape(2, 7, 7, 3) / 10.0
    dy_pool = np.random.default_rng(33).standard_normal(pool.forward(x_pool).shape)
    dx_student = returned(maxpool_backward(x_pool, dy_pool, k_g, stride_g), "dx",
                          "Exercise 2 (maxpool_backward)")

    def pool_loss(pool=pool, x_pool=x_pool, dy_pool=dy_pool) -> float:
        return float((pool.forward(x_pool) * dy_pool).sum())

    print("Exercise 2:", gradcheck.check_function(
        pool_loss, x_pool, dx_student, owner=f"Exercise 2 (maxpool_backward, k={k_g}, "
        f"stride={stride_g})", tensor="x", eps=1e-3))
print("Exercise 2 passed: non-overlapping and overlapping windows.")


# %% [markdown]
# ```{exercise} BatchNorm backward (training mode)
# :label: ex-batchnorm-backward
#
# In training mode `BatchNorm2d` computes, per channel over the N·H·W positions,
# $\hat x = (x-\mu)/\sqrt{\mathrm{var}+\varepsilon}$ and $y = \gamma\hat x + \beta$ (biased
# variance). Write `batchnorm_backward(x, gamma, dy, eps)` returning `(dx, dgamma, dbeta)`.
# Remember that μ and var depend on x. The grader checks all three with `gradcheck`.
# ```

# %% tags=["solution", "hide-input"]
def batchnorm_backward(x: np.ndarray, gamma: np.ndarray, dy: np.ndarray, eps: float):
    """Gradients of a training-mode BatchNorm over axes (N, H, W) of channels-last ``x``."""
    dx = dgamma = dbeta = None
    ### BEGIN SOLUTION
    axes = (0, 1, 2)
    mean = x.mean(axis=axes)
    inv_std = 1.0 / np.sqrt(x.var(axis=axes) + eps)
    x_hat = (x - mean) * inv_std
    dbeta = dy.sum(axis=axes)
    dgamma = (dy * x_hat).sum(axis=axes)
    dx_hat = dy * gamma
    dx = inv_std * (dx_hat - dx_hat.mean(axis=axes) - x_hat * (dx_hat * x_hat).mean(axis=axes))
    ### END SOLUTION
    return dx, dgamma, dbeta


# %% tags=["grader"]
grader_rng = np.random.default_rng(34)
x_bn_g = grader_rng.standard_normal((4, 3, 5, 2)) * 2 + 1
gamma_g, beta_g = grader_rng.standard_normal(2), grader_rng.standard_normal(2)
dy_bn_g = grader_rng.standard_normal(x_bn_g.shape)


def batchnorm_loss() -> float:
    mean, var = x_bn_g.mean(axis=(0, 1, 2)), x_bn_g.var(axis=(0, 1, 2))
    y_bn = gamma_g * (x_bn_g - mean) / np.sqrt(var + 1e-5) + beta_g
    return float((y_bn * dy_bn_g).sum())


names_bn = ("dx", "dgamma", "dbeta")
result_bn = batchnorm_backward(x_bn_g, gamma_g, dy_bn_g, 1e-5)
for name_bn, value_bn, wrt in zip(names_bn, result_bn, (x_bn_g, gamma_g, beta_g)):
    analytic_bn = returned(value_bn, name_bn, "Exercise 3 (batchnorm_backward)")
    print("Exercise 3:", gradcheck.check_function(
        batchnorm_loss, wrt, analytic_bn.reshape(wrt.shape),
        owner="Exercise 3 (batchnorm_backward)", tensor=name_bn, tol=1e-6))
print("Exercise 3 passed: dx, dγ and dβ of training-mode BatchNorm.")

# %% [markdown]
# ## Summary
#
# * A convolution is a Linear layer applied to every patch: `im2col(x) @ W_matᵀ`, with the
#   paper's matrix view `W_mat = kernel.reshape(out, -1)` as the weight.
# * `col2im` is the adjoint of `im2col` (it adds overlapping patches), and the convolution's
#   input gradient is `col2im(dy_mat @ W_mat)`.
# * The convolution on whole images is one big matrix $A$; its spectral norm lies between
#   $\sigma(W_{\text{mat}})$ and $\sqrt{k_hk_w}\,\sigma(W_{\text{mat}})$ (circular padding), so the
#   product of the reshaped σ is not a Lipschitz bound of a CNN. Power iteration through the
#   layer, Lanczos, and the FFT (circular padding) give $\|A\|_2$ itself; on the trained kernels
#   here it is clearly larger than the reshaped σ (the table of section 4).
# * Before BatchNorm the kernel's scale does not change the function, so a penalty on its σ
#   acts on the training dynamics (the effective step size) rather than on the sensitivity.
