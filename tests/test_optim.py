"""SGD (plain, heavy-ball, Nesterov) and the MultiStepLR schedule."""

from __future__ import annotations

import numpy as np
import pytest

from specnorm_np import nn
from specnorm_np.optim import SGD, MultiStepLR
from specnorm_np.testing import strict

GRADIENTS = [1.0, 2.0, -1.0]
# p0 = 1, lr = 0.1, μ = 0.9, worked by hand from v ← μv + g; step = v or g + μv; p ← p - lr·step
EXPECTED = {
    "plain": [0.9, 0.7, 0.8],
    "momentum": [0.9, 0.61, 0.449],  # v = 1, 2.9, 1.61
    "nesterov": [0.81, 0.349, 0.3041],  # step = 1.9, 4.61, 0.449
}


@pytest.mark.parametrize("kind", list(EXPECTED))
def test_hand_computed_sequence(backend, kind: str) -> None:
    p = nn.Parameter(backend.asarray(np.array([1.0])), "w")
    momentum = 0.0 if kind == "plain" else 0.9
    optimizer = SGD([p], lr=0.1, momentum=momentum, nesterov=kind == "nesterov")
    values = []
    for g in GRADIENTS:
        p.grad = backend.asarray(np.array([g]))
        optimizer.step()
        values.append(float(backend.host(p.data)[0]))
    np.testing.assert_allclose(values, EXPECTED[kind], rtol=1e-12)
    if kind != "plain":
        np.testing.assert_allclose(backend.host(p.state["momentum_buffer"]), [1.61], rtol=1e-12)
    else:
        assert "momentum_buffer" not in p.state


@pytest.mark.parametrize("nesterov", [False, True])
def test_matches_torch_sgd_when_installed(nesterov: bool) -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    start = rng.standard_normal((3, 4))
    grads = [rng.standard_normal((3, 4)) for _ in range(4)]
    ours = nn.Parameter(start.copy(), "w")
    theirs = torch.nn.Parameter(torch.tensor(start))
    opt = SGD([ours], lr=0.05, momentum=0.9, nesterov=nesterov)
    reference = torch.optim.SGD([theirs], lr=0.05, momentum=0.9, nesterov=nesterov)
    for g in grads:
        ours.grad = g.copy()
        theirs.grad = torch.tensor(g)
        opt.step()
        reference.step()
    np.testing.assert_allclose(ours.data, theirs.detach().numpy(), rtol=1e-12)


def test_float32_is_kept_and_none_grads_are_skipped() -> None:
    a = nn.Parameter(np.ones(3, dtype=np.float32), "a")
    b = nn.Parameter(np.ones(2, dtype=np.float32), "b")
    optimizer = SGD([a, b], lr=0.5, momentum=0.9, nesterov=True)
    a.grad = np.full(3, 0.25, dtype=np.float32)
    optimizer.step()
    assert a.data.dtype == np.float32 and a.state["momentum_buffer"].dtype == np.float32
    np.testing.assert_allclose(a.data, 1 - 0.5 * (0.25 + 0.9 * 0.25))
    np.testing.assert_array_equal(b.data, 1)  # no gradient: untouched
    assert "momentum_buffer" not in b.state
    optimizer.zero_grad()
    assert a.grad is None and b.grad is None


def test_accepts_a_module() -> None:
    model = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
    assert SGD(model, lr=0.1).params == model.parameters()


def test_validation() -> None:
    p = nn.Parameter(np.zeros(2), "w")
    with pytest.raises(ValueError, match="SGD: lr must be a finite number >= 0, got -0.1"):
        SGD([p], lr=-0.1)
    with pytest.raises(ValueError, match="SGD: momentum must be a finite number in \\[0, 1\\)"):
        SGD([p], lr=0.1, momentum=1.0)
    with pytest.raises(ValueError, match="nesterov=True needs momentum > 0"):
        SGD([p], lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="empty parameter list"):
        SGD([], lr=0.1)
    with pytest.raises(ValueError, match="appears more than once"):
        SGD([p, p], lr=0.1)
    with pytest.raises(TypeError, match="params\\[0\\] is ndarray, expected a Parameter"):
        SGD([np.zeros(2)], lr=0.1)
    p.grad = np.zeros(3)
    with pytest.raises(ValueError, match=r"parameter 0 \('w'\) has shape \(2,\) but its gradient"):
        SGD([p], lr=0.1).step()


def make_params(seed: int) -> list[nn.Parameter]:
    rng = np.random.default_rng(seed)
    return [nn.Parameter(rng.standard_normal((2, 3)), "w"), nn.Parameter(rng.standard_normal(3))]


