"""Keras callbacks of a training run: the epoch log, the time limit, early stopping that keeps the last epoch."""

from __future__ import annotations

import logging
import time

import keras
import numpy as np

from face_pipeline.ops.distribute import agree

from .settings import TrainingSettings

logger = logging.getLogger(__name__)


def metric_name(name: str, target: str) -> str:
    """A multi-output model's metric named like a single-output one's (``val_age_mae`` -> ``val_mae``).

    Losses keep their output's name (``age_distribution_loss``).
    """
    prefix, base = ("val_", name[4:]) if name.startswith("val_") else ("", name)
    if base.startswith(f"{target}_") and not base.endswith("_loss"):
        base = base[len(target) + 1 :]
    return prefix + base


class EpochLog(keras.callbacks.Callback):
    """One log line per epoch with every metric (for logs and CI); adds ``epoch_seconds`` to the logs.

    Metrics are named as in the returned history and MLflow (``val_mae``, not ``val_age_mae``).
    """

    def __init__(self, target: str):
        super().__init__()
        self.target = target
        self.last_epoch: int | None = None  # 0-based, counted from the first epoch of a resumed run's start

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        logs["epoch_seconds"] = time.perf_counter() - self._started
        self.last_epoch = epoch
        metrics = " ".join(
            f"{metric_name(name, self.target)}={value:.4f}" for name, value in logs.items() if name != "epoch_seconds"
        )
        logger.info("epoch %d: %s (%.0f s)", epoch + 1, metrics, logs["epoch_seconds"])


class TimeLimit(keras.callbacks.Callback):
    """Stops training before an epoch that would end more than ``seconds`` after training began.

    Judged by the longest epoch so far; a guard behind the planned epochs of
    ``training.time_budget_minutes``, for machines that slow down during a run. Under a
    ``strategy`` with several workers they stop together, when the first of them would overrun.
    """

    def __init__(self, seconds: float, strategy=None):
        super().__init__()
        self.seconds = float(seconds)
        self.strategy = strategy

    def on_train_begin(self, logs=None):
        self._started, self._longest = time.perf_counter(), 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        now = time.perf_counter()
        self._longest = max(self._longest, now - self._epoch_started)
        overrun = now - self._started + self._longest > self.seconds
        if self.strategy is not None:
            overrun = agree(float(overrun), self.strategy) > 0
        if not self.model.stop_training and overrun:
            self.model.stop_training = True
            logger.warning(
                "Stopping after epoch %d: another epoch (up to %.0f s) would overrun the time budget of %.0f min",
                epoch + 1,
                self._longest,
                self.seconds / 60,
            )


class EarlyStoppingKeepingLast(keras.callbacks.EarlyStopping):
    """``EarlyStopping`` that also keeps the last finished epoch (``last_epoch``, 0-based, and
    ``last_weights``) before restoring its best weights."""

    last_epoch: int | None = None
    last_weights: list[np.ndarray] | None = None

    def on_epoch_end(self, epoch, logs=None):
        self.last_epoch = epoch
        super().on_epoch_end(epoch, logs)

    def on_train_end(self, logs=None):
        self.last_weights = self.model.get_weights()
        super().on_train_end(logs)

    @property
    def restored_earlier_epoch(self) -> bool:
        """Whether the weights at the end are an earlier epoch's than the last one run."""
        return self.best_weights is not None and self.last_weights is not None and self.best_epoch != self.last_epoch


def learning_rate_schedule(
    training: TrainingSettings, steps_per_epoch: int
) -> float | keras.optimizers.schedules.LearningRateSchedule:
    rate = float(training.learning_rate)
    if training.lr_schedule != "cosine":
        return rate  # constant, or plateau (a callback lowers it)
    warmup = int(training.warmup_epochs * steps_per_epoch)
    total = max(1, training.epochs * steps_per_epoch - warmup)
    if warmup:
        return keras.optimizers.schedules.CosineDecay(
            rate / 10, total, alpha=0.01, warmup_target=rate, warmup_steps=warmup
        )
    return keras.optimizers.schedules.CosineDecay(rate, total, alpha=0.01)


def training_callbacks(
    training: TrainingSettings, target: str, backup, strategy=None
) -> list[keras.callbacks.Callback]:
    """Epoch log, backup, early stopping and the plateau schedule on ``val_loss``, the time limit."""
    callbacks: list[keras.callbacks.Callback] = [EpochLog(target)]
    if backup is not None:
        if backup.exists():
            logger.info("Resuming from the last finished epoch saved in %s", backup)
        callbacks.append(keras.callbacks.BackupAndRestore(str(backup)))
    if training.early_stopping_patience:
        callbacks.append(
            EarlyStoppingKeepingLast(
                monitor="val_loss",
                mode="min",
                patience=int(training.early_stopping_patience),
                restore_best_weights=True,
                start_from_epoch=int(training.early_stopping_start_epoch or 0),
            )
        )
    if training.lr_schedule == "plateau":
        callbacks.append(
            keras.callbacks.ReduceLROnPlateau(monitor="val_loss", mode="min", factor=0.3, patience=2, min_lr=1e-5)
        )
    if training.time_budget_minutes:
        callbacks.append(TimeLimit(float(training.time_budget_minutes) * 60, strategy))
    return callbacks
