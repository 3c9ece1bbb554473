"""One training step and one inference pass, for a specnorm_np model and a PyTorch model.

A training step is the whole of what a training loop does per batch::

    logits = model.forward(x)                      # forward
    loss, dlogits = SoftmaxCrossEntropy()(logits, y)  # loss
    model.backward_weights(dlogits)                # backward: fills every Parameter.grad; no
                                                   # dL/dx of the images, which PyTorch does not
                                                   # compute either
    regularizer.add_grad(model)                    # spectral norm regularizer (λ = 0.01): one
                                                   # power-iteration step, += λσuvᵀ per weight
    optimizer.step()                               # SGD, Nesterov momentum 0.9

The PyTorch side does the same work: ``loss.backward()``, then the same one-step power
iteration per weight matrix (:class:`TorchSpectralRegularizer`, two ``mv`` and an in-place
``addr_``), then ``torch.optim.SGD`` with Nesterov momentum. Each ``train_step`` returns the
seconds spent in each phase; the runner measures the regularizer's share of a step by ablation
(the same trainer, on the same arrays, stepping with and without it), which also counts its
cache effects on the rest.
"""

from __future__ import annotations

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
        from specnorm_np.optim import SGD
        from specnorm_np.regularizers import SpectralNormRegularizer

        self.name = name
        self.model = build_numpy(name, seed=seed)
        self.loss = SoftmaxCrossEntropy()
        self.params = self.model.parameters()
        self.regularizer = SpectralNormRegularizer(lam=SPECTRAL_LAMBDA) if regularize else None
        self.optimizer = SGD(self.params, lr=LEARNING_RATE, momentum=MOMENTUM, nesterov=True)
        self.last_loss = float("nan")

    def train_step(
        self, x: np.ndarray, y: np.ndarray, regularize: bool = True
    ) -> dict[str, float]:
        """One full training step on (x, y); returns seconds per phase and ``"total"``.

        ``regularize=False`` skips the regularizer in this step only (the ablation of the
        regularizer's share runs the same arrays with and without it).
        """
        self.model.train()
        t0 = time.perf_counter()
        logits = self.model.forward(x)
        t1 = time.perf_counter()
        self.last_loss, dlogits = self.loss(logits, y)
        t2 = time.perf_counter()
        # parameter gradients only, like PyTorch for an input that does not require a gradient
        self.model.backward_weights(dlogits)
        t3 = time.perf_counter()
        if regularize and self.regularizer is not None:
            self.regularizer.add_grad(self.model)  # a Module: weights by qualified name
        t4 = time.perf_counter()
        self.optimizer.step()
        t5 = time.perf_counter()
        return {
            "forward": t1 - t0,
            "loss": t2 - t1,
            "backward": t3 - t2,
            "regularizer": t4 - t3,
            "optimizer": t5 - t4,
            "total": t5 - t0,
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

    def train_step(self, x: Any, y: Any, regularize: bool = True) -> dict[str, float]:
        """One full training step on tensors from :meth:`to_input`; seconds per phase.

        ``regularize=False`` skips the regularizer in this step only.
        """
        functional = self.torch.nn.functional
        self.model.train()
        t0 = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        loss = functional.cross_entropy(self.model(x), y)
        loss.backward()
        t1 = time.perf_counter()
        if regularize and self.regularizer is not None:
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
