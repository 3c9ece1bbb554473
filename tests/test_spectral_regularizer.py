"""SpectralNormRegularizer: gradients, modes, state, the operator mode (float64 for numbers)."""

from __future__ import annotations

import numpy as np
import pytest

from specnorm_np import nn
from specnorm_np.backend import to_numpy
from specnorm_np.gradcheck import check_function
from specnorm_np.nn.module import Parameter
from specnorm_np.spectral import SpectralNormRegularizer, conv_as_dense_matrix

LAM = 0.3  # larger than the paper's 0.01 so the gradient is far above finite-difference noise


def _model(dtype=np.float64) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1, rng=0, dtype=dtype), nn.ReLU(),
        nn.Conv2d(3, 4, (3, 2), stride=2, rng=1, dtype=dtype), nn.Flatten(),
        nn.Linear(4 * 3 * 3, 5, rng=2, dtype=dtype),
    )


def _weight(shape, rng) -> Parameter:
    return Parameter(rng.standard_normal(shape), "weight", regularize=True)


def _sigma_max(matrix: np.ndarray) -> float:
    return float(np.linalg.svd(matrix.reshape(matrix.shape[0], -1), compute_uv=False)[0])


@pytest.mark.parametrize("shape", [(6, 5), (3, 9), (4, 3, 3, 2)])
@pytest.mark.parametrize("exact", [True, False])
def test_gradient_is_the_derivative_of_half_lambda_sigma_squared(rng, shape, exact):
    param = _weight(shape, rng)
    param.grad = np.zeros(shape)
    regularizer = SpectralNormRegularizer(lam=LAM, power_iterations=3000, exact=exact)
    regularizer.add_grad([param])

    def penalty() -> float:
        return 0.5 * LAM * _sigma_max(param.data) ** 2

    check_function(penalty, param.data, param.grad, owner="spectral", tensor="weight", tol=1e-6)
    assert np.isclose(regularizer.penalty([param]), penalty(), rtol=1e-10)


def test_add_grad_adds_and_touches_only_weights(backend, rng):
    model = backend.to(_model())
    x = backend.asarray(rng.standard_normal((2, 8, 7, 2)))
    model.backward(model.forward(x))
    before = {name: backend.host(p.grad).copy() for name, p in model.named_parameters()}
    regularizer = SpectralNormRegularizer(lam=LAM)
    regularizer.add_grad(model)
    for name, param in model.named_parameters():
        change = backend.host(param.grad) - before[name]
        if not param.regularize:
            assert np.array_equal(change, 0 * change), name
            continue
        state = regularizer.states[name]
        u, v = backend.host(state.u), backend.host(state.v)
        expected = LAM * float(state.sigma) * np.outer(u, v).reshape(param.shape)
        np.testing.assert_allclose(change, expected, atol=1e-14)
    assert sorted(regularizer.sigmas()) == ["0.weight", "2.weight", "4.weight"]


def test_one_step_per_training_step_tracks_sigma(backend, rng):
    model = backend.to(_model())
    regularizer = SpectralNormRegularizer(lam=0.01, seed=3)
    history = []
    for _ in range(300):
        for p in model.parameters():
            p.grad = None  # treated as zero
        regularizer.add_grad(model)
        history.append(regularizer.sigmas())
    for name, param in model.named_parameters():
        if param.regularize:
            exact = _sigma_max(backend.host(param.data))
            assert history[0][name] < exact * (1 - 1e-3)
            assert np.isclose(history[-1][name], exact, rtol=1e-6)


def test_penalty_does_not_advance_and_eval_freezes_the_vectors(backend, rng):
    model = backend.to(_model())
    regularizer = SpectralNormRegularizer(lam=LAM, seed=1)
    for _ in range(3):
        regularizer.add_grad(model)
    saved = {k: v.copy() for k, v in regularizer.state_dict().items()}
    penalties = [regularizer.penalty(model) for _ in range(2)]
    assert penalties[0] == penalties[1]
    # penalty = (λ/2)·Σ‖W v‖² with the stored v
    expected = 0.0
    for name, param in model.named_parameters():
        if param.regularize:
            matrix = backend.host(param.data).reshape(param.shape[0], -1)
            expected += np.linalg.norm(matrix @ saved[name + ".v"]) ** 2
    assert np.isclose(penalties[0], 0.5 * LAM * expected, rtol=1e-12)
    regularizer.eval()
    for p in model.parameters():
        p.grad = None
    for _ in range(3):
        regularizer.add_grad(model)
    after = regularizer.state_dict()
    assert after.keys() == saved.keys()
    for key in saved:
        assert np.array_equal(after[key], saved[key]), key
    # in eval mode the gradient is that of (λ/2)‖W v‖² with v fixed: 3·λ·W v vᵀ after 3 calls
    weight = model[4].weight
    v = saved["4.weight.v"]
    np.testing.assert_allclose(backend.host(weight.grad),
                               3 * LAM * np.outer(backend.host(weight.data) @ v, v), atol=1e-13)
    regularizer.train()
    regularizer.add_grad(model)
    assert not np.array_equal(regularizer.state_dict()["4.weight.v"], saved["4.weight.v"])


