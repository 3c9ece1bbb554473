"""One trainer for the paper's methods, with per-epoch metrics, checkpoints and resume.

Methods (Yoshida & Miyato 2017, Section 4; all hyper-parameters overridable in
:class:`TrainConfig`):

* ``vanilla``: plain cross-entropy.
* ``decay``: + (λ/2)·Σ‖W‖², λ = 1e-4, on weights only (``WeightDecay``).
* ``adversarial``: α·L(x) + (1−α)·L(x + η), η = ε·g/‖g‖₂, g = ∇ₓL; ε = 1, α = 0.5.
* ``spectral``: + (λ/2)·Σσ(W)², λ = 0.01, σ of the reshaped kernel by one power-iteration
  step per SGD step (``SpectralNormRegularizer``).
* ``spectral-operator``: beyond the paper, the same penalty on the true operator norm of each
  convolution (``mode="operator"``).

Each step: forward, loss, backward (fills ``.grad``), the regularizer adds its gradient, then
Nesterov SGD (momentum 0.9) updates and the learning rate follows ``MultiStepLR`` (×0.1 at 50%
and 75% of all steps). After every epoch the model is evaluated (eval mode) on the full training
and test sets, σ of every weight is logged, the input-gradient norms are measured at
``input_grad_checkpoints`` evenly spaced epochs, and a checkpoint is written atomically. After
the last epoch: the top Hessian eigenvalue on training and test examples and the full singular
values of every weight (see :mod:`specnorm_np.metrics` for the exact definitions).

Determinism: the model's initialisation, the regularizer's vectors and the shuffling all derive
from ``config.seed``; the same seed gives the same history (timings aside), and a run resumed
from a checkpoint ends exactly where an uninterrupted one does.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from specnorm_np import metrics
from specnorm_np.backend import to_numpy
from specnorm_np.checkpoint import load_checkpoint, save_checkpoint
from specnorm_np.models import MODEL_NAMES, build_model
from specnorm_np.nn.losses import SoftmaxCrossEntropy
from specnorm_np.optim import SGD, MultiStepLR

__all__ = ["METHODS", "TrainConfig", "DataSplits", "TrainResult", "TrainingDiverged", "Trainer",
           "train"]

METHODS = ("vanilla", "decay", "adversarial", "spectral", "spectral-operator")
CHECKPOINT_FORMAT = 1


class TrainingDiverged(RuntimeError):
    """The loss or a parameter became NaN or infinite."""


def check_finite(loss: float) -> None:
    """Raise :class:`TrainingDiverged` when ``loss`` is NaN/Inf."""
    if not math.isfinite(loss):
        raise TrainingDiverged(f"the training loss is {loss}")


def make_regularizer(config: TrainConfig) -> Any:
    """The regularizer object of ``config.method`` (None for vanilla and adversarial)."""
    if config.method == "decay":
        from specnorm_np.regularizers import WeightDecay

        return WeightDecay(lam=config.weight_decay)
    if config.method in ("spectral", "spectral-operator"):
        from specnorm_np.regularizers import SpectralNormRegularizer

        mode = "operator" if config.method == "spectral-operator" else "matrix"
        return SpectralNormRegularizer(lam=config.spectral_lambda, mode=mode,
                                       power_iterations=config.power_iterations, seed=config.seed)
    return None


def adversarial_step(model: Any, criterion: Any, x: Any, y: Any, *, epsilon: float,
                     alpha: float) -> tuple[float, Any]:
    """The paper's Eq. (3) step (gradients left in ``.grad``); returns (loss, clean logits)."""
    from specnorm_np.adversarial import adversarial_loss_and_grad

    loss, logits = adversarial_loss_and_grad(model, criterion, x, y, epsilon=epsilon, alpha=alpha)
    return float(loss), logits


def random_states(model: Any) -> list[Any]:
    """Bit-generator states of the model's stochastic layers (attribute ``_rng``), in order."""
    return [m._rng.bit_generator.state for m in model.modules()
            if isinstance(getattr(m, "_rng", None), np.random.Generator)]


def restore_random_states(model: Any, states: list[Any]) -> None:
    generators = [m._rng for m in model.modules()
                  if isinstance(getattr(m, "_rng", None), np.random.Generator)]
    if len(generators) != len(states):
        raise ValueError(f"checkpoint holds {len(states)} random states, the model has "
                         f"{len(generators)} stochastic layers")
    for generator, state in zip(generators, states):
        generator.bit_generator.state = state


