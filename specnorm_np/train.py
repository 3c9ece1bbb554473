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
and 75% of all steps, after an optional linear warm-up that the paper does not use). With
``augment`` every batch is randomly cropped (4-pixel zero padding) and flipped horizontally,
drawn from the run's seed. Every ``eval_every`` epochs (and after the last one) the model is
evaluated (eval mode) on the training and test sets (or on ``curve_examples`` of each, for the
curves), σ of every weight is logged, and the input-gradient norms are measured at
``input_grad_checkpoints`` evenly spaced evaluated epochs; a checkpoint is written atomically
after every epoch. After the last epoch: accuracy and loss on the *full* training and test sets,
the top Hessian eigenvalue on training and test examples and the full singular values of every
weight (see :mod:`specnorm_np.metrics` for the exact definitions), and the number of updates.

A run *diverges* when the loss or an activation becomes NaN/Inf (a layer raises
:class:`~specnorm_np.nn.NonFiniteError`) or the loss exceeds :data:`DIVERGED_LOSS`, during
training or evaluation; :class:`TrainingDiverged` then names the epoch, step and, when a
parameter holds the NaN/Inf, that parameter.

Determinism: the model's initialisation, the regularizer's vectors and the shuffling all derive
from ``config.seed``; the same seed gives the same history (timings aside), and a run resumed
from a checkpoint ends exactly where an uninterrupted one does.
"""

from __future__ import annotations

import dataclasses
import json
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
from specnorm_np.nn import NonFiniteError
from specnorm_np.nn.losses import SoftmaxCrossEntropy
from specnorm_np.optim import SGD, MultiStepLR

__all__ = ["METHODS", "TrainConfig", "DataSplits", "TrainResult", "TrainingDiverged",
           "CheckpointMismatch", "Trainer", "train", "DIVERGED_LOSS"]

METHODS = ("vanilla", "decay", "adversarial", "spectral", "spectral-operator")
CHECKPOINT_FORMAT = 2
#: A mean cross-entropy above this (in nats) counts as divergence: a model that puts a
#: probability below e^-10000 on the true class has blown up, even while its numbers are finite.
DIVERGED_LOSS = 1e4


class TrainingDiverged(RuntimeError):
    """The loss, an activation or a parameter became NaN/Inf, or the loss blew up."""


class CheckpointMismatch(ValueError):
    """A checkpoint was written by another run (configuration, data or code differ)."""


def check_finite(loss: float, what: str = "the training loss") -> None:
    """Raise :class:`TrainingDiverged` when ``loss`` is NaN/Inf or above :data:`DIVERGED_LOSS`."""
    if not math.isfinite(loss):
        raise TrainingDiverged(f"{what} is {loss}")
    if loss > DIVERGED_LOSS:
        raise TrainingDiverged(f"{what} is {loss:.3g}, above {DIVERGED_LOSS:g} (blown up)")


def nonfinite_parameters(model: Any) -> list[str]:
    """Names of the parameters that hold NaN or Inf values, with their layer and count."""
    found = []
    for module in model.modules():
        for name, value in vars(module).items():
            data = getattr(value, "data", None)
            if data is None or not hasattr(value, "regularize"):
                continue
            bad = int((~np.isfinite(to_numpy(data))).sum())
            if bad:
                found.append(f"{module.label}.{name} ({bad} NaN/Inf)")
    return found


def augment_batch(images: Any, rng: np.random.Generator, padding: int = 4) -> Any:
    """Random crop with ``padding`` zero pixels on each side, then a random horizontal flip.

    ``images`` (N, H, W, C) float -> the same shape and dtype; one crop offset and one flip
    decision per image, drawn from ``rng`` (so a run's augmentation follows its seed and is
    resumed exactly from the generator state in a checkpoint).
    """
    from specnorm_np.data import RandomCrop, RandomHorizontalFlip

    out = RandomHorizontalFlip(0.5)(RandomCrop(padding)(images, rng), rng)
    return np.ascontiguousarray(out, dtype=images.dtype)


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


def _stochastic(model: Any) -> list[Any]:
    """The model's layers with a random state (``random_state()``/``set_random_state()``)."""
    return [m for m in model.modules()
            if callable(getattr(m, "random_state", None))
            and callable(getattr(m, "set_random_state", None))]