def test_checkpoint_round_trip_is_exact(backend, rng):
    model = backend.to(_model(np.float32))
    regularizer = SpectralNormRegularizer(lam=0.01, seed=7)
    for _ in range(4):
        regularizer.add_grad(model)
    state = regularizer.state_dict()
    assert all(isinstance(a, np.ndarray) for a in state.values())
    restored = SpectralNormRegularizer(lam=0.01, seed=999)  # the seed must not matter now
    restored.load_state_dict(state)
    again = restored.state_dict()
    assert again.keys() == state.keys()
    assert all(np.array_equal(again[k], state[k]) and again[k].dtype == state[k].dtype
               for k in state)
    # both continue identically on the model's device
    regularizer.add_grad(model)
    restored.add_grad(model)
    assert regularizer.sigmas() == restored.sigmas()
    assert type(restored.states["0.weight"].v) is type(model[0].weight.data)
    with pytest.raises(KeyError, match="unexpected key 'x.w'"):
        restored.load_state_dict({"x.w": np.zeros(2)})


def test_seeded_start_and_names_for_parameter_lists(rng):
    model = _model()
    a, b = SpectralNormRegularizer(seed=4), SpectralNormRegularizer(seed=4)
    a.penalty(model)
    b.penalty(model.named_parameters())
    assert a.state_dict().keys() == b.state_dict().keys()
    assert all(np.array_equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
    c = SpectralNormRegularizer(seed=5)
    c.penalty(model)
    assert not np.allclose(a.state_dict()["0.weight.v"], c.state_dict()["0.weight.v"])
    d = SpectralNormRegularizer()
    d.penalty(model.parameters())  # bare Parameters: position in the list + name
    assert sorted(d.states) == ["0.weight", "2.weight", "4.weight"]


def test_blas_and_generic_rank_one_updates_agree(rng):
    contiguous = _weight((5, 3, 2, 4), rng)
    fortran = Parameter(np.asfortranarray(contiguous.data), "weight", regularize=True)
    start = rng.standard_normal(contiguous.shape)
    contiguous.grad, fortran.grad = start.copy(), np.asfortranarray(start)
    regularizer = SpectralNormRegularizer(lam=LAM)
    regularizer.add_grad([contiguous])
    SpectralNormRegularizer(lam=LAM).add_grad([fortran])
    np.testing.assert_allclose(contiguous.grad, fortran.grad, atol=1e-14)
    assert not np.allclose(contiguous.grad, start)


# ---- operator mode ---------------------------------------------------------------------------
def _conv_model(stride, padding, input_hw, rng) -> nn.Sequential:
    model = nn.Sequential(nn.Conv2d(2, 3, 3, stride=stride, padding=padding, rng=0,
                                    dtype=np.float64), nn.ReLU())
    model.forward(rng.standard_normal((1, *input_hw, 2)))
    return model


@pytest.mark.parametrize("stride, padding, input_hw", [(1, 1, (5, 4)), (2, 1, (6, 5)),
                                                       ((1, 2), (0, 1), (5, 6))])
@pytest.mark.parametrize("exact", [True, False])
def test_operator_mode_gradient_passes_the_numerical_check(rng, stride, padding, input_hw,
                                                            exact):
    model = _conv_model(stride, padding, input_hw, rng)
    layer = model[0]
    layer.weight.grad = np.zeros(layer.weight.shape)
    regularizer = SpectralNormRegularizer(lam=LAM, power_iterations=3000, exact=exact,
                                          mode="operator")
    regularizer.add_grad(model)

    def penalty() -> float:
        dense = conv_as_dense_matrix(layer.weight.data, input_hw, stride, padding)
        return 0.5 * LAM * float(np.linalg.svd(dense, compute_uv=False)[0]) ** 2

    check_function(penalty, layer.weight.data, layer.weight.grad, owner="operator mode",
                   tensor="kernel", tol=1e-6)
    assert np.isclose(regularizer.penalty(model), penalty(), rtol=1e-9)
    # the operator norm, not the reshaped-kernel σ
    assert not np.isclose(regularizer.sigmas()["0.weight"], _sigma_max(layer.weight.data))
    assert regularizer.states["0.weight"].v.shape == (1, *input_hw, 2)


def test_operator_mode_on_the_device_backend_and_linear_weights(backend, rng):
    host_model = _model()
    device_model = backend.to(_model())
    x = rng.standard_normal((2, 8, 7, 2))
    host_model.forward(x)
    device_model.forward(backend.asarray(x))
    results = []
    for model in (host_model, device_model):
        regularizer = SpectralNormRegularizer(lam=LAM, mode="operator", power_iterations=5)
        regularizer.add_grad(model)
        results.append((regularizer.sigmas(), [backend.host(p.grad) for p in model.parameters()
                                               if p.regularize]))
    assert results[0][0].keys() == results[1][0].keys()
    for name in results[0][0]:
        assert np.isclose(results[0][0][name], results[1][0][name], rtol=1e-12)
    for a, b in zip(results[0][1], results[1][1]):
        np.testing.assert_allclose(a, b, atol=1e-13)
    # the Linear weight keeps the matrix σ (its operator norm): same as matrix mode
    matrix_mode = SpectralNormRegularizer(lam=LAM, power_iterations=5)
    matrix_mode.penalty(host_model)  # creates the same seeded start vectors
    matrix_mode.add_grad(host_model)
    assert np.isclose(matrix_mode.sigmas()["4.weight"], results[0][0]["4.weight"], rtol=1e-12)


def test_operator_mode_needs_the_model_and_a_forward_pass():
    model = _model()
    regularizer = SpectralNormRegularizer(mode="operator")
    with pytest.raises(ValueError, match="run a forward pass first"):
        regularizer.penalty(model)
    with pytest.raises(ValueError, match="params must be the model"):
        regularizer.penalty(model.parameters())


def test_constructor_rejects_bad_arguments():
    with pytest.raises(ValueError, match="lam must be a number >= 0"):
        SpectralNormRegularizer(lam=-1)
    with pytest.raises(ValueError, match="power_iterations must be an int >= 1"):
        SpectralNormRegularizer(power_iterations=0)
    with pytest.raises(ValueError, match="mode must be 'matrix' or 'operator'"):
        SpectralNormRegularizer(mode="conv")


# ---- the fast path: stage() before backward, the Linear layers fold λσuvᵀ into dW --------------
def _mlp_cnn(dtype=np.float64) -> nn.Sequential:
    """Convolutions (not folded) and two Linear layers (folded), with biases."""
    return nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1, rng=0, dtype=dtype), nn.ReLU(), nn.Flatten(),
        nn.Linear(3 * 5 * 4, 7, rng=1, dtype=dtype), nn.ReLU(),
        nn.Linear(7, 3, rng=2, dtype=dtype),
    )