def progress_bar(items: list[Any], description: str, quiet: bool) -> Any:
    """A tqdm bar over ``items`` (disabled when ``quiet``), removed when done."""
    from tqdm.auto import tqdm

    return tqdm(items, desc=description, leave=False, disable=quiet, unit="batch")


@dataclass
class TrainConfig:
    """Everything that defines a run (saved in its checkpoint; resume requires the same)."""

    method: str = "vanilla"
    model: str = "vgg"
    width: int | None = None
    epochs: int = 10
    batch_size: int = 64
    lr: float = 0.01
    momentum: float = 0.9
    nesterov: bool = True
    milestones: tuple[float, ...] = (0.5, 0.75)
    gamma: float = 0.1
    seed: int = 0
    weight_decay: float = 1e-4
    spectral_lambda: float = 0.01
    power_iterations: int = 1
    adversarial_epsilon: float = 1.0
    adversarial_alpha: float = 0.5
    input_grad_checkpoints: int = 5
    metric_examples: int = 1000
    hessian: bool = True
    hessian_examples: int = 500
    hessian_iterations: int = 20
    eval_batch_size: int = 500

    def __post_init__(self) -> None:
        self.milestones = tuple(float(m) for m in self.milestones)
        if self.method not in METHODS:
            raise ValueError(f"TrainConfig: unknown method {self.method!r}; "
                             f"choose one of {list(METHODS)}")
        if self.model not in MODEL_NAMES:
            raise ValueError(f"TrainConfig: unknown model {self.model!r}; "
                             f"choose one of {list(MODEL_NAMES)}")
        for name in ("epochs", "batch_size", "eval_batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"TrainConfig: {name} must be >= 1, got {getattr(self, name)}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class DataSplits:
    """Preprocessed float arrays: ``x_*`` (N, H, W, C) float32, ``y_*`` (N,) int64."""

    x_train: Any
    y_train: Any
    x_test: Any
    y_test: Any
    name: str = "data"
    num_classes: int = 10

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(int(v) for v in self.x_train.shape[1:])  # type: ignore[return-value]


@dataclass
class TrainResult:
    config: dict[str, Any]
    history: list[dict[str, Any]]
    final: dict[str, Any]
    model: Any = field(repr=False, default=None)


def input_grad_epochs(epochs: int, count: int) -> list[int]:
    """``count`` evenly spaced epochs from 1 to ``epochs`` (fewer if epochs < count)."""
    if count <= 0:
        return []
    return sorted({int(round(e)) for e in np.linspace(1, epochs, count)})


class Trainer:
    """Train one model with one method; see the module docstring.

    Parameters
    ----------
    config : TrainConfig
    data : DataSplits
    checkpoint_path : path, optional
        Where to write the checkpoint after every epoch (atomically). None: no checkpoints.
    quiet : bool
        No progress bar.
    """

    def __init__(self, config: TrainConfig, data: DataSplits, *,
                 checkpoint_path: str | Path | None = None, quiet: bool = False) -> None:
        n_train = int(data.x_train.shape[0])
        if config.batch_size > n_train:
            raise ValueError(f"Trainer: batch_size {config.batch_size} is larger than the "
                             f"training set ({n_train} examples)")
        self.config, self.data, self.quiet = config, data, quiet
        self.checkpoint_path = None if checkpoint_path is None else Path(checkpoint_path)
        self.model = build_model(config.model, data.input_shape, data.num_classes,
                                 seed=config.seed, width=config.width)
        self.params = self.model.parameters()
        self.optimizer = SGD(self.params, lr=config.lr, momentum=config.momentum,
                             nesterov=config.nesterov)
        self.steps_per_epoch = math.ceil(n_train / config.batch_size)
        self.schedule = MultiStepLR(self.optimizer, config.epochs * self.steps_per_epoch,
                                    milestones=config.milestones, gamma=config.gamma)
        self.regularizer = make_regularizer(config)
        self.criterion = SoftmaxCrossEntropy()
        self.shuffle_rng = np.random.default_rng([config.seed, 1])
        self.history: list[dict[str, Any]] = []
        self.final: dict[str, Any] = {}
        self.epoch = 0
        metric_rng = np.random.default_rng([config.seed, 2])
        m = min(config.metric_examples, n_train, int(data.x_test.shape[0]))
        self.metric_train = np.sort(metric_rng.permutation(n_train)[:m])
        self.metric_test = np.sort(metric_rng.permutation(int(data.x_test.shape[0]))[:m])

    # ---- checkpoints ----------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "config": self.config.to_dict(),
            "epoch": self.epoch,
            "model": dict(self.model.state_dict()),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "regularizer": None if self.regularizer is None else self.regularizer.state_dict(),
            "random": {"shuffle": self.shuffle_rng.bit_generator.state,
                       "modules": random_states(self.model)},
            "history": self.history,
            "final": self.final,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        saved, current = state.get("config", {}), self.config.to_dict()
        differing = [f"{k}: {saved.get(k)!r} in the file vs {current.get(k)!r} now"
                     for k in sorted(set(saved) | set(current)) if saved.get(k) != current.get(k)]
        if differing:
            raise ValueError(
                f"Trainer: the checkpoint {self.checkpoint_path} was written with a different "
                f"configuration ({'; '.join(differing)}); use another output directory or "
                "delete the checkpoint to start afresh"
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        if self.regularizer is not None:
            self.regularizer.load_state_dict(state["regularizer"])
        self.shuffle_rng.bit_generator.state = state["random"]["shuffle"]
        restore_random_states(self.model, state["random"]["modules"])
        self.history = list(state["history"])
        self.final = dict(state["final"] or {})
        self.epoch = int(state["epoch"])

    def save(self) -> None:
        if self.checkpoint_path is not None:
            save_checkpoint(self.checkpoint_path, self.state())

    # ---- training -------------------------------------------------------------------------------
    def train_step(self, xb: Any, yb: Any) -> tuple[float, float, float]:
        """One SGD step on a batch; returns (data loss, objective incl. penalty, accuracy)."""
        self.model.train()
        regularizer = self.regularizer
        if self.config.method == "adversarial":
            loss, logits = adversarial_step(self.model, self.criterion, xb, yb,
                                            epsilon=self.config.adversarial_epsilon,
                                            alpha=self.config.adversarial_alpha)
            check_finite(loss)
            penalty = 0.0 if regularizer is None else float(regularizer.penalty(self.model))
        else:
            logits = self.model.forward(xb)
            loss, dlogits = self.criterion(logits, yb)
            check_finite(loss)
            # the penalty with the current vectors, before this step's power iteration
            penalty = 0.0 if regularizer is None else float(regularizer.penalty(self.model))
            self.model.backward_weights(dlogits)  # dL/dx of the images is not needed here
        objective = loss + penalty
        if regularizer is not None:
            regularizer.add_grad(self.model)  # one power-iteration step, then += λσuvᵀ
        self.optimizer.step()
        self.schedule.step()
        return loss, objective, metrics.accuracy(logits, yb)

    def run_epoch(self) -> dict[str, Any]:
        cfg, data = self.config, self.data
        epoch = self.epoch + 1
        start, lr = time.perf_counter(), self.optimizer.lr
        order = self.shuffle_rng.permutation(int(data.x_train.shape[0]))
        batches = np.array_split(order, self.steps_per_epoch)
        sums = np.zeros(3)
        bar = progress_bar(batches, f"{cfg.method} B={cfg.batch_size} epoch {epoch}/{cfg.epochs}",
                           self.quiet)
        for step, index in enumerate(bar, start=1):
            try:
                values = self.train_step(data.x_train[index], data.y_train[index])
            except TrainingDiverged as error:
                raise TrainingDiverged(f"epoch {epoch}, step {step}: {error}") from None
            except ValueError as error:
                # the inputs are finite, so a layer refusing NaN/Inf activations means that the
                # parameters overflowed or became NaN
                finite = all(bool(np.isfinite(to_numpy(p.data)).all()) for p in self.params)
                if finite and "NaN or Inf" not in str(error):
                    raise
                raise TrainingDiverged(f"epoch {epoch}, step {step}: the activations or "
                                       f"parameters became non-finite ({error})") from None
            sums += np.array(values) * len(index)
            if step % 5 == 0 or step == len(batches):
                seen = sum(len(b) for b in batches[:step])
                bar.set_postfix(loss=f"{sums[0] / seen:.3f}", acc=f"{sums[2] / seen:.3f}")
        bar.close()
        n = int(data.x_train.shape[0])
        record: dict[str, Any] = {"epoch": epoch, "lr": lr, "running_loss": sums[0] / n,
                                  "running_objective": sums[1] / n, "running_acc": sums[2] / n}
        bs = cfg.eval_batch_size
        record["train_loss"], record["train_acc"] = metrics.evaluate(
            self.model, data.x_train, data.y_train, batch_size=bs)
        record["test_loss"], record["test_acc"] = metrics.evaluate(
            self.model, data.x_test, data.y_test, batch_size=bs)
        record["gap"] = metrics.generalization_gap(record["train_acc"], record["test_acc"])
        record["sigma"] = metrics.largest_singular_values(self.model)
        record["input_grad"] = None
        if epoch in input_grad_epochs(cfg.epochs, cfg.input_grad_checkpoints):
            record["input_grad"] = {
                "train": metrics.input_gradient_norms(
                    self.model, data.x_train[self.metric_train], data.y_train[self.metric_train],
                    batch_size=bs),
                "test": metrics.input_gradient_norms(
                    self.model, data.x_test[self.metric_test], data.y_test[self.metric_test],
                    batch_size=bs),
                "examples": int(self.metric_train.size),
            }
        record["seconds"] = time.perf_counter() - start
        return record

    def final_metrics(self) -> dict[str, Any]:
        cfg, data = self.config, self.data
        final: dict[str, Any] = {"singular_values": metrics.singular_values(self.model)}
        if cfg.hessian:
            k = min(cfg.hessian_examples, self.metric_train.size)
            for split, x, y, index in (("train", data.x_train, data.y_train, self.metric_train),
                                       ("test", data.x_test, data.y_test, self.metric_test)):
                final[f"hessian_{split}"] = metrics.hessian_top_eigenvalue(
                    self.model, x[index[:k]], y[index[:k]], iterations=cfg.hessian_iterations,
                    seed=cfg.seed, batch_size=cfg.eval_batch_size, step=metrics.HVP_STEP,
                    freeze_pattern=True)
            final["hessian_examples"] = int(k)
            # recorded with the results, which depend on them
            final["hessian_step"] = metrics.HVP_STEP
            final["hessian_frozen_pattern"] = True
        return final

    def run(self, *, resume: bool = False,
            on_epoch: Callable[[dict[str, Any]], None] | None = None) -> TrainResult:
        """Train to ``config.epochs`` (continuing from the checkpoint when ``resume``).

        ``on_epoch(record)`` is called after each epoch's checkpoint is written.

        Raises
        ------
        TrainingDiverged
            On a NaN or infinite loss or parameter; the last good checkpoint is kept.
        """
        if resume and self.checkpoint_path is not None and self.checkpoint_path.exists():
            self.load_state(load_checkpoint(self.checkpoint_path))
        while self.epoch < self.config.epochs:
            try:
                record = self.run_epoch()
            except TrainingDiverged as error:
                kept = (f"the last good checkpoint (epoch {self.epoch}) is kept at "
                        f"{self.checkpoint_path}" if self.checkpoint_path and self.epoch
                        else "no checkpoint was written")
                raise TrainingDiverged(
                    f"{self.config.method} run stopped: {error}; {kept}. Try a smaller "
                    "learning rate (--lr)") from None
            self.history.append(record)
            self.epoch += 1
            if self.epoch == self.config.epochs:
                self.final = self.final_metrics()
            self.save()
            if on_epoch is not None:
                on_epoch(record)
        return TrainResult(self.config.to_dict(), self.history, self.final, self.model)


def train(config: TrainConfig, data: DataSplits, *, checkpoint_path: str | Path | None = None,
          resume: bool = False, quiet: bool = False,
          on_epoch: Callable[[dict[str, Any]], None] | None = None) -> TrainResult:
    """Convenience wrapper: ``Trainer(config, data, ...).run(resume=resume)``."""
    trainer = Trainer(config, data, checkpoint_path=checkpoint_path, quiet=quiet)
    return trainer.run(resume=resume, on_epoch=on_epoch)
