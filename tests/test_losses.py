"""SoftmaxCrossEntropy and log_softmax."""

from __future__ import annotations

import numpy as np
import pytest

from specnorm_np import gradcheck, nn


def reference_loss(logits: np.ndarray, labels: np.ndarray) -> float:
    """Textbook definition, in float64 (fine for moderate logits)."""
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return float(-np.log(p[np.arange(len(labels)), labels]).mean())


def test_value_and_gradient_match_definition(backend) -> None:
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((6, 4)) * 3
    labels = rng.integers(0, 4, 6)
    loss, dlogits = nn.SoftmaxCrossEntropy()(backend.asarray(logits), backend.asarray(labels))
    assert isinstance(loss, float)
    assert loss == pytest.approx(reference_loss(logits, labels), rel=1e-12)
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    p[np.arange(6), labels] -= 1
    np.testing.assert_allclose(backend.host(dlogits), p / 6, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("batch", [1, 5])
def test_gradient_check(backend, batch: int) -> None:
    rng = np.random.default_rng(batch)
    loss = nn.SoftmaxCrossEntropy()
    logits = backend.asarray(rng.standard_normal((batch, 7)) * 2)
    labels = backend.asarray(rng.integers(0, 7, batch))
    _, dlogits = loss(logits, labels)
    gradcheck.check_function(lambda: loss(logits, labels)[0], logits, dlogits,
                             owner="SoftmaxCrossEntropy", tensor="logits", tol=1e-7)


def test_stable_for_huge_logits(backend) -> None:
    logits = np.array([[1000.0, 0.0, -1000.0], [5e4, 5e4, 0.0], [-3e4, -3e4 + 2.0, -3e4]])
    labels = np.array([0, 1, 1])
    loss, dlogits = nn.SoftmaxCrossEntropy()(backend.asarray(logits), backend.asarray(labels))
    # row 0: log p = 0; row 1: two tied top logits, -log(1/2); row 2: log(1 + 2e^-2) shifts
    expected = (0.0 + np.log(2.0) + np.log(1 + 2 * np.exp(-2.0))) / 3
    assert np.isfinite(loss) and loss == pytest.approx(expected, rel=1e-12)
    g = backend.host(dlogits)
    assert np.isfinite(g).all()
    np.testing.assert_allclose(g.sum(axis=1), 0, atol=1e-15)  # softmax minus a one-hot
    f32 = nn.SoftmaxCrossEntropy()(backend.asarray(logits.astype(np.float32)),
                                   backend.asarray(labels))
    assert f32[1].dtype == np.float32 and f32[0] == pytest.approx(expected, rel=1e-5)


def test_uniform_logits_give_log_k() -> None:
    loss, _ = nn.SoftmaxCrossEntropy()(np.zeros((4, 10), dtype=np.float32), np.arange(4))
    assert loss == pytest.approx(np.log(10), rel=1e-6)


def test_log_softmax_and_per_example(backend) -> None:
    rng = np.random.default_rng(3)
    logits = rng.standard_normal((3, 5))
    labels = np.array([4, 0, 2])
    logp = backend.host(nn.log_softmax(backend.asarray(logits)))
    np.testing.assert_allclose(np.exp(logp).sum(axis=1), 1, rtol=1e-12)
    per = backend.host(nn.SoftmaxCrossEntropy().per_example(backend.asarray(logits),
                                                             backend.asarray(labels)))
    np.testing.assert_allclose(per, -logp[np.arange(3), labels], rtol=1e-12)
    assert per.mean() == pytest.approx(reference_loss(logits, labels), rel=1e-12)


@pytest.mark.parametrize(
    ("logits", "labels", "message"),
    [
        (np.zeros((3, 4)), np.array([0, 1]), r"labels of shape \(3,\)"),
        (np.zeros((2, 4)), np.array([0.0, 1.0]), "labels must be integers, got float64"),
        (np.zeros((2, 4)), np.array([0, 4]), r"must lie in \[0, 4\), got values in \[0, 4\]"),
        (np.zeros((2, 4)), np.array([-1, 2]), r"must lie in \[0, 4\)"),
        (np.zeros(4), np.array([0]), "expected 2-D input"),
        (np.zeros((2, 4), dtype=np.int64), np.array([0, 1]), "floating-point input"),
        (np.array([[0.0, np.nan]]), np.array([0]), "NaN or Inf"),
    ],
)
def test_label_and_input_errors(backend, logits, labels, message: str) -> None:
    with pytest.raises(ValueError, match=f"^SoftmaxCrossEntropy: .*{message}"):
        nn.SoftmaxCrossEntropy()(backend.asarray(logits), backend.asarray(labels))


def test_labels_must_be_an_array() -> None:
    with pytest.raises(ValueError, match="labels must be an integer array of shape \\(2,\\)"):
        nn.SoftmaxCrossEntropy()(np.zeros((2, 3)), [0, 1])


@pytest.mark.parametrize("labels, message", [
    (np.array([0, -1]), r"labels must lie in \[0, 4\), got values in \[-1, 0\]"),
    (np.array([4, 1]), r"labels must lie in \[0, 4\), got values in \[1, 4\]"),
    (np.array([0.0, 1.0]), "labels must be integers"),
    (np.array([0, 1, 2]), r"expected labels of shape \(2,\)"),
])
def test_per_example_checks_labels_like_forward(backend, labels, message) -> None:
    """-1 would silently index the last class, 4 would be a raw IndexError."""
    with pytest.raises(ValueError, match=f"^SoftmaxCrossEntropy.per_example: .*{message}"):
        nn.SoftmaxCrossEntropy().per_example(backend.asarray(np.zeros((2, 4))),
                                             backend.asarray(labels))
    with pytest.raises(ValueError, match="expected logits"):
        nn.SoftmaxCrossEntropy().per_example(np.zeros(4), np.array([0]))
    good = nn.SoftmaxCrossEntropy().per_example(backend.asarray(np.zeros((2, 4))),
                                                backend.asarray(np.array([3, 0])))
    np.testing.assert_allclose(backend.host(good), np.log(4))
