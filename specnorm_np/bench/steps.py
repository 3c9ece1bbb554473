"""One training step and one inference pass, for a specnorm_np model and a PyTorch model.

A training step is the whole of what a training loop does per batch::

    logits = model.forward(x)                      # forward
    loss, dlogits = SoftmaxCrossEntropy()(logits, y)  # loss
    regularizer.stage(model)                       # spectral norm regularizer (λ = 0.01): the
                                                   # power iteration, before the backward pass
    model.backward_weights(dlogits)                # backward: fills every Parameter.grad (Linear
                                                   # layers fold in λσuvᵀ); no dL/dx of the
                                                   # images, which PyTorch does not compute either
    regularizer.add_grad(model)                    # the remaining λσuvᵀ terms (convolutions)
    optimizer.step()                               # SGD, Nesterov momentum 0.9

The PyTorch side does the same work: ``loss.backward()``, then the same one-step power
iteration per weight matrix (:class:`TorchSpectralRegularizer`, two ``mv`` and an in-place
``addr_``), then ``torch.optim.SGD`` with Nesterov momentum. Each ``train_step`` returns the
seconds spent in each phase ("regularizer" is the time inside the regularizer's own calls; part
of its cost, the folded rank-one rows, is inside "backward", which is why the runner measures
the regularizer's share by ablation).

While the library's regularizer or optimizer is not available (during development), the NumPy
side says so in :attr:`NumpyTrainer.notes`: a missing regularizer is skipped on *both* sides (so
the ratio stays fair), a missing optimizer is replaced by :class:`_FallbackSGD`.
"""

from __future__ import annotations

import importlib
import time
from typing import Any

import numpy as np

from specnorm_np.bench.networks import INPUT_SHAPE, NUM_CLASSES, build_numpy, build_torch

__all__ = ["make_batch", "NumpyTrainer", "TorchTrainer", "TorchSpectralRegularizer"]

LEARNING_RATE = 0.01
MOMENTUM = 0.9
SPECTRAL_LAMBDA = 0.01