def random_states(model: Any) -> list[Any]:
    """The random states of the model's stochastic layers (e.g. Dropout), in order."""
    return [m.random_state() for m in _stochastic(model)]


def restore_random_states(model: Any, states: list[Any]) -> None:
    layers = _stochastic(model)
    if len(layers) != len(states):
        raise ValueError(f"checkpoint holds {len(states)} random states, the model has "
                         f"{len(layers)} stochastic layers")
    for layer, state in zip(layers, states):
        layer.set_random_state(state)


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

    augment: bool = False
    eval_every: int = 1
    curve_examples: int | None = None
    warmup_epochs: int = 0

    def __post_init__(self) -> None:
        self.milestones = tuple(float(m) for m in self.milestones)
        if self.method not in METHODS:
            raise ValueError(f"TrainConfig: unknown method {self.method!r}; "
                             f"choose one of {list(METHODS)}")
        if self.model not in MODEL_NAMES:
            raise ValueError(f"TrainConfig: unknown model {self.model!r}; "
                             f"choose one of {list(MODEL_NAMES)}")
        positive = ["epochs", "batch_size", "eval_batch_size", "eval_every", "metric_examples",
                    "hessian_examples", "hessian_iterations", "power_iterations"]
        optional_positive = ["width", "curve_examples"]
        for name in positive + optional_positive:
            value = getattr(self, name)
            if value is None and name in optional_positive:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"TrainConfig: {name} must be an integer >= 1, got {value!r}")
        for name in ("input_grad_checkpoints", "warmup_epochs"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
                raise ValueError(f"TrainConfig: {name} must be an integer >= 0, got {value!r}")
        if self.warmup_epochs >= self.epochs:
            raise ValueError(f"TrainConfig: warmup_epochs ({self.warmup_epochs}) must be fewer "
                             f"than epochs ({self.epochs})")
        for name in ("lr", "momentum", "gamma", "weight_decay", "spectral_lambda",
                     "adversarial_epsilon", "adversarial_alpha"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not math.isfinite(value) or value < 0 or (name in ("lr", "gamma")
                                                                 and value == 0):
                what = "> 0" if name in ("lr", "gamma") else ">= 0"
                raise ValueError(f"TrainConfig: {name} must be a finite number {what}, "
                                 f"got {value!r}")

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
    identity : dict, optional
        Everything else that defines the run (the data specification, BLAS threads, the code
        version, ...; JSON-able). It is saved in the checkpoint, and resuming from a checkpoint
        whose identity or configuration differs is refused, naming every difference.
    """

    def __init__(self, config: TrainConfig, data: DataSplits, *,
                 checkpoint_path: str | Path | None = None, quiet: bool = False,
                 identity: dict[str, Any] | None = None) -> None:
        n_train = int(data.x_train.shape[0])
        if config.batch_size > n_train:
            raise ValueError(f"Trainer: batch_size {config.batch_size} is larger than the "
                             f"training set ({n_train} examples)")
        self.config, self.data, self.quiet = config, data, quiet
        self.identity = json.loads(json.dumps(identity or {}))
        self.checkpoint_path = None if checkpoint_path is None else Path(checkpoint_path)
        self.model = build_model(config.model, data.input_shape, data.num_classes,
                                 seed=config.seed, width=config.width)
        self.params = self.model.parameters()
        self.optimizer = SGD(self.params, lr=config.lr, momentum=config.momentum,
                             nesterov=config.nesterov)
        self.steps_per_epoch = math.ceil(n_train / config.batch_size)
        self.schedule = MultiStepLR(self.optimizer, config.epochs * self.steps_per_epoch,
                                    milestones=config.milestones, gamma=config.gamma,
                                    warmup=config.warmup_epochs * self.steps_per_epoch)
        self.regularizer = make_regularizer(config)
        self.criterion = SoftmaxCrossEntropy()
        self.shuffle_rng = np.random.default_rng([config.seed, 1])
        self.augment_rng = np.random.default_rng([config.seed, 3])
        self.history: list[dict[str, Any]] = []
        self.final: dict[str, Any] = {}
        self.epoch = 0
        self.updates = 0
        metric_rng = np.random.default_rng([config.seed, 2])
        n_test = int(data.x_test.shape[0])
        m = min(config.metric_examples, n_train, n_test)
        self.metric_train = np.sort(metric_rng.permutation(n_train)[:m])
        self.metric_test = np.sort(metric_rng.permutation(n_test)[:m])
        curve_rng = np.random.default_rng([config.seed, 4])
        c = config.curve_examples
        self.curve_train = None if c is None or c >= n_train else \
            np.sort(curve_rng.permutation(n_train)[:c])
        self.curve_test = None if c is None or c >= n_test else \
            np.sort(curve_rng.permutation(n_test)[:c])

    # ---- checkpoints ----------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "config": self.config.to_dict(),
            "identity": self.identity,
            "epoch": self.epoch,
            "updates": self.updates,
            "model": dict(self.model.state_dict()),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "regularizer": None if self.regularizer is None else self.regularizer.state_dict(),
            "random": {"shuffle": self.shuffle_rng.bit_generator.state,
                       "augment": self.augment_rng.bit_generator.state,
                       "modules": random_states(self.model)},
            "history": self.history,
            "final": self.final,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Continue from ``state`` (see :meth:`state`); refuses another run's checkpoint."""
        where = f"the checkpoint {self.checkpoint_path}" if self.checkpoint_path else \
            "the checkpoint"
        if state.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointMismatch(f"Trainer: {where} has format {state.get('format')!r}, this "
                             f"version reads format {CHECKPOINT_FORMAT}; delete it to start "
                             "the run afresh")
        differing = describe_differences(
            {"config": state.get("config", {}), "identity": state.get("identity", {})},
            {"config": self.config.to_dict(), "identity": self.identity})
        if differing:
            raise CheckpointMismatch(
                f"Trainer: {where} was written by a different run ({'; '.join(differing)}); "
                "use another output directory, or delete the checkpoint to start afresh"
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        if self.regularizer is not None:
            self.regularizer.load_state_dict(state["regularizer"])
        self.shuffle_rng.bit_generator.state = state["random"]["shuffle"]
        self.augment_rng.bit_generator.state = state["random"]["augment"]
        restore_random_states(self.model, state["random"]["modules"])
        self.history = list(state["history"])
        self.final = dict(state["final"] or {})
        self.epoch = int(state["epoch"])
        self.updates = int(state["updates"])

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
        self.updates += 1
        return loss, objective, metrics.accuracy(logits, yb)

    def _diverged(self, where: str, error: Exception) -> TrainingDiverged:
        """A :class:`TrainingDiverged` for ``error`` that names the parameters holding NaN/Inf."""
        bad = nonfinite_parameters(self.model)
        cause = (f"parameter(s) {', '.join(bad)} became non-finite" if bad
                 else f"the activations became non-finite ({error})"
                 if isinstance(error, NonFiniteError) else str(error))
        return TrainingDiverged(f"{where}: {cause}")

    def is_evaluated(self, epoch: int) -> bool:
        """True for the epochs that are evaluated: every ``eval_every``-th and the last."""
        return epoch % self.config.eval_every == 0 or epoch == self.config.epochs

    def evaluated_epochs(self) -> list[int]:
        return [e for e in range(1, self.config.epochs + 1) if self.is_evaluated(e)]

    def input_grad_epochs(self) -> list[int]:
        """``input_grad_checkpoints`` evenly spaced epochs among the evaluated ones."""
        evaluated = self.evaluated_epochs()
        count = min(self.config.input_grad_checkpoints, len(evaluated))
        if count <= 0:
            return []
        picks = np.linspace(0, len(evaluated) - 1, count)
        return sorted({evaluated[int(round(k))] for k in picks})

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
            xb = data.x_train[index]
            if cfg.augment:
                xb = augment_batch(xb, self.augment_rng)
            try:
                values = self.train_step(xb, data.y_train[index])
            except (TrainingDiverged, NonFiniteError) as error:
                raise self._diverged(f"epoch {epoch}, step {step}", error) from None
            sums += np.array(values) * len(index)
            if step % 5 == 0 or step == len(batches):
                seen = sum(len(b) for b in batches[:step])
                bar.set_postfix(loss=f"{sums[0] / seen:.3f}", acc=f"{sums[2] / seen:.3f}")
        bar.close()
        n = int(data.x_train.shape[0])
        record: dict[str, Any] = {"epoch": epoch, "lr": lr, "updates": self.updates,
                                  "running_loss": sums[0] / n,
                                  "running_objective": sums[1] / n, "running_acc": sums[2] / n}
        check_finite(record["running_loss"], f"epoch {epoch}: the mean training loss")
        record["evaluated"] = self.is_evaluated(epoch)
        if record["evaluated"]:
            bar = progress_bar([], f"{cfg.method} B={cfg.batch_size} epoch {epoch}: evaluating",
                               self.quiet)  # progress only: a status line while evaluating
            try:
                record.update(self._evaluate(epoch))
            except (TrainingDiverged, NonFiniteError) as error:
                raise self._diverged(f"epoch {epoch}, evaluation", error) from None
            bar.close()
        record["seconds"] = time.perf_counter() - start
        return record

    def _evaluate(self, epoch: int) -> dict[str, Any]:
        """The per-epoch curves' numbers (on ``curve_examples`` of each set when given)."""
        data, bs = self.data, self.config.eval_batch_size

        def subset(x: Any, y: Any, index: Any) -> tuple[Any, Any]:
            return (x, y) if index is None else (x[index], y[index])

        record: dict[str, Any] = {}
        record["train_loss"], record["train_acc"] = metrics.evaluate(
            self.model, *subset(data.x_train, data.y_train, self.curve_train), batch_size=bs)
        record["test_loss"], record["test_acc"] = metrics.evaluate(
            self.model, *subset(data.x_test, data.y_test, self.curve_test), batch_size=bs)
        check_finite(record["train_loss"], "the evaluation loss on the training set")
        check_finite(record["test_loss"], "the evaluation loss on the test set")
        record["curve_examples"] = {
            "train": int(data.x_train.shape[0] if self.curve_train is None
                         else self.curve_train.size),
            "test": int(data.x_test.shape[0] if self.curve_test is None
                        else self.curve_test.size)}
        record["gap"] = metrics.generalization_gap(record["train_acc"], record["test_acc"])
        record["sigma"] = metrics.largest_singular_values(self.model)
        record["input_grad"] = None
        if epoch in self.input_grad_epochs():
            record["input_grad"] = {
                "train": metrics.input_gradient_norms(
                    self.model, data.x_train[self.metric_train], data.y_train[self.metric_train],
                    batch_size=bs),
                "test": metrics.input_gradient_norms(
                    self.model, data.x_test[self.metric_test], data.y_test[self.metric_test],
                    batch_size=bs),
                "examples": int(self.metric_train.size),
            }
        return record

    def final_metrics(self) -> dict[str, Any]:
        """After the last epoch: full-set accuracies, updates, spectra and Hessian estimates."""
        cfg, data, bs = self.config, self.data, self.config.eval_batch_size
        # progress only (one step per full-set evaluation and per Hessian-vector product)
        bar = progress_bar([], f"{cfg.method} B={cfg.batch_size} final metrics", self.quiet)
        bar.reset(total=2 + (4 * cfg.hessian_iterations if cfg.hessian else 0))
        final: dict[str, Any] = {"updates": self.updates}
        final["train_loss"], final["train_acc"] = metrics.evaluate(
            self.model, data.x_train, data.y_train, batch_size=bs)
        bar.update()
        final["test_loss"], final["test_acc"] = metrics.evaluate(
            self.model, data.x_test, data.y_test, batch_size=bs)
        bar.update()
        check_finite(final["train_loss"], "the final loss on the training set")
        final["gap"] = metrics.generalization_gap(final["train_acc"], final["test_acc"])
        final["singular_values"] = metrics.singular_values(self.model)
        if cfg.hessian:
            k = min(cfg.hessian_examples, self.metric_train.size)
            for split, x, y, index in (("train", data.x_train, data.y_train, self.metric_train),
                                       ("test", data.x_test, data.y_test, self.metric_test)):
                bar.set_description_str(f"{cfg.method} B={cfg.batch_size} Hessian ({split})")
                # = metrics.hessian_top_eigenvalue, with each product counted on the bar
                hvp, size = metrics.make_hessian_vector_product(
                    self.model, x[index[:k]], y[index[:k]], batch_size=bs,
                    step=metrics.HVP_STEP, freeze_pattern=True)
                final[f"hessian_{split}"] = metrics.top_eigenvalue(
                    lambda v, hvp=hvp: (bar.update(2), hvp(v))[1], size,
                    iterations=cfg.hessian_iterations, seed=cfg.seed)
            final["hessian_examples"] = int(k)
            # recorded with the results, which depend on them
            final["hessian_step"] = metrics.HVP_STEP
            final["hessian_frozen_pattern"] = True
        bar.close()
        return final

    def run(self, *, resume: bool = False,
            on_epoch: Callable[[dict[str, Any]], None] | None = None) -> TrainResult:
        """Train to ``config.epochs`` (continuing from the checkpoint when ``resume``).

        ``on_epoch(record)`` is called after each epoch's checkpoint is written.

        Raises
        ------
        TrainingDiverged
            On a NaN/Inf or blown-up loss, activation or parameter, in training or evaluation;
            the last good checkpoint is kept.
        """
        if resume and self.checkpoint_path is not None and self.checkpoint_path.exists():
            self.load_state(load_checkpoint(self.checkpoint_path))
            if not self.quiet and self.epoch:
                print(f"resuming run {self.config.method} B={self.config.batch_size} seed "
                      f"{self.config.seed} from epoch {self.epoch} of {self.config.epochs} "
                      f"({self.checkpoint_path})", flush=True)
        while self.epoch < self.config.epochs:
            try:
                record = self.run_epoch()
                last = self.epoch + 1 == self.config.epochs
                final = self.final_metrics() if last else {}
            except (TrainingDiverged, NonFiniteError) as error:
                if isinstance(error, NonFiniteError):
                    error = self._diverged(f"epoch {self.epoch + 1}, final metrics", error)
                kept = (f"the last good checkpoint (epoch {self.epoch}) is kept at "
                        f"{self.checkpoint_path}" if self.checkpoint_path and self.epoch
                        else "no checkpoint was written")
                raise TrainingDiverged(
                    f"{self.config.method} run stopped: {error}; {kept}. Try a smaller "
                    "learning rate (--lr)") from None
            self.history.append(record)
            self.epoch += 1
            self.final = final
            self.save()
            if on_epoch is not None:
                on_epoch(record)
        return TrainResult(self.config.to_dict(), self.history, self.final, self.model)


def describe_differences(saved: dict[str, Any], current: dict[str, Any],
                         prefix: str = "") -> list[str]:
    """``"key: a in the file vs b now"`` for every leaf where two nested dicts differ."""
    out = []
    for key in sorted(set(saved) | set(current)):
        a, b = saved.get(key), current.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += describe_differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} in the file vs {b!r} now")
    return out


def train(config: TrainConfig, data: DataSplits, *, checkpoint_path: str | Path | None = None,
          resume: bool = False, quiet: bool = False,
          on_epoch: Callable[[dict[str, Any]], None] | None = None,
          identity: dict[str, Any] | None = None) -> TrainResult:
    """Convenience wrapper: ``Trainer(config, data, ...).run(resume=resume)``."""
    trainer = Trainer(config, data, checkpoint_path=checkpoint_path, quiet=quiet,
                      identity=identity)
    return trainer.run(resume=resume, on_epoch=on_epoch)
