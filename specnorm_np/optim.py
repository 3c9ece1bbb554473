"""Stochastic gradient descent with (Nesterov) momentum, and a step learning-rate schedule.

The optimizer sees only :class:`~specnorm_np.nn.Parameter` objects: it reads ``.grad`` and
updates ``.data`` in place. Its per-parameter state (the momentum buffer) lives in
``Parameter.state["momentum_buffer"]``, so ``model.to("gpu")`` moves it with the parameter and
nothing here knows about devices: every array operation runs on the arrays it is given.

The paper (Yoshida & Miyato, 2017, Section 4) trains with Nesterov momentum 0.9 and multiplies
the learning rate by 0.1 at 50% and at 75% of training::

    optimizer = SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    schedule = MultiStepLR(optimizer, total=steps, milestones=(0.5, 0.75), gamma=0.1)
    for step in range(steps):
        ...                      # forward, loss, backward (fills .grad)
        optimizer.step()
        schedule.step()
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from specnorm_np._validation import check_int, check_number
from specnorm_np.backend import get_array_module, to_numpy
from specnorm_np.nn.module import Module, Parameter

__all__ = ["SGD", "MultiStepLR"]

_BUFFER = "momentum_buffer"


class SGD:
    """SGD with optional heavy-ball or Nesterov momentum, in PyTorch's formulation.

    For each parameter p with gradient g (momentum μ, learning rate η)::

        v ← μ·v + g                (v starts at 0, so the first step has v = g)
        step = g + μ·v   if nesterov else   v
        p ← p - η·step

    Parameters
    ----------
    params : iterable of Parameter (or a Module, meaning its ``parameters()``)
    lr : float
        Learning rate η >= 0; the attribute ``lr`` is what schedules change.
    momentum : float
        μ in [0, 1).
    nesterov : bool
        Nesterov's look-ahead form; needs ``momentum > 0``.

    Parameters whose ``.grad`` is None are skipped (left unchanged).
    """

    def __init__(
        self,
        params: Iterable[Parameter] | Module,
        lr: float,
        momentum: float = 0.0,
        nesterov: bool = False,
    ) -> None:
        if isinstance(params, Module):
            params = params.parameters()
        self.params: list[Parameter] = list(params)
        if not self.params:
            raise ValueError("SGD: got an empty parameter list")
        for i, p in enumerate(self.params):
            if not isinstance(p, Parameter):
                raise TypeError(f"SGD: params[{i}] is {type(p).__name__}, expected a Parameter")
        if len({id(p) for p in self.params}) != len(self.params):
            raise ValueError("SGD: a parameter appears more than once in params")
        self.lr = check_number(lr, "lr", "SGD", minimum=0)
        self.momentum = check_number(momentum, "momentum", "SGD", minimum=0, maximum=1,
                                     open_high=True)
        if nesterov and momentum == 0:
            raise ValueError("SGD: nesterov=True needs momentum > 0")
        self.nesterov = bool(nesterov)

    def zero_grad(self) -> None:
        """Forget every gradient (``p.grad = None``)."""
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        """Update every parameter that has a gradient, in place."""
        for i, p in enumerate(self.params):
            g = p.grad
            if g is None:
                continue
            if tuple(g.shape) != tuple(p.data.shape):
                raise ValueError(
                    f"SGD: parameter {i} ({p.name!r}) has shape {tuple(p.data.shape)} but its "
                    f"gradient has shape {tuple(g.shape)}"
                )
            if self.momentum == 0.0:
                p.data -= self.lr * g
                continue
            velocity = p.state.get(_BUFFER)
            if velocity is None:
                velocity = g.copy()  # v = μ·0 + g
                p.state[_BUFFER] = velocity
            else:
                velocity *= self.momentum
                velocity += g
            if self.nesterov:
                p.data -= self.lr * g
                p.data -= (self.lr * self.momentum) * velocity
            else:
                p.data -= self.lr * velocity

    # ---- checkpoints --------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Hyper-parameters and host copies of the momentum buffers, keyed by parameter position.

        ``{"lr", "momentum", "nesterov", "state": {index: {"momentum_buffer": ndarray}}}``
        """
        state = {
            i: {_BUFFER: to_numpy(p.state[_BUFFER]).copy()}
            for i, p in enumerate(self.params)
            if p.state.get(_BUFFER) is not None
        }
        return {"lr": self.lr, "momentum": self.momentum, "nesterov": self.nesterov,
                "state": state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved, onto each parameter's device and dtype.

        Raises ``KeyError`` for a missing entry and ``ValueError`` for a parameter index that
        does not exist or a buffer of the wrong shape.
        """
        for key in ("lr", "momentum", "nesterov", "state"):
            if key not in state:
                raise KeyError(f"SGD.load_state_dict: missing entry {key!r}")
        buffers = {}
        for index, entry in state["state"].items():
            i = int(index)
            if not 0 <= i < len(self.params):
                raise ValueError(
                    f"SGD.load_state_dict: state for parameter {i}, but the optimizer has "
                    f"{len(self.params)} parameters"
                )
            value, p = entry[_BUFFER], self.params[i]
            if tuple(value.shape) != tuple(p.data.shape):
                raise ValueError(
                    f"SGD.load_state_dict: momentum buffer {i} has shape {tuple(value.shape)}, "
                    f"parameter {i} ({p.name!r}) has shape {tuple(p.data.shape)}"
                )
            buffers[i] = value
        self.lr = float(state["lr"])
        self.momentum = float(state["momentum"])
        self.nesterov = bool(state["nesterov"])
        for i, p in enumerate(self.params):
            if i not in buffers:
                p.state.pop(_BUFFER, None)
                continue
            host = np.array(to_numpy(buffers[i]), dtype=p.data.dtype, copy=True)
            xp = get_array_module(p.data)
            p.state[_BUFFER] = host if xp is np else xp.asarray(host)

    def __repr__(self) -> str:
        return (f"SGD({len(self.params)} parameters, lr={self.lr}, momentum={self.momentum}, "
                f"nesterov={self.nesterov})")


class MultiStepLR:
    """Multiply the optimizer's learning rate by ``gamma`` at fractions of training.

    ``lr_at(t) = base_lr · gamma^k`` where k counts the milestones with ``t >= fraction·total``.
    With the paper's defaults (``milestones=(0.5, 0.75)``, ``gamma=0.1``) and ``total=100``:
    steps 0-49 use base_lr, 50-74 use base_lr/10, 75-99 use base_lr/100.

    Parameters
    ----------
    optimizer : SGD (anything with an ``lr`` attribute)
        Its current ``lr`` becomes ``base_lr``; it is set to ``lr_at(0)`` at construction.
    total : int
        Length of training in the unit :meth:`step` is called in (steps or epochs).
    milestones : sequence of float
        Strictly increasing fractions in (0, 1).
    gamma : float
        Factor applied at each milestone, > 0.
    warmup : int
        Linear warm-up over the first ``warmup`` steps (0, the default and the paper's choice,
        means none): step t < warmup uses ``lr_at(t) · (t + 1) / warmup``.
    """

    def __init__(
        self,
        optimizer: Any,
        total: int,
        milestones: Sequence[float] = (0.5, 0.75),
        gamma: float = 0.1,
        warmup: int = 0,
    ) -> None:
        total = check_int(total, "total", "MultiStepLR", minimum=1)
        fractions = [float(f) for f in milestones]
        if any(not 0.0 < f < 1.0 for f in fractions):
            raise ValueError(f"MultiStepLR: milestones must be fractions in (0, 1), got "
                             f"{tuple(milestones)}")
        if any(b <= a for a, b in zip(fractions, fractions[1:])):
            raise ValueError(f"MultiStepLR: milestones must be strictly increasing, got "
                             f"{tuple(milestones)}")
        gamma = check_number(gamma, "gamma", "MultiStepLR", minimum=0, open_low=True)
        warmup = check_int(warmup, "warmup", "MultiStepLR", minimum=0)
        if warmup >= total:
            raise ValueError(f"MultiStepLR: warmup must be an int in [0, total), got {warmup!r}")
        if not hasattr(optimizer, "lr"):
            raise TypeError("MultiStepLR: optimizer has no 'lr' attribute")
        self.optimizer = optimizer
        self.total = int(total)
        self.milestones = tuple(fractions)
        self.gamma = float(gamma)
        self.warmup = int(warmup)
        self.base_lr = float(optimizer.lr)
        self.last_step = 0
        self.optimizer.lr = self.lr_at(0)

    @property
    def milestone_steps(self) -> tuple[int, ...]:
        """The first step of each reduced phase: ceil(fraction·total) (rounded to tame float
        noise such as 0.1·30 = 3.0000000000000004)."""
        return tuple(math.ceil(round(f * self.total, 9)) for f in self.milestones)

    def lr_at(self, step: int) -> float:
        """The learning rate for step (or epoch) ``step``, counting from 0."""
        passed = sum(step >= s for s in self.milestone_steps)
        lr = self.base_lr * self.gamma**passed
        if step < self.warmup:
            lr *= (step + 1) / self.warmup
        return lr

    def step(self) -> float:
        """Advance by one step (or epoch) and set the optimizer's ``lr``; returns it."""
        self.last_step += 1
        self.optimizer.lr = self.lr_at(self.last_step)
        return self.optimizer.lr

    def state_dict(self) -> dict[str, Any]:
        return {"base_lr": self.base_lr, "last_step": self.last_step, "total": self.total,
                "milestones": self.milestones, "gamma": self.gamma, "warmup": self.warmup}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the schedule's position and set the optimizer's ``lr`` accordingly."""
        missing = {"base_lr", "last_step", "total", "milestones", "gamma"} - set(state)
        if missing:
            raise KeyError(f"MultiStepLR.load_state_dict: missing entries {sorted(missing)}")
        self.base_lr = float(state["base_lr"])
        self.last_step = int(state["last_step"])
        self.total = int(state["total"])
        self.milestones = tuple(float(f) for f in state["milestones"])
        self.gamma = float(state["gamma"])
        self.warmup = int(state.get("warmup", 0))  # (states saved before warm-up existed)
        self.optimizer.lr = self.lr_at(self.last_step)

    def __repr__(self) -> str:
        return (f"MultiStepLR(total={self.total}, milestones={self.milestones}, "
                f"gamma={self.gamma}, base_lr={self.base_lr}, warmup={self.warmup})")
