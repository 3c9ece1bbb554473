"""The network's ℓ2 Lipschitz constant: a certified upper bound, and what is measured at data.

For a Sequential f = f_L ∘ … ∘ f_1, ‖f(x) − f(x')‖ ≤ Π_l Lip(f_l)·‖x − x'‖, so the product of
per-layer certified constants is a certified bound of the whole network's Lipschitz constant
L (the model in evaluation mode, in exact arithmetic with its stored weights). The constants:

* Conv2d, Linear (also inside :class:`~specnorm_np.spectral.SpectralNorm`, as W/σ): the
  certified upper bound of :func:`~specnorm_np.spectral.bounds.conv_operator_bounds`; a bias
  does not change a Lipschitz constant.
* BatchNorm (eval): y = s ⊙ x + t with s = γ/√(running_var + eps), a diagonal scaling, exactly
  max |s|. Directly after a Conv2d or Linear it is folded into that layer (the kernel's output
  channels scaled by s), whose norm can be far below the product of the two.
* ReLU: 1; LeakyReLU(a): max(1, |a|); Flatten, Dropout (eval): 1.
* MaxPool2d: √n, n the largest number of windows that contain one pixel (1 for non-overlapping
  windows). Derivation: |max_W x − max_W x'| ≤ max_{a∈W} |x_a − x'_a|, so
  ‖Δy‖² ≤ Σ_windows max_{a∈W} Δ_a² ≤ Σ_windows Σ_{a∈W} Δ_a² = Σ_a n(a)·Δ_a² ≤ n·‖Δx‖².
  It is attained: raise, by δ, a pixel that is the maximum of all n windows containing it.
  (A 3x3 window with stride 1 thus has constant 3, not 1.)
* AvgPool2d: the norm of a one-channel convolution with the kernel 1/(kh·kw) (bounded like a
  conv), at most √(n/(kh·kw)) by Cauchy-Schwarz; GlobalAvgPool2d: exactly 1/√(H·W).

The empirical side, :func:`local_lipschitz`: at a data point x the network is the linear map
J(x) = D_L W_L ⋯ D_1 W_1 (activation pattern held), and σ(J(x)) ≤ L (for a piecewise-linear
network L is the supremum of σ(J(x)) over x). σ(J(x)) is estimated by power iteration on JᵀJ:
J v by a forward pass with every ReLU and max-pool frozen at its pattern at x (the network is
then affine, so f(x + t·v) − f(x) = t·J v holds exactly, not as a finite-difference
approximation) and Jᵀu by the model's own backward pass. Each estimate is a lower bound of
σ(J(x)), so ``measured ≤ σ(J(x)) ≤ L ≤ certified``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from specnorm_np import nn
from specnorm_np.backend import get_array_module, to_numpy
from specnorm_np.ops.im2col import conv_output_hw
from specnorm_np.spectral.bounds import (
    DEFAULT_POWER_ITERATIONS,
    OperatorBounds,
    conv_operator_bounds,
    effective_weight,
)
from specnorm_np.spectral.normalization import SpectralNorm

__all__ = ["LayerBound", "NetworkBound", "lipschitz_upper_bound", "local_lipschitz",
           "max_pool_constant"]


@dataclass
class LayerBound:
    """The interval [lower, upper] of one layer's (or folded pair's) Lipschitz constant.

    ``name`` is the weight's parameter name (``"0.weight"``) or the layer index; ``reshaped_sigma``
    the paper's σ(weight.reshape(out, -1)) for weight layers (None otherwise); ``bounds`` the
    full :class:`OperatorBounds` for weight layers.
    """

    name: str
    description: str
    kind: str
    lower: float
    upper: float
    exact: float | None = None
    reshaped_sigma: float | None = None
    bounds: OperatorBounds | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        row = {"name": self.name, "description": self.description, "kind": self.kind,
               "lower": self.lower, "upper": self.upper, "exact": self.exact,
               "reshaped_sigma": self.reshaped_sigma}
        if self.bounds is not None:
            row.update(gram_upper=self.bounds.gram_upper, lower_method=self.bounds.lower_method,
                       upper_method=self.bounds.upper_method, grid=self.bounds.grid)
        return row


@dataclass
class NetworkBound:
    """Certified Lipschitz bound of a network, its per-layer intervals, and a measured value.

    Attributes
    ----------
    upper : float
        Certified: Π of ``factors``' uppers (BatchNorm folded into the preceding layer).
    layers : list of LayerBound
        Every layer on its own (conv and BatchNorm separately), for reading and plotting.
    factors : list of LayerBound
        What the product runs over (equal to ``layers`` without folding).
    unfolded_upper : float
        Π of ``layers``' uppers: also certified, looser when BatchNorm is folded.
    measured : float or None
        Largest local Lipschitz ratio σ(J(x)) estimated at data points (a lower bound of the
        true constant), when data was given.
    """

    upper: float
    layers: list[LayerBound]
    factors: list[LayerBound]
    unfolded_upper: float
    measured: float | None = None
    measured_examples: int = 0

    def __str__(self) -> str:
        lines = [f"{'layer':<44} {'reshaped σ':>11} {'lower':>11} {'upper':>11}"]
        for row in self.layers:
            sigma = "" if row.reshaped_sigma is None else f"{row.reshaped_sigma:.4g}"
            lines.append(f"{row.description[:44]:<44} {sigma:>11} {row.lower:>11.5g} "
                         f"{row.upper:>11.5g}")
        measured = "not measured" if self.measured is None else (
            f"{self.measured:.5g} (max over {self.measured_examples} points)")
        lines.append(f"measured local Lipschitz {measured} <= true L <= certified "
                     f"{self.upper:.5g} (product of unfolded layers {self.unfolded_upper:.5g})")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"upper": self.upper, "unfolded_upper": self.unfolded_upper,
                "measured": self.measured, "measured_examples": self.measured_examples,
                "layers": [r.to_dict() for r in self.layers],
                "factors": [r.to_dict() for r in self.factors]}


def _leaves(model: nn.Module) -> Iterator[nn.Module]:
    """The layers of a (possibly nested) Sequential in forward order."""
    if isinstance(model, nn.Sequential):
        for layer in model:
            yield from _leaves(layer)
    else:
        yield model


def max_pool_constant(input_hw: Any, kernel_size: Any, stride: Any) -> float:
    """√n with n the largest number of pooling windows that contain one input pixel."""
    counts = []
    for size, k, s in zip(input_hw, kernel_size, stride):
        outputs = (int(size) - k) // s + 1
        per_pixel = np.zeros(int(size), dtype=np.int64)
        for q in range(outputs):
            per_pixel[q * s: q * s + k] += 1
        counts.append(int(per_pixel.max()))
    return math.sqrt(counts[0] * counts[1])


def _weight_geometry(layer: nn.Module) -> tuple[str, Any, Any, Any]:
    """(kind, float64 weight, stride, padding) of a Conv2d / Linear / SpectralNorm(...)."""
    inner = layer.layer if isinstance(layer, SpectralNorm) else layer
    weight = effective_weight(layer)
    if isinstance(inner, nn.Conv2d):
        return "conv", weight, inner.stride, inner.padding
    return "linear", weight, None, None


def _describe(layer: nn.Module, shape: tuple[int, ...]) -> str:
    inner = layer.layer if isinstance(layer, SpectralNorm) else layer
    wrap = "SpectralNorm " if isinstance(layer, SpectralNorm) else ""
    if isinstance(inner, nn.Conv2d):
        (kh, kw), (sh, sw), (ph, pw) = inner.kernel_size, inner.stride, inner.padding
        return (f"{wrap}Conv2d {inner.in_channels}->{inner.out_channels} {kh}x{kw} "
                f"s{sh if sh == sw else (sh, sw)} p{ph if ph == pw else (ph, pw)} "
                f"at {shape[0]}x{shape[1]}")
    return f"{wrap}Linear {inner.weight.data.shape[1]}->{inner.weight.data.shape[0]}"


def _batchnorm_scale(layer: Any) -> Any:
    xp = get_array_module(layer.weight.data)
    variance = layer.running_var.astype(xp.float64)
    return layer.weight.data.astype(xp.float64) / xp.sqrt(variance + layer.eps)


def _weight_bound(weight: Any, kind: str, stride: Any, padding: Any, shape: tuple[int, ...],
                  options: dict[str, Any]) -> OperatorBounds:
    if kind == "conv":
        return conv_operator_bounds(weight, shape[:2], stride, padding, **options)
    return conv_operator_bounds(weight, **{k: v for k, v in options.items() if k != "exact"})


def _out_shape(layer: nn.Module, shape: tuple[int, ...], owner: str) -> tuple[int, ...]:
    inner = layer.layer if isinstance(layer, SpectralNorm) else layer
    if isinstance(inner, nn.Conv2d):
        return (*conv_output_hw(shape[:2], inner.kernel_size, inner.stride, inner.padding,
                                owner=owner), inner.out_channels)
    if isinstance(inner, nn.Linear):
        return (int(inner.weight.data.shape[0]),)
    if isinstance(layer, (nn.MaxPool2d, nn.AvgPool2d)):
        (kh, kw), (sh, sw) = layer.kernel_size, layer.stride
        return ((shape[0] - kh) // sh + 1, (shape[1] - kw) // sw + 1, shape[2])
    if isinstance(layer, nn.GlobalAvgPool2d):
        return (shape[-1],)
    if isinstance(layer, nn.Flatten):
        return (int(np.prod(shape)),)
    return shape


def _free_layer(layer: nn.Module, shape: tuple[int, ...], index: str,
                options: dict[str, Any]) -> LayerBound:
    """The interval of a parameter-free (or BatchNorm) layer's Lipschitz constant."""
    label = f"{type(layer).__name__}"
    if isinstance(layer, (nn.ReLU, nn.Flatten, nn.Dropout)):
        return LayerBound(index, label, type(layer).__name__.lower(), 1.0, 1.0, 1.0)
    if isinstance(layer, nn.LeakyReLU):
        value = max(1.0, abs(layer.negative_slope))
        return LayerBound(index, f"{label}({layer.negative_slope})", "leakyrelu", value, value,
                          value)
    if isinstance(layer, (nn.BatchNorm1d, nn.BatchNorm2d)):
        value = float(get_array_module(layer.weight.data).abs(_batchnorm_scale(layer)).max())
        return LayerBound(index, f"{label} (eval: diagonal scaling)", "batchnorm", value, value,
                          value)
    if isinstance(layer, nn.MaxPool2d):
        value = max_pool_constant(shape[:2], layer.kernel_size, layer.stride)
        return LayerBound(index, f"MaxPool2d {layer.kernel_size[0]}x{layer.kernel_size[1]} "
                          f"s{layer.stride[0]} at {shape[0]}x{shape[1]}", "maxpool", value, value,
                          value)
    if isinstance(layer, nn.AvgPool2d):
        (kh, kw), stride = layer.kernel_size, layer.stride
        kernel = np.full((1, kh, kw, 1), 1.0 / (kh * kw))
        bounds = conv_operator_bounds(kernel, shape[:2], stride, 0, **options)
        closed = math.sqrt(max_pool_constant(shape[:2], (kh, kw), stride) ** 2 / (kh * kw))
        return LayerBound(index, f"AvgPool2d {kh}x{kw} s{stride[0]} at {shape[0]}x{shape[1]}",
                          "avgpool", bounds.lower, min(bounds.upper, closed), bounds.exact)
    if isinstance(layer, nn.GlobalAvgPool2d):
        value = 1.0 / math.sqrt(shape[0] * shape[1])
        return LayerBound(index, f"GlobalAvgPool2d at {shape[0]}x{shape[1]}", "globalavgpool",
                          value, value, value)
    raise ValueError(f"lipschitz_upper_bound: no Lipschitz constant known for {layer.label}; "
                     "expected Conv2d, Linear, SpectralNorm, BatchNorm, ReLU, LeakyReLU, "
                     "MaxPool2d, AvgPool2d, GlobalAvgPool2d, Flatten or Dropout")


