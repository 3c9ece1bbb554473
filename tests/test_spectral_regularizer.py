"""SpectralNormRegularizer: gradients, modes, state, the operator mode (float64 for numbers)."""

from __future__ import annotations

import numpy as np
import pytest

from specnorm_np import nn
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
    with pytest.raises(ValueError, match="lam must be a finite number >= 0"):
        SpectralNormRegularizer(lam=-1)
    with pytest.raises(ValueError, match="power_iterations must be an int >= 1"):
        SpectralNormRegularizer(power_iterations=0)
    with pytest.raises(ValueError, match="mode must be one of .matrix., .operator."):
        SpectralNormRegularizer(mode="conv")


# ---- add_grad on a gradient zeroed in place ------------------------------------------------------
@pytest.mark.parametrize("shape", [(7, 5), (6, 3, 2, 4), (3000, 2), (300, 64), (40, 3, 3, 50)])
def test_add_grad_on_a_gradient_zeroed_in_place_holds_exactly_the_term(rng, shape):
    """A gradient zeroed in place (``grad[...] = 0``, as a user might between steps) and then
    ``add_grad`` holds λσuvᵀ of this step's power iteration, to the last bit of the float
    arithmetic; the (3000, 2) weight spans several blocks of the in-place reference update,
    (300, 64) and (40, 3, 3, 50) are large enough for the BLAS route."""
    weight = _weight(shape, rng)
    weight.grad = rng.standard_normal(shape)
    grad_array = weight.grad
    grad_array[...] = 0.0
    regularizer = SpectralNormRegularizer(lam=LAM, seed=3)
    regularizer.add_grad([weight])
    assert weight.grad is grad_array  # updated in place, not replaced
    (name,) = regularizer.states
    u, v = regularizer.vectors(name)
    sigma = regularizer.states[name].sigma
    expected = ((LAM * sigma) * u)[:, None] * v[None, :]
    np.testing.assert_array_equal(weight.grad.reshape(shape[0], -1), expected)



# ---- the two routes of the in-place rank-one update ---------------------------------------------
@pytest.mark.parametrize("shape,dtype", [((512, 300), np.float32), ((130, 131), np.float64),
                                         ((64, 3, 3, 32), np.float32), ((1, 20000), np.float32),
                                         ((20000, 1), np.float64)])
def test_blas_rank_one_route_equals_the_reference(rng, shape, dtype, monkeypatch):
    """The BLAS ``?ger`` route updates the gradient's own memory and agrees with the plain
    blocked reference to rounding (FMA may differ in the last bit: 4 ulp allowed)."""
    from specnorm_np.spectral import regularizer as module

    grad = rng.standard_normal(shape).astype(dtype)
    reference = grad.copy()
    u = rng.standard_normal(shape[0]).astype(dtype)
    v = rng.standard_normal(int(np.prod(shape[1:]))).astype(dtype)
    scale = dtype(0.37)
    module._add_rank_one_blocked(reference, scale, u, v)
    before = grad.__array_interface__["data"][0]

    def no_reference(*args):
        raise AssertionError("the reference route was taken for a BLAS-sized gradient")

    monkeypatch.setattr(module, "_add_rank_one_blocked", no_reference)
    module._add_rank_one(grad, scale, u, v)
    assert grad.__array_interface__["data"][0] == before and grad.flags.c_contiguous
    ulp = np.finfo(dtype).eps
    np.testing.assert_allclose(grad, reference, rtol=4 * ulp,
                               atol=4 * ulp * np.abs(reference).max())


def test_blas_rank_one_route_leaves_thread_pools_as_they_were(rng):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from specnorm_np.spectral import regularizer as module

    grad = rng.standard_normal((256, 256)).astype(np.float32)
    u, v = rng.standard_normal(256).astype(np.float32), rng.standard_normal(256).astype(np.float32)
    module._add_rank_one(grad, 0.5, u, v)  # loads SciPy's BLAS before the snapshot
    before = [(i["filepath"], i["num_threads"]) for i in threadpoolctl.threadpool_info()]
    with threadpoolctl.threadpool_limits(limits=1):
        module._add_rank_one(grad, 0.5, u, v)
        inside = [i["num_threads"] for i in threadpoolctl.threadpool_info()]
    module._add_rank_one(grad, 0.5, u, v)
    assert [(i["filepath"], i["num_threads"]) for i in threadpoolctl.threadpool_info()] == before
    assert set(inside) == {1}  # a user's limit is kept as well


@pytest.mark.parametrize("case", ["small", "float16", "strided"])
def test_rank_one_falls_back_to_the_reference_route(rng, case, monkeypatch):
    from specnorm_np.spectral import regularizer as module

    def no_blas(*args):
        raise AssertionError("the BLAS route was taken")

    monkeypatch.setattr(module, "_add_rank_one_blas", no_blas)
    if case == "small":
        grad = rng.standard_normal((20, 30))
    elif case == "float16":
        grad = rng.standard_normal((300, 300)).astype(np.float16)
    else:
        grad = rng.standard_normal((300, 600))[:, ::2]  # not contiguous: no in-place matrix view
    expected = grad.astype(np.float64) + 0.5  # scale 0.5 times an all-ones outer product
    module._add_rank_one(grad, grad.dtype.type(0.5), np.ones(grad.shape[0], grad.dtype),
                         np.ones(grad.shape[1], grad.dtype))
    np.testing.assert_allclose(grad, expected, rtol=1e-3 if case == "float16" else 1e-12)


def test_a_read_only_gradient_is_refused_not_written(rng):
    """A read-only gradient (e.g. ``np.frombuffer`` of bytes, a read-only memmap) must never be
    written through BLAS: it gets the reference route's NumPy error and stays unchanged."""
    from specnorm_np.spectral import regularizer as module

    grad = rng.standard_normal((256, 128)).astype(np.float32)
    grad.flags.writeable = False
    before = grad.copy()
    ones_u, ones_v = np.ones(256, np.float32), np.ones(128, np.float32)
    with pytest.raises(ValueError, match="read-only"):
        module._add_rank_one(grad, np.float32(0.5), ones_u, ones_v)
    np.testing.assert_array_equal(grad, before)


def test_without_thread_pool_introspection_the_blas_route_is_never_used(rng, monkeypatch):
    """If threadpoolctl cannot inspect the BLAS libraries, ger cannot be held at one thread: the
    reference route is used on every call, not only on the first."""
    import threadpoolctl

    from specnorm_np.spectral import regularizer as module

    def broken(*args, **kwargs):
        raise RuntimeError("no introspection here")

    monkeypatch.setattr(threadpoolctl, "ThreadpoolController", broken)
    monkeypatch.setattr(module, "_blas_pools", None)
    calls = []
    reference = module._add_rank_one_blocked
    monkeypatch.setattr(module, "_add_rank_one_blocked",
                        lambda *a: (calls.append(1), reference(*a)))
    grad = rng.standard_normal((256, 128)).astype(np.float32)
    for _ in range(3):
        module._add_rank_one(grad, np.float32(0.5), np.ones(256, np.float32),
                             np.ones(128, np.float32))
    assert len(calls) == 3 and module._blas_pools is False