def make_batch(batch: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random inputs (batch, 32, 32, 3) float32 and labels (batch,) int64, seeded."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, *INPUT_SHAPE), dtype=np.float32)
    y = rng.integers(0, NUM_CLASSES, size=batch, dtype=np.int64)
    return x, y


class _FallbackSGD:
    """Nesterov SGD (PyTorch's formulation), used only while ``specnorm_np.optim`` is missing.

    v ← μ v + g;  p ← p − lr (g + μ v)
    """

    def __init__(self, params: list[Any], lr: float, momentum: float) -> None:
        self.params, self.lr, self.momentum = params, lr, momentum
        self.velocity = [np.zeros_like(p.data) for p in params]

    def step(self) -> None:
        for p, v in zip(self.params, self.velocity):
            v *= self.momentum
            v += p.grad
            p.data -= self.lr * (p.grad + self.momentum * v)


def _library_regularizer(lam: float) -> tuple[Any, str]:
    error: Exception | None = None
    for module_name in ("specnorm_np.regularizers", "specnorm_np.spectral.regularizer"):
        try:
            module = importlib.import_module(module_name)
            regularizer = module.SpectralNormRegularizer(lam=lam)
            return regularizer, f"regularizer: {module_name}.SpectralNormRegularizer"
        except Exception as caught:  # module missing or still a placeholder
            error = caught
    return None, f"spectral regularizer unavailable, skipped on both sides ({error!r})"


def _library_optimizer(params: list[Any], lr: float, momentum: float) -> tuple[Any, str]:
    try:
        from specnorm_np.optim import SGD

        optimizer = SGD(params, lr=lr, momentum=momentum, nesterov=True)
        return optimizer, "optimizer: specnorm_np.optim.SGD"
    except Exception as error:  # module missing or still a placeholder
        note = f"optimizer: specnorm_np.optim unavailable ({type(error).__name__}), fallback SGD"
        return _FallbackSGD(params, lr, momentum), note


class NumpyTrainer:
    """A specnorm_np reference network with its loss, regularizer and optimizer.

    Parameters
    ----------
    name : str
        ``"mlp"``, ``"cnn"`` or ``"cnn_bn"``.
    seed : int
        Seeds the weights.
    regularize : bool
        Apply the spectral norm regularizer in the step (when the library has it).
    """

    def __init__(self, name: str, *, seed: int = 0, regularize: bool = True) -> None:
        from specnorm_np.nn import SoftmaxCrossEntropy

        self.name = name
        self.model = build_numpy(name, seed=seed)
        self.loss = SoftmaxCrossEntropy()
        self.params = self.model.parameters()
        self.regularizer, regularizer_note = (
            _library_regularizer(SPECTRAL_LAMBDA) if regularize else (None, "regularizer off")
        )
        self.optimizer, optimizer_note = _library_optimizer(self.params, LEARNING_RATE, MOMENTUM)
        self.notes = [regularizer_note, optimizer_note]
        self.last_loss = float("nan")

    def train_step(self, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
        """One full training step on (x, y); returns seconds per phase and ``"total"``."""
        self.model.train()
        t0 = time.perf_counter()
        logits = self.model.forward(x)
        t1 = time.perf_counter()
        self.last_loss, dlogits = self.loss(logits, y)
        t2 = time.perf_counter()
        staged = self.regularizer is not None and hasattr(self.regularizer, "stage")
        if staged:
            self.regularizer.stage(self.model)  # a Module: weights by qualified name
        t3 = time.perf_counter()
        # parameter gradients only, like PyTorch for an input that does not require a gradient
        self.model.backward_weights(dlogits)
        t4 = time.perf_counter()
        if self.regularizer is not None:
            self.regularizer.add_grad(self.model)
        t5 = time.perf_counter()
        self.optimizer.step()
        t6 = time.perf_counter()
        return {
            "forward": t1 - t0,
            "loss": t2 - t1,
            "backward": t4 - t3,
            "regularizer": (t3 - t2) + (t5 - t4),
            "optimizer": t6 - t5,
            "total": t6 - t0,
        }

    def infer(self, x: np.ndarray) -> np.ndarray:
        """Inference forward pass (evaluation mode), returns logits (N, 10)."""
        self.model.eval()
        return self.model.forward(x)


class TorchSpectralRegularizer:
    """The paper's regularizer in PyTorch, so both sides of the benchmark do the same work.

    For every weight W viewed as a matrix (out, rest), one normalized power-iteration step from
    a persistent vector v: u = Wv/‖Wv‖, v = Wᵀu/‖Wᵀu‖, σ = ‖Wᵀu‖ (= uᵀWv); then
    W.grad += λ σ u vᵀ, the gradient of (λ/2) σ², in place (``addr_``, BLAS ger).
    """

    def __init__(self, weights: list[Any], lam: float, seed: int = 0) -> None:
        import torch

        generator = torch.Generator().manual_seed(seed)
        self.lam = lam
        self.weights = weights
        self.vectors = [
            torch.randn(w[0].numel(), generator=generator, dtype=w.dtype) for w in weights
        ]

    def add_grad(self) -> None:
        import torch

        with torch.no_grad():
            for weight, v in zip(self.weights, self.vectors):
                matrix = weight.reshape(weight.shape[0], -1)
                u = torch.mv(matrix, v)
                u /= torch.linalg.vector_norm(u)
                v_new = torch.mv(matrix.T, u)
                sigma = torch.linalg.vector_norm(v_new)
                v.copy_(v_new / sigma)
                gradient = weight.grad.view(weight.shape[0], -1)
                gradient.addr_(u, v, alpha=self.lam * float(sigma))


class TorchTrainer:
    """The same network in PyTorch (N C H W), with the same loss, regularizer and optimizer."""

    def __init__(self, name: str, *, seed: int = 0, regularize: bool = True) -> None:
        import torch

        self.torch = torch
        self.name = name
        self.model = build_torch(name, seed=seed)
        self.optimizer = torch.optim.SGD(
            self.model.parameters(), lr=LEARNING_RATE, momentum=MOMENTUM, nesterov=True
        )
        # the W matrices: Linear and conv weights (BatchNorm's 1-D scales are left alone)
        weights = [p for p in self.model.parameters() if p.ndim > 1]
        self.regularizer = (
            TorchSpectralRegularizer(weights, SPECTRAL_LAMBDA, seed) if regularize else None
        )
        self.last_loss = float("nan")

    def to_input(self, x: np.ndarray, y: np.ndarray) -> tuple[Any, Any]:
        """Host arrays (N, H, W, C), (N,) -> tensors (N, C, H, W), (N,); done outside timing."""
        images = self.torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
        return images, self.torch.from_numpy(y)

    def train_step(self, x: Any, y: Any) -> dict[str, float]:
        """One full training step on tensors from :meth:`to_input`; seconds per phase."""
        functional = self.torch.nn.functional
        self.model.train()
        t0 = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        loss = functional.cross_entropy(self.model(x), y)
        loss.backward()
        t1 = time.perf_counter()
        if self.regularizer is not None:
            self.regularizer.add_grad()
        t2 = time.perf_counter()
        self.optimizer.step()
        t3 = time.perf_counter()
        self.last_loss = float(loss.detach())
        return {"forward_backward": t1 - t0, "regularizer": t2 - t1, "optimizer": t3 - t2,
                "total": t3 - t0}

    def infer(self, x: Any) -> Any:
        """Inference forward pass (evaluation mode, no autograd), returns logits (N, 10)."""
        self.model.eval()
        with self.torch.inference_mode():
            return self.model(x)