def run(optimizer: SGD, steps: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        for p in optimizer.params:
            p.grad = rng.standard_normal(p.data.shape)
        optimizer.step()


def test_state_dict_round_trip_continues_identically() -> None:
    params = make_params(0)
    optimizer = SGD(params, lr=0.1, momentum=0.9, nesterov=True)
    run(optimizer, 3, seed=1)
    state = optimizer.state_dict()
    assert set(state["state"]) == {0, 1} and isinstance(state["state"][0]["momentum_buffer"],
                                                        np.ndarray)
    state["state"][0]["momentum_buffer"] += 0  # a copy, not the live buffer
    copies = [nn.Parameter(p.data.copy(), p.name) for p in params]
    resumed = SGD(copies, lr=1.0, momentum=0.5)
    resumed.load_state_dict(state)
    assert (resumed.lr, resumed.momentum, resumed.nesterov) == (0.1, 0.9, True)
    run(optimizer, 2, seed=2)
    run(resumed, 2, seed=2)
    for p, q in zip(params, copies):
        np.testing.assert_array_equal(p.data, q.data)


def test_load_state_dict_onto_device_and_errors() -> None:
    optimizer = SGD(make_params(0), lr=0.1, momentum=0.9)
    run(optimizer, 1, seed=0)
    state = optimizer.state_dict()
    device_params = [nn.Parameter(strict.asarray(p.data.astype(np.float32))) for p in
                     optimizer.params]
    target = SGD(device_params, lr=0.1, momentum=0.9)
    target.load_state_dict(state)
    buffer = device_params[0].state["momentum_buffer"]
    assert isinstance(buffer, strict.StrictArray) and buffer.dtype == np.float32

    with pytest.raises(KeyError, match="missing entry 'lr'"):
        target.load_state_dict({k: v for k, v in state.items() if k != "lr"})
    bad_index = dict(state, state={5: state["state"][0]})
    with pytest.raises(ValueError, match="state for parameter 5, but the optimizer has 2"):
        target.load_state_dict(bad_index)
    bad_shape = dict(state, state={1: state["state"][0]})
    with pytest.raises(ValueError, match=r"momentum buffer 1 has shape \(2, 3\)"):
        target.load_state_dict(bad_shape)


def test_multistep_schedule_at_half_and_three_quarters() -> None:
    optimizer = SGD(make_params(0), lr=0.2, momentum=0.9, nesterov=True)
    schedule = MultiStepLR(optimizer, total=100)
    assert schedule.milestone_steps == (50, 75)
    seen = [optimizer.lr]
    for _ in range(99):
        seen.append(schedule.step())
    assert seen == [schedule.lr_at(t) for t in range(100)]
    np.testing.assert_allclose(seen[:50], 0.2)
    np.testing.assert_allclose(seen[50:75], 0.02)
    np.testing.assert_allclose(seen[75:], 0.002)
    assert optimizer.lr == pytest.approx(0.002)


def test_multistep_rounding_and_custom_milestones() -> None:
    optimizer = SGD(make_params(0), lr=1.0)
    schedule = MultiStepLR(optimizer, total=30, milestones=(0.1, 0.5, 0.9), gamma=0.5)
    assert schedule.milestone_steps == (3, 15, 27)  # 0.1·30 is 3.0000000000000004 in floats
    assert [schedule.lr_at(t) for t in (2, 3, 14, 15, 26, 27)] == [1, 0.5, 0.5, 0.25, 0.25, 0.125]
    odd = MultiStepLR(SGD(make_params(0), lr=1.0), total=7)  # 3.5 -> 4, 5.25 -> 6
    assert odd.milestone_steps == (4, 6)


def test_multistep_state_dict_and_validation() -> None:
    optimizer = SGD(make_params(0), lr=0.1)
    schedule = MultiStepLR(optimizer, total=10)
    for _ in range(6):
        schedule.step()
    state = schedule.state_dict()
    fresh_optimizer = SGD(make_params(0), lr=0.1)
    fresh = MultiStepLR(fresh_optimizer, total=10)
    fresh.load_state_dict(state)
    assert fresh.last_step == 6 and fresh_optimizer.lr == pytest.approx(0.01)
    with pytest.raises(KeyError, match="missing entries \\['gamma'\\]"):
        fresh.load_state_dict({k: v for k, v in state.items() if k != "gamma"})
    with pytest.raises(ValueError, match="MultiStepLR: total must be an int >= 1"):
        MultiStepLR(optimizer, total=0)
    with pytest.raises(ValueError, match="milestones must be fractions in \\(0, 1\\)"):
        MultiStepLR(optimizer, total=10, milestones=(0.5, 75))
    with pytest.raises(ValueError, match="strictly increasing"):
        MultiStepLR(optimizer, total=10, milestones=(0.75, 0.5))
    with pytest.raises(ValueError, match="MultiStepLR: gamma must be a finite number > 0"):
        MultiStepLR(optimizer, total=10, gamma=0)