@pytest.mark.parametrize("mode", ["matrix", "operator"])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("weights_only", [False, True])
def test_staged_step_equals_add_grad_alone(backend, rng, mode, training, weights_only):
    x = rng.standard_normal((3, 5, 4, 2))
    dlogits = rng.standard_normal((3, 3))
    results = []
    for staged in (False, True):
        model = backend.to(_mlp_cnn())
        regularizer = SpectralNormRegularizer(lam=LAM, seed=4, mode=mode).train(training)
        for _ in range(3):  # several steps: the stored vectors advance identically
            model.forward(backend.asarray(x))
            if staged:
                regularizer.stage(model)
            if staged and weights_only:
                model.backward_weights(backend.asarray(dlogits))  # folds too
            else:
                model.backward(backend.asarray(dlogits))
            # the fast path really was taken: the first Linear folded its term
            assert model[3].weight.rank_one_in_grad() == staged
            regularizer.add_grad(model)
        results.append(({n: backend.host(p.grad) for n, p in model.named_parameters()},
                        regularizer.state_dict()))
    (grads, states), (staged_grads, staged_states) = results
    assert grads.keys() == staged_grads.keys()
    for name in grads:
        np.testing.assert_allclose(staged_grads[name], grads[name], rtol=1e-12, atol=1e-13,
                                   err_msg=name)
    assert states.keys() == staged_states.keys()
    for key in states:
        np.testing.assert_allclose(staged_states[key], states[key], rtol=1e-12, atol=1e-14,
                                   err_msg=key)


