"""``python -m specnorm_np gradcheck``: check every layer, the models and the regularizers.

Each row is one tensor (a layer's input or a parameter) whose analytic gradient is compared with
central differences in float64 (:mod:`specnorm_np.gradcheck`); the table lists the largest
relative error. Users run it to verify an installation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from specnorm_np import gradcheck, nn
from specnorm_np.gradcheck import CheckResult, GradcheckError

__all__ = ["run_checks", "format_rows"]

TOLERANCE = 1e-5


def _layer_cases(rng: np.random.Generator) -> Iterator[tuple[str, Any, Any]]:
    def x(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape)

    def spread(*shape: int) -> np.ndarray:  # distinct values far apart: no max-pool near-ties
        return rng.permutation(np.arange(int(np.prod(shape)), dtype=np.float64)).reshape(shape)

    yield "Linear(5, 3)", nn.Linear(5, 3, rng=0), x(4, 5)
    yield "Conv2d 3x3 pad 1", nn.Conv2d(2, 3, 3, padding=1, rng=0), x(2, 5, 4, 2)
    yield "Conv2d 3x2 stride 2", nn.Conv2d(2, 3, (3, 2), stride=2, rng=0), x(1, 7, 6, 2)
    yield "Conv2d 1x1", nn.Conv2d(3, 2, 1, rng=0), x(2, 3, 3, 3)
    yield "MaxPool2d 3 stride 2", nn.MaxPool2d(3, stride=2), spread(2, 7, 5, 2) * 0.1
    yield "AvgPool2d 2", nn.AvgPool2d(2), x(2, 4, 6, 3)
    yield "GlobalAvgPool2d", nn.GlobalAvgPool2d(), x(2, 3, 5, 4)
    yield "BatchNorm1d (train)", nn.BatchNorm1d(4), x(6, 4)
    yield "BatchNorm2d (train)", nn.BatchNorm2d(3), x(3, 4, 2, 3)
    yield "BatchNorm2d (eval)", nn.BatchNorm2d(3).eval(), x(3, 4, 2, 3)
    yield "ReLU", nn.ReLU(), x(3, 7)
    yield "LeakyReLU", nn.LeakyReLU(), x(3, 7)
    yield "Dropout(0.3)", nn.Dropout(0.3, seed=0), x(4, 6)
    yield "Flatten", nn.Flatten(), x(2, 3, 2, 2)


def _model_cases(rng: np.random.Generator) -> Iterator[tuple[str, Any, Any, Any]]:
    from specnorm_np.models import MODEL_NAMES, build_model

    for name in MODEL_NAMES:
        model = build_model(name, (8, 8, 1), 3, seed=0, width=8 if name == "mlp" else 3)
        yield f"model {name} + cross-entropy", model, rng.standard_normal((2, 8, 8, 1)), \
            np.array([0, 2])


def _random_biases(module: Any, rng: np.random.Generator) -> None:
    """Non-zero biases keep every ReLU input off its kink (zero-bias units can sit on it)."""
    for name, p in module.named_parameters():
        if name.endswith("bias") or name.endswith("beta"):
            p.data = rng.standard_normal(p.data.shape) * 0.1


def _regularizer_checks(rng: np.random.Generator) -> Iterator[tuple[str, Callable[[], list]]]:
    from specnorm_np.adversarial import adversarial_loss_and_grad
    from specnorm_np.regularizers import SpectralNormRegularizer, WeightDecay

    def small_model() -> Any:
        model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1, rng=1), nn.ReLU(), nn.Flatten(),
                              nn.Linear(3 * 4 * 4, 3, rng=2)).astype(np.float64)
        _random_biases(model, rng)
        model.forward(rng.standard_normal((1, 4, 4, 2)))  # conv input size for operator mode
        return model

    def penalty_check(regularizer: Any, label: str) -> list[CheckResult]:
        model = small_model()
        weights = [(n, p) for n, p in model.named_parameters() if p.regularize]
        for _, p in weights:
            p.grad = np.zeros_like(p.data)
        regularizer.add_grad(model)
        return [gradcheck.check_function(lambda: regularizer.penalty(model), p.data, p.grad,
                                         owner=label, tensor=name, tol=TOLERANCE)
                for name, p in weights]

    yield "WeightDecay", lambda: penalty_check(WeightDecay(lam=0.1), "WeightDecay")
    yield "Spectral (matrix)", lambda: penalty_check(
        SpectralNormRegularizer(lam=0.1, exact=True), "SpectralNormRegularizer matrix")
    yield "Spectral (operator)", lambda: penalty_check(
        SpectralNormRegularizer(lam=0.1, exact=True, mode="operator"),
        "SpectralNormRegularizer operator")

    def adversarial_check() -> list[CheckResult]:
        model, loss = small_model(), nn.SoftmaxCrossEntropy()
        x, y = rng.standard_normal((3, 4, 4, 2)), np.array([0, 1, 2])
        result = adversarial_loss_and_grad(model, loss, x, y, epsilon=1.0, alpha=0.5)
        eta = result.perturbation  # held constant, as in the paper's Eq. (3)
        grads = {n: p.grad.copy() for n, p in model.named_parameters()}

        def mixed() -> float:
            return 0.5 * loss(model.forward(x), y)[0] + 0.5 * loss(model.forward(x + eta), y)[0]

        return [gradcheck.check_function(mixed, p.data, grads[n], owner="adversarial Eq. (3)",
                                         tensor=n, tol=TOLERANCE)
                for n, p in model.named_parameters()]

    yield "Adversarial", adversarial_check


def run_checks(seed: int = 0, progress: bool = False) -> list[tuple[str, CheckResult | None,
                                                                    str]]:
    """Run every check; returns rows (component, result or None, error message or "").

    ``progress`` shows a progress bar (tqdm, on stderr) with the component being checked.
    """
    from tqdm.auto import tqdm

    rng = np.random.default_rng(seed)
    rows: list[tuple[str, CheckResult | None, str]] = []
    spare = np.random.default_rng(seed)  # counts the cases without using rng's draws
    total = sum(1 for _ in _layer_cases(spare)) + 1 + sum(1 for _ in _model_cases(spare)) + \
        sum(1 for _ in _regularizer_checks(spare))
    bar = tqdm(total=total, desc="gradient checks", unit="check", leave=False,
               disable=not progress)

    def record(component: str, check: Callable[[], list[CheckResult]]) -> None:
        bar.set_description_str(f"gradient check: {component}")
        try:
            rows.extend((component, r, "") for r in check())
        except (GradcheckError, ValueError, NotImplementedError) as error:
            rows.append((component, None, str(error)))
        bar.update()

    for label, layer, x in _layer_cases(rng):
        layer.astype(np.float64)
        _random_biases(layer, rng)
        record(label, lambda layer=layer, x=x: gradcheck.check_layer(layer, x, tol=TOLERANCE))
    loss = nn.SoftmaxCrossEntropy()
    logits, labels = rng.standard_normal((4, 5)), np.array([0, 4, 2, 2])
    record("SoftmaxCrossEntropy", lambda: [gradcheck.check_function(
        lambda: loss(logits, labels)[0], logits, loss(logits, labels)[1],
        owner="SoftmaxCrossEntropy", tensor="logits", tol=TOLERANCE)])
    for label, model, x, y in _model_cases(rng):
        model.astype(np.float64)
        _random_biases(model, rng)
        record(label, lambda model=model, x=x, y=y: gradcheck.check_model(
            model, x, y, tol=TOLERANCE, max_elements=400, directions=6))
    for label, check in _regularizer_checks(rng):
        record(label, check)
    bar.close()
    return rows


def format_rows(rows: list[tuple[str, CheckResult | None, str]]) -> str:
    """A fixed-width table: component, tensor, max relative error, entries checked, status."""
    lines = [f"{'component':34} {'tensor':16} {'max rel. error':>14} {'checked':>8}  status",
             "-" * 84]
    for component, result, error in rows:
        if result is None:
            lines.append(f"{component:34} {'':16} {'':>14} {'':>8}  FAIL: {error}")
        else:
            lines.append(f"{component:34} {result.tensor:16} {result.max_error:14.2e} "
                         f"{result.checked:8d}  ok")
    failures = sum(result is None for _, result, _ in rows)
    lines.append("-" * 84)
    lines.append(f"{len(rows)} tensors checked in float64 (tolerance {TOLERANCE:g}); "
                 + ("all passed" if not failures else f"{failures} FAILED"))
    return "\n".join(lines)