def lipschitz_upper_bound(
    model: nn.Module,
    input_hw: Any,
    *,
    x: Any = None,
    fold_batchnorm: bool = True,
    power_iterations: int = DEFAULT_POWER_ITERATIONS,
    gram_iterations: int | None = None,
    exact: bool | str = "auto",
    local_iterations: int = 20,
) -> NetworkBound:
    """Certified ℓ2 Lipschitz bound of a Sequential in evaluation mode (see the module docstring).

    Parameters
    ----------
    model : Sequential
    input_hw : (H, W) or (H, W, C)
        Size of one input image (C is taken from the first layer when omitted).
    x : ndarray (n, H, W, C), optional
        Data points at which :func:`local_lipschitz` measures σ(J(x)) (``measured``).
    fold_batchnorm : bool
        Fold BatchNorm into the preceding Conv2d/Linear for the product (tighter).
    power_iterations, gram_iterations, exact
        Passed to :func:`~specnorm_np.spectral.bounds.conv_operator_bounds` (the Gram
        bound is skipped by default here: it certifies the same number as the SVD bound).
    local_iterations : int
        Power-iteration steps of :func:`local_lipschitz`.

    Returns
    -------
    NetworkBound
    """
    owner = "lipschitz_upper_bound"
    shape = tuple(int(v) for v in input_hw)
    if len(shape) == 2:
        first = next((m for m in _leaves(model) if isinstance(
            m.layer if isinstance(m, SpectralNorm) else m, nn.Conv2d)), None)
        if first is None:
            raise ValueError(f"{owner}: input_hw must be (H, W, C) for a model without a "
                             f"leading Conv2d, got {input_hw!r}")
        inner = first.layer if isinstance(first, SpectralNorm) else first
        shape = (*shape, inner.in_channels)
    if len(shape) != 3:
        raise ValueError(f"{owner}: input_hw must be (H, W) or (H, W, C), got {input_hw!r}")
    options = {"power_iterations": power_iterations, "gram_iterations": gram_iterations,
               "exact": exact}
    leaves = list(_leaves(model))
    layers: list[LayerBound] = []
    factors: list[LayerBound] = []
    position = 0
    while position < len(leaves):
        layer, index = leaves[position], str(position)
        inner = layer.layer if isinstance(layer, SpectralNorm) else layer
        if isinstance(inner, (nn.Conv2d, nn.Linear)):
            kind, weight, stride, padding = _weight_geometry(layer)
            bounds = _weight_bound(weight, kind, stride, padding, shape, options)
            name = next((n for n, p in model.named_parameters() if p is inner.weight), index)
            row = LayerBound(name, _describe(layer, shape), kind, bounds.lower, bounds.upper,
                             bounds.exact, bounds.reshaped_sigma, bounds)
            layers.append(row)
            follower = leaves[position + 1] if position + 1 < len(leaves) else None
            out_shape = _out_shape(layer, shape, owner)
            if fold_batchnorm and isinstance(follower, (nn.BatchNorm1d, nn.BatchNorm2d)):
                layers.append(_free_layer(follower, out_shape, str(position + 1), options))
                scale = _batchnorm_scale(follower)
                folded = weight * scale.reshape((-1,) + (1,) * (weight.ndim - 1))
                fb = _weight_bound(folded, kind, stride, padding, shape, options)
                factors.append(LayerBound(f"{name}+{position + 1}", row.description
                                          + " + BatchNorm folded", kind, fb.lower, fb.upper,
                                          fb.exact, None, fb))
                position += 1
            else:
                factors.append(row)
            shape = out_shape
        else:
            row = _free_layer(layer, shape, index, options)
            layers.append(row)
            factors.append(row)
            shape = _out_shape(layer, shape, owner)
        position += 1
    bound = NetworkBound(upper=math.prod(r.upper for r in factors), layers=layers,
                         factors=factors, unfolded_upper=math.prod(r.upper for r in layers))
    if x is not None:
        values = local_lipschitz(model, x, iterations=local_iterations)
        bound.measured, bound.measured_examples = float(values.max()), int(values.shape[0])
    return bound


