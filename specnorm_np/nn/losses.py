"""Softmax cross-entropy, the classification loss."""

from __future__ import annotations

from typing import Any

from specnorm_np.backend import get_array_module
from specnorm_np.nn._checks import check_input

__all__ = ["SoftmaxCrossEntropy", "check_labels", "log_softmax"]


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
        n = logits.shape[0]
        if n == 0:
            raise ValueError("SoftmaxCrossEntropy: empty batch (N = 0); the mean loss is undefined")
        check_labels(labels, logits.shape, self.label)
        logp = log_softmax(logits)
        rows = xp.arange(n)
        loss = -float(logp[rows, labels].sum()) / n
        dlogits = xp.exp(logp)
        dlogits[rows, labels] -= 1
        dlogits /= n
        return loss, dlogits

    def per_example(self, logits: Any, labels: Any) -> Any:
        """Per-example losses -log softmax(z_n)[y_n], shape (N,) (N = 0 gives an empty array)."""
        owner = f"{self.label}.per_example"
        if getattr(logits, "ndim", None) != 2:
            raise ValueError(f"{owner}: expected logits (N, classes), got "
                             f"{tuple(getattr(logits, 'shape', ())) or type(logits).__name__}")
        check_labels(labels, logits.shape, owner)
        xp = get_array_module(logits)
        return -log_softmax(logits)[xp.arange(logits.shape[0]), labels]


def check_labels(labels: Any, logits_shape: tuple[int, ...], owner: str) -> None:
    """``labels`` must be an integer array (N,) with values in [0, K) for logits (N, K).

    Without this check a label -1 would silently index the last class and K would be a raw
    IndexError.
    """
    n, k = logits_shape
    if not hasattr(labels, "shape") or not hasattr(labels, "dtype"):
        raise ValueError(
            f"{owner}: labels must be an integer array of shape ({n},) on the logits' device, "
            f"got {type(labels).__name__}"
        )
    if tuple(labels.shape) != (n,):
        raise ValueError(
            f"{owner}: expected labels of shape ({n},) to match logits {tuple(logits_shape)}, "
            f"got {tuple(labels.shape)}"
        )
    if labels.dtype.kind not in "iu":
        raise ValueError(f"{owner}: labels must be integers, got {labels.dtype}")
    if n and (int(labels.min()) < 0 or int(labels.max()) >= k):
        raise ValueError(
            f"{owner}: labels must lie in [0, {k}), got values in "
            f"[{int(labels.min())}, {int(labels.max())}]"
        )
