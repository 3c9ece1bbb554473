"""The experiment models: shapes on CIFAR and digits inputs, seeded init, gradients, errors."""

from __future__ import annotations

import numpy as np
import pytest

from specnorm_np import gradcheck, nn
from specnorm_np.models import MODEL_NAMES, build_model


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("shape", [(32, 32, 3), (8, 8, 1)])
def test_logits_shape_on_cifar_and_digits_inputs(name: str, shape: tuple[int, int, int]) -> None:
    model = build_model(name, shape, 10, seed=0)
    x = np.random.default_rng(0).standard_normal((2, *shape)).astype(np.float32)
    logits = model.forward(x)
    assert logits.shape == (2, 10) and logits.dtype == np.float32
    assert model.backward(np.ones_like(logits)).shape == x.shape


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_initialisation_is_seeded(name: str) -> None:
    a, b, c = (build_model(name, (8, 8, 1), 10, seed=s) for s in (3, 3, 4))
    for pa, pb in zip(a.parameters(), b.parameters()):
        np.testing.assert_array_equal(pa.data, pb.data)
    assert any(not np.array_equal(pa.data, pc.data)
               for pa, pc in zip(a.parameters(), c.parameters()))


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_whole_model_gradients_check_numerically(name: str) -> None:
    rng = np.random.default_rng(1)
    model = build_model(name, (8, 8, 1), 3, seed=2, width=4 if name != "mlp" else 8)
    model.astype(np.float64)
    # non-zero biases: with zero biases a unit whose inputs are all dead ReLUs sits exactly on
    # the next ReLU's kink, where central differences see slope 1/2 and the analytic one 0
    for name, p in model.named_parameters():
        if name.endswith("bias"):
            p.data = rng.standard_normal(p.data.shape) * 0.1
    x = rng.standard_normal((3, 8, 8, 1))
    y = np.array([0, 2, 1])
    results = gradcheck.check_model(model, x, y, tol=1e-5, max_elements=300, directions=4)
    assert {r.tensor for r in results} >= {"input"} | {n for n, _ in model.named_parameters()}


def test_only_weight_matrices_are_regularized() -> None:
    model = build_model("vgg-bn", (8, 8, 1), 10, seed=0)
    regularized = [n for n, p in model.named_parameters() if p.regularize]
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert len(regularized) == len(convs) + len(linears) == 7
    assert all(m.bias is None for m in convs)  # BatchNorm's shift replaces the conv bias
    nin = build_model("nin", (32, 32, 3), 10, seed=0)
    assert not any(isinstance(m, nn.Linear) for m in nin.modules())
    assert isinstance(nin[len(nin) - 1], nn.GlobalAvgPool2d)


def test_bad_arguments_name_what_was_expected() -> None:
    with pytest.raises(ValueError, match="unknown model 'resnet'.*mlp"):
        build_model("resnet")
    with pytest.raises(ValueError, match="H, W >= 8"):
        build_model("vgg", (4, 4, 3))
    with pytest.raises(ValueError, match=r"input_shape must be \(H, W, C\)"):
        build_model("mlp", (32, 32))
    with pytest.raises(ValueError, match="num_classes must be an int >= 2"):
        build_model("mlp", num_classes=1)