def local_lipschitz(model: nn.Module, x: Any, *, iterations: int = 20, seed: int = 0,
                    batch_size: int = 100) -> np.ndarray:
    """Estimates of σ(J(x_i)), the local Lipschitz ratio at each data point (lower bounds).

    Runs on a float64 copy of ``model`` in eval mode. Per example: power iteration on JᵀJ from a
    seeded random unit v, with J v = (f(x + t·v) − f(x))/t through the network frozen at the
    activation pattern of x (``frozen_pattern`` of ReLU, LeakyReLU and MaxPool2d, as
    :func:`specnorm_np.metrics.make_hessian_vector_product` uses it; exact for the frozen,
    affine network; t = max(1, ‖x_i‖)) and Jᵀu by ``backward``. The value returned is
    ‖J v‖ for the final unit v.

    Parameters
    ----------
    model : Module
    x : ndarray (n, H, W, C) (or (n, d) for an MLP)
    iterations : int >= 1
    seed : int
    batch_size : int

    Returns
    -------
    ndarray (n,), float64, host
    """
    if isinstance(iterations, bool) or int(iterations) != iterations or iterations < 1:
        raise ValueError(f"local_lipschitz: iterations must be an int >= 1, got {iterations!r}")
    clone = copy.deepcopy(model).astype(np.float64).eval()
    kinked = [m for m in clone.modules() if hasattr(m, "frozen_pattern")]
    xp = get_array_module(x)
    rng = np.random.default_rng(seed)
    results = []
    for start in range(0, x.shape[0], batch_size):
        xb = x[start:start + batch_size].astype(xp.float64)
        rows = xb.shape[0]
        for layer in kinked:
            layer.frozen_pattern = None
        clone.forward(xb)
        patterns = [layer.pattern() for layer in kinked]
        for layer, pattern in zip(kinked, patterns):
            layer.frozen_pattern = pattern
        base = clone.forward(xb)
        step = xp.maximum(xp.sqrt((xb.reshape(rows, -1) ** 2).sum(axis=1)), 1.0)  # (rows,)
        step_in = step.reshape((rows,) + (1,) * (xb.ndim - 1))
        step_out = step.reshape((rows,) + (1,) * (base.ndim - 1))
        v = _unit_rows(xp, xp.asarray(rng.standard_normal(tuple(xb.shape))))
        for _ in range(int(iterations)):
            jv = (clone.forward(xb + step_in * v) - base) / step_out
            w = clone.backward(_unit_rows(xp, jv))  # Jᵀu, through the frozen pattern's caches
            v = _unit_rows(xp, w)
        jv = (clone.forward(xb + step_in * v) - base) / step_out
        results.append(to_numpy(xp.sqrt((jv.reshape(rows, -1) ** 2).sum(axis=1))))
        for layer in kinked:
            layer.frozen_pattern = None
    return np.concatenate(results).astype(np.float64)


def _unit_rows(xp: Any, array: Any) -> Any:
    """Each row (first axis) of ``array`` divided by its ℓ2 norm (zero rows stay zero)."""
    flat = array.reshape(array.shape[0], -1)
    norms = xp.sqrt((flat**2).sum(axis=1))
    norms = xp.where(norms > 0, norms, 1.0)
    return array / norms.reshape((-1,) + (1,) * (array.ndim - 1))
