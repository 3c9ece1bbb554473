"""Softmax cross-entropy, the classification loss."""

from __future__ import annotations

from typing import Any

from specnorm_np.backend import get_array_module
from specnorm_np.nn._checks import check_input

__all__ = ["SoftmaxCrossEntropy", "log_softmax"]


def log_softmax(logits: Any) -> Any:
    """Numerically stable log-softmax over the last axis: z - max(z) - log Σ exp(z - max(z))."""
    xp = get_array_module(logits)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - xp.log(xp.exp(shifted).sum(axis=-1, keepdims=True))


class SoftmaxCrossEntropy:
    """Mean cross-entropy of softmax(logits) against integer labels.

    ``loss, dlogits = SoftmaxCrossEntropy()(logits, labels)``

    Parameters (call)
    -----------------
    logits : (N, K) float array
    labels : (N,) integer array with values in [0, K)

    Returns
    -------
    loss : float
        L = -(1/N) Σ_n log softmax(z_n)[y_n]
    dlogits : (N, K) array
        dL/dz = (softmax(z) - onehot(y)) / N, the classic result: the derivative of
        -log p_y with respect to z_k is p_k - [k = y].
    """

    label = "SoftmaxCrossEntropy"

    def __call__(self, logits: Any, labels: Any) -> tuple[float, Any]:
        return self.forward(logits, labels)

    def forward(self, logits: Any, labels: Any) -> tuple[float, Any]:
        check_input(self, logits, ndim=2, layout="(N, classes)")
        xp = get_array_module(logits)
        n, k = logits.shape
        if n == 0:
            raise ValueError("SoftmaxCrossEntropy: empty batch (N = 0); the mean loss is undefined")
        if not hasattr(labels, "shape") or not hasattr(labels, "dtype"):
            raise ValueError(
                f"SoftmaxCrossEntropy: labels must be an integer array of shape ({n},) on the "
                f"logits' device, got {type(labels).__name__}"
            )
        if tuple(labels.shape) != (n,):
            raise ValueError(
                f"SoftmaxCrossEntropy: expected labels of shape ({n},) to match logits "
                f"{tuple(logits.shape)}, got {tuple(labels.shape)}"
            )
        if labels.dtype.kind not in "iu":
            raise ValueError(f"SoftmaxCrossEntropy: labels must be integers, got {labels.dtype}")
        if n and (int(labels.min()) < 0 or int(labels.max()) >= k):
            raise ValueError(
                f"SoftmaxCrossEntropy: labels must lie in [0, {k}), got values in "
                f"[{int(labels.min())}, {int(labels.max())}]"
            )
        logp = log_softmax(logits)
        rows = xp.arange(n)
        loss = -float(logp[rows, labels].sum()) / n
        dlogits = xp.exp(logp)
        dlogits[rows, labels] -= 1
        dlogits /= n
        return loss, dlogits

    def per_example(self, logits: Any, labels: Any) -> Any:
        """Per-example losses -log softmax(z_n)[y_n], shape (N,)."""
        xp = get_array_module(logits)
        return -log_softmax(logits)[xp.arange(logits.shape[0]), labels]