def test_linear_backward_folds_a_requested_rank_one_term(backend, rng):
    layer = backend.to(nn.Linear(6, 4, rng=0, dtype=np.float64))
    x, dy = rng.standard_normal((1, 6)), rng.standard_normal((1, 4))  # batch 1: an edge shape
    a, b = rng.standard_normal(4), rng.standard_normal(6)
    layer.forward(backend.asarray(x))
    layer.weight.request_rank_one(backend.asarray(a), backend.asarray(b))
    dx = layer.backward(backend.asarray(dy))
    assert layer.weight.pending_rank_one is None and layer.weight.rank_one_in_grad()
    np.testing.assert_allclose(backend.host(layer.weight.grad), dy.T @ x + np.outer(a, b),
                               rtol=1e-13)
    np.testing.assert_allclose(backend.host(dx), dy @ backend.host(layer.weight.data),
                               rtol=1e-13)
    np.testing.assert_allclose(backend.host(layer.bias.grad), dy.sum(0), rtol=1e-13)
    # the term is used once: the next backward computes the plain gradient
    layer.backward(backend.asarray(dy))
    assert not layer.weight.rank_one_in_grad()
    np.testing.assert_allclose(backend.host(layer.weight.grad), dy.T @ x, rtol=1e-13)


def test_a_second_backward_after_the_fold_still_gets_the_term(rng):
    """stage(), then two backward passes (as in adversarial training): the term is added once,
    to the gradient that the optimizer will see."""
    x, dlogits = rng.standard_normal((2, 5, 4, 2)), rng.standard_normal((2, 3))
    reference, model = _mlp_cnn(), _mlp_cnn()
    plain = SpectralNormRegularizer(lam=LAM, seed=2)
    reference.forward(x)
    reference.backward(dlogits)
    plain.add_grad(reference)
    regularizer = SpectralNormRegularizer(lam=LAM, seed=2)
    model.forward(x)
    regularizer.stage(model)
    model.backward(dlogits)  # folds
    model.backward(dlogits)  # replaces every .grad without the term
    regularizer.add_grad(model)
    for (name, p), (_, q) in zip(model.named_parameters(), reference.named_parameters()):
        np.testing.assert_allclose(p.grad, q.grad, rtol=1e-12, atol=1e-13, err_msg=name)
        assert p.pending_rank_one is None


def test_staged_step_keeps_float32(rng):
    model = _mlp_cnn(np.float32)
    regularizer = SpectralNormRegularizer(lam=0.01)
    model.forward(rng.standard_normal((2, 5, 4, 2)).astype(np.float32))
    regularizer.stage(model)
    model.backward(rng.standard_normal((2, 3)).astype(np.float32))
    assert model[3].weight.rank_one_in_grad()
    regularizer.add_grad(model)
    assert all(p.grad.dtype == np.float32 for p in model.parameters())
    assert all(p.data.dtype == np.float32 for p in model.parameters())


def _plain_reference(model_factory, x, dlogits, seed=2):
    model = model_factory()
    regularizer = SpectralNormRegularizer(lam=LAM, seed=seed)
    model.forward(x)
    model.backward(dlogits)
    regularizer.add_grad(model)
    return {name: p.grad.copy() for name, p in model.named_parameters()}


def _staged_step(model, x, dlogits, seed=2, params=None):
    """forward, stage, backward, add_grad (on ``params``, default the model); the regularizer."""
    regularizer = SpectralNormRegularizer(lam=LAM, seed=seed)
    model.forward(x)
    regularizer.stage(model)
    model.backward(dlogits)
    regularizer.add_grad(model if params is None else params)
    return regularizer


def _assert_same_grads(model, reference, rtol=1e-12, atol=1e-13):
    for name, p in model.named_parameters():
        np.testing.assert_allclose(np.asarray(p.grad), reference[name], rtol=rtol, atol=atol,
                                   err_msg=name)


def test_spectral_norm_wrapper_is_not_folded_twice(rng):
    """A SpectralNorm-wrapped Linear transforms its layer's gradient: the term must be added to
    the final gradient only (found by review: it was folded and then added again)."""
    from specnorm_np.spectral import SpectralNorm

    def factory():
        return nn.Sequential(nn.Flatten(), SpectralNorm(nn.Linear(12, 7, rng=0, dtype=np.float64)),
                             nn.ReLU(), nn.Linear(7, 3, rng=1, dtype=np.float64))

    x, dlogits = rng.standard_normal((2, 2, 3, 2)), rng.standard_normal((2, 3))
    model = factory()
    _staged_step(model, x, dlogits)
    _assert_same_grads(model, _plain_reference(factory, x, dlogits))


def test_add_grad_after_stage_needs_the_same_weights(rng):
    x, dlogits = rng.standard_normal((2, 5, 4, 2)), rng.standard_normal((2, 3))
    # the same weights as a list of Parameters (other names) are fine
    model = _mlp_cnn()
    regularizer = _staged_step(model, x, dlogits, params=model.parameters())
    _assert_same_grads(model, _plain_reference(_mlp_cnn, x, dlogits))
    assert sorted(regularizer.states) == ["0.weight", "3.weight", "5.weight"]
    # another model's weights are refused, and the staged requests are cancelled
    other = _mlp_cnn()
    model.forward(x)
    regularizer.stage(model)
    with pytest.raises(ValueError, match="other weights than the preceding stage"):
        regularizer.add_grad(other)
    assert all(p.pending_rank_one is None for p in model.parameters())
    regularizer.stage(model)  # the failed step was discarded: a new one may start
    regularizer.discard_stage()


def test_stage_twice_raises_and_discard_stage_recovers(rng):
    model, regularizer = _mlp_cnn(), SpectralNormRegularizer(lam=LAM)
    model.forward(rng.standard_normal((2, 5, 4, 2)))
    regularizer.stage(model)
    with pytest.raises(RuntimeError, match="discard_stage"):
        regularizer.stage(model)
    regularizer.discard_stage()
    assert all(p.pending_rank_one is None for p in model.parameters())
    regularizer.stage(model)
    regularizer.discard_stage()


def test_a_new_forward_cancels_an_unused_request(rng):
    """stage() without add_grad must not leak into a later, unrelated backward pass."""
    model, regularizer = _mlp_cnn(), SpectralNormRegularizer(lam=LAM)
    x, dlogits = rng.standard_normal((2, 5, 4, 2)), rng.standard_normal((2, 3))
    model.forward(x)
    regularizer.stage(model)
    model.forward(x)  # e.g. a sensitivity measurement
    model.backward(dlogits)
    plain = _mlp_cnn()
    plain.forward(x)
    plain.backward(dlogits)
    _assert_same_grads(model, {n: p.grad for n, p in plain.named_parameters()}, rtol=0, atol=0)
    # add_grad then adds every term itself, the same as the plain path
    regularizer.add_grad(model)
    _assert_same_grads(model, _plain_reference(_mlp_cnn, x, dlogits, seed=0))


@pytest.mark.parametrize("move", ["astype", "to_strict"])
def test_moving_the_model_between_stage_and_add_grad(rng, move):
    from specnorm_np.testing import strict

    x, dlogits = rng.standard_normal((2, 5, 4, 2)), rng.standard_normal((2, 3))
    reference = _plain_reference(_mlp_cnn, x, dlogits)
    model, regularizer = _mlp_cnn(), SpectralNormRegularizer(lam=LAM, seed=2)
    model.forward(x)
    regularizer.stage(model)
    model.backward(dlogits)  # folds into the float64 NumPy gradient
    if move == "astype":
        model.astype(np.float32)
    else:
        model.to("gpu", module=strict.xp)
    regularizer.add_grad(model)  # adds the unfolded terms on the new device / dtype, only once
    grads = {name: to_numpy(p.grad)
             for name, p in model.named_parameters()}
    for name, grad in grads.items():
        np.testing.assert_allclose(grad, reference[name], rtol=1e-5 if move == "astype" else 1e-12,
                                   atol=1e-6 if move == "astype" else 1e-13, err_msg=name)


def test_large_batches_are_not_folded_but_get_the_same_gradient(rng):
    """Folding copies dy and x; beyond N·(in+out) > in·out the separate add is cheaper."""
    def factory():
        return nn.Sequential(nn.Linear(6, 5, rng=0, dtype=np.float64))

    small, large = rng.standard_normal((2, 6)), rng.standard_normal((4, 6))  # 2·11 <= 30 < 4·11
    for x, folds in ((small, True), (large, False)):
        dlogits = rng.standard_normal((x.shape[0], 5))
        model, regularizer = factory(), SpectralNormRegularizer(lam=LAM, seed=2)
        model.forward(x)
        regularizer.stage(model)
        model.backward(dlogits)
        assert model[0].weight.rank_one_in_grad() == folds
        regularizer.add_grad(model)
        _assert_same_grads(model, _plain_reference(factory, x, dlogits))
