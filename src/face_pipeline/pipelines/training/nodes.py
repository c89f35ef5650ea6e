"""Training: one template for every task (gender, age); the task is a parameter."""

from __future__ import annotations

import hashlib
import json
import logging
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import tensorflow as tf

from face_pipeline.models import build_model, inference_model, resolve_precision

logger = logging.getLogger(__name__)


def configure_runtime(seed: int, deterministic: bool = False, threads: int | None = None) -> None:
    """Seed Python, NumPy and TensorFlow; optionally force deterministic ops and thread counts.

    Thread counts can only be set before TensorFlow starts its runtime; later calls log a
    warning and keep the current setting.
    """
    random.seed(seed)
    np.random.seed(seed)
    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()
    if threads:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(int(threads))
            tf.config.threading.set_inter_op_parallelism_threads(min(2, int(threads)))
        except RuntimeError:
            logger.warning("TensorFlow is already running; training.threads=%s not applied", threads)


def _targets(labels: pd.DataFrame, target: str) -> np.ndarray:
    return labels[target].to_numpy(dtype=np.float32)


def make_dataset(
    images: np.ndarray,
    targets: np.ndarray | dict[str, np.ndarray],
    batch_size: int,
    *,
    shuffle: bool,
    seed: int,
    autotune: bool = False,
) -> tf.data.Dataset:
    """Batches of ``(uint8 images, float32 targets)`` read from a (memory-mapped) array.

    ``targets`` is one array, or a dict of arrays (one per model output), batched alike.
    Only the indices are shuffled; each batch is gathered from ``images`` in index order
    (good for memory-mapped files) and stays uint8, so the set is never held as float32.
    """
    names = list(targets) if isinstance(targets, dict) else None
    columns = np.stack([targets[name] for name in names], axis=1) if names else np.asarray(targets)[:, None]
    columns = columns.astype(np.float32)
    if len(images) != len(columns):
        raise ValueError(f"{len(images)} images but {len(columns)} labels")
    image_shape = tuple(images.shape[1:])

    def gather(indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        indices = np.sort(indices)
        return np.asarray(images[indices]), columns[indices]

    def unpack(x, y):
        x = tf.ensure_shape(x, (None, *image_shape))
        y = tf.ensure_shape(y, (None, columns.shape[1]))
        return x, ({name: y[:, index] for index, name in enumerate(names)} if names else y[:, 0])

    dataset = tf.data.Dataset.range(len(images))
    if shuffle:
        dataset = dataset.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size).map(
        lambda idx: tf.numpy_function(gather, [idx], (tf.uint8, tf.float32), stateful=False),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    # tf.data's autotuning competes with the training step for the CPU: on 2 cores it made
    # whole epochs up to 1.7x slower at random. Without it AUTOTUNE means one call per core.
    options = tf.data.Options()
    options.autotune.enabled = autotune
    return dataset.map(unpack).prefetch(tf.data.AUTOTUNE).with_options(options)


def _model_targets(model: keras.Model, labels: pd.DataFrame, target: str) -> np.ndarray | dict[str, np.ndarray]:
    """Labels for ``model``: its target column, or for a model with extra training-only outputs one
    array per output (the age bins of the "distribution" loss take the main labels, auxiliary
    tasks the column of their name)."""
    if not isinstance(model.output, dict):
        return _targets(labels, target)
    return {name: _targets(labels, name if name in labels.columns else target) for name in model.output}


def _learning_rate(
    training: dict[str, Any], steps_per_epoch: int
) -> float | keras.optimizers.schedules.LearningRateSchedule:
    rate, schedule = float(training["learning_rate"]), training.get("lr_schedule", "constant")
    if schedule in {"constant", "plateau"}:
        return rate
    if schedule == "cosine":
        warmup = int(training.get("warmup_epochs", 0) * steps_per_epoch)
        total = max(1, training["epochs"] * steps_per_epoch - warmup)
        if warmup:
            return keras.optimizers.schedules.CosineDecay(
                rate / 10, total, alpha=0.01, warmup_target=rate, warmup_steps=warmup
            )
        return keras.optimizers.schedules.CosineDecay(rate, total, alpha=0.01)
    raise ValueError(f"lr_schedule must be constant, cosine or plateau, got {schedule!r}")


def backup_path(root: str, model_options: dict, training: dict, data_shape: tuple) -> Path:
    """Where a run's last finished epoch is kept: one folder per configuration.

    A run only resumes from a backup made with the same model, training parameters and data
    shape; after any change it starts afresh instead of failing to restore other weights.
    """
    settings = {"model": model_options, "training": {k: v for k, v in training.items() if k != "backup_dir"}}
    key = json.dumps({**settings, "data_shape": list(data_shape)}, sort_keys=True, default=str)
    return Path(root) / hashlib.sha1(key.encode()).hexdigest()[:12]


class EpochLog(keras.callbacks.Callback):
    """One log line per epoch with every metric (for logs and CI); adds ``epoch_seconds`` to the logs.

    Metrics are named as in the returned history and MLflow (``val_mae``, not ``val_age_mae``).
    """

    def __init__(self, target: str):
        super().__init__()
        self.target = target

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        logs["epoch_seconds"] = time.perf_counter() - self._started
        metrics = " ".join(
            f"{_metric_name(name, self.target)}={value:.4f}" for name, value in logs.items() if name != "epoch_seconds"
        )
        logger.info("epoch %d: %s (%.0f s)", epoch + 1, metrics, logs["epoch_seconds"])


def plan_epochs(epochs: int, seconds_per_epoch: float, budget_minutes: float | None) -> int:
    """The epochs of ``seconds_per_epoch`` that fit in ``budget_minutes`` (at least 1, at most ``epochs``)."""
    if not budget_minutes:
        return int(epochs)
    return max(1, min(int(epochs), int(budget_minutes * 60 // max(seconds_per_epoch, 1e-9))))


# What ``downsample: auto`` tries in turn, least first: 128 px faces become 80 px, then 64 px.
AUTO_DOWNSAMPLE = (1.6, 2)


def plan_downsample(
    epochs: int,
    full_seconds: float,
    downsampled_seconds: Callable[[float], float],
    budget_minutes: float,
    factors: tuple[float, ...] = AUTO_DOWNSAMPLE,
) -> tuple[float, int]:
    """``(downsample, epochs)`` for ``downsample: auto`` in ``budget_minutes``.

    The least downsampling at which at least half the epochs fit: full-size faces, else each of
    ``factors`` in turn; where none holds half, the last one tried, with as many epochs as fit.
    A network trained through most of its schedule on smaller faces beats a larger one stopped
    after a few epochs (docs/benchmarks.md). ``downsampled_seconds(factor)`` times an epoch of
    that network, only when it is needed; one that is not faster than the last is not taken.
    """
    downsample, seconds = 1, full_seconds
    for factor in factors:
        if 2 * plan_epochs(epochs, seconds, budget_minutes) >= epochs:
            break
        smaller = downsampled_seconds(factor)
        if smaller < seconds:
            downsample, seconds = factor, smaller
    return downsample, plan_epochs(epochs, seconds, budget_minutes)


def measure_step_seconds(
    probe: keras.Model, train_data: tf.data.Dataset, probe_steps: int = 12, warmup_steps: int = 3
) -> float:
    """Seconds one training step of ``probe``, a throwaway model, takes here on ``train_data``'s batches.

    Times ``probe_steps`` steps after ``warmup_steps`` (graph tracing, first use of each kernel),
    repeating the batches if there are fewer, and takes the median.
    """
    ends: list[float] = []

    class StepTimer(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            ends.append(time.perf_counter())

    steps = train_data.repeat().take(warmup_steps + probe_steps)
    probe.fit(steps, epochs=1, shuffle=False, verbose=0, callbacks=[StepTimer()])
    if not ends:
        raise ValueError("measuring a training step needs training batches; the data set is empty")
    return float(np.median(np.diff(ends[max(0, warmup_steps - 1) :])))


class TimeLimit(keras.callbacks.Callback):
    """Stops training before an epoch that would end more than ``seconds`` after training began.

    Judged by the longest epoch so far; a guard behind the planned epochs of
    ``training.time_budget_minutes``, for machines that slow down during a run.
    """

    def __init__(self, seconds: float):
        super().__init__()
        self.seconds = float(seconds)

    def on_train_begin(self, logs=None):
        self._started, self._longest = time.perf_counter(), 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        now = time.perf_counter()
        self._longest = max(self._longest, now - self._epoch_started)
        if not self.model.stop_training and now - self._started + self._longest > self.seconds:
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


class WeightAverage(keras.callbacks.Callback):
    """Stochastic weight averaging (Izmailov et al. 2018): the model ends with the mean of its
    weights at the ends of its last ``epochs`` epochs.

    Placed after ``EarlyStopping`` so the average replaces the restored best weights; a run that
    stops before the averaging window keeps those. Batch-norm statistics of an average fit none
    of the averaged networks: re-estimate them afterwards (``batch_norm_recalibration``).
    A run resumed from a backup averages the epochs it ran itself.
    """

    def __init__(self, epochs: int, total_epochs: int):
        super().__init__()
        self.first_epoch = max(0, total_epochs - epochs)  # 0-based
        self.averaged = 0
        self._sums: list[np.ndarray] = []

    def on_epoch_end(self, epoch, logs=None):
        if epoch < self.first_epoch:
            return
        weights = self.model.get_weights()
        if not self._sums:
            self._sums = [np.zeros(w.shape, np.float64) for w in weights]
        for total, value in zip(self._sums, weights, strict=True):
            np.add(total, value, out=total)
        self.averaged += 1

    def on_train_end(self, logs=None):
        if self.averaged:
            current = self.model.get_weights()
            self.model.set_weights(
                [(total / self.averaged).astype(w.dtype) for total, w in zip(self._sums, current, strict=True)]
            )
            logger.info("Weights averaged over the last %d epochs", self.averaged)


class ProgressiveResizing(keras.callbacks.Callback):
    """The first ``epochs`` epochs train on images shrunk to ``size`` pixels, the rest at full size.

    Progressive resizing (fast.ai; EfficientNetV2): a small image costs about ``(size / full)**2``
    of the compute, so the same time holds more epochs, and the last epochs and the batch-norm
    re-estimation see full-size faces. Batches of ``resize`` (training and validation) read the
    current side when each epoch's iterators start, after ``on_epoch_begin``: a small epoch is
    validated on small images, a full-size one at full size.
    """

    def __init__(self, size: int, epochs: int, full_size: int):
        super().__init__()
        if not 0 < int(size) < int(full_size):
            raise ValueError(f"progressive_resizing.size must be between 1 and {int(full_size) - 1}, got {size}")
        self.size, self.epochs, self.full_size = int(size), int(epochs), int(full_size)
        self.side = tf.Variable(self.full_size, dtype=tf.int32, trainable=False, name="training_side")

    def resize(self, dataset: tf.data.Dataset) -> tf.data.Dataset:
        """``dataset`` with its images resized to the current side (uint8, antialiased bilinear)."""
        channels = dataset.element_spec[0].shape[-1]

        def shrink(images, targets):
            side = self.side.read_value()
            images = tf.cond(
                side < self.full_size,
                lambda: tf.cast(tf.round(tf.image.resize(images, [side, side], antialias=True)), tf.uint8),
                lambda: images,
            )
            return tf.ensure_shape(images, (None, None, None, channels)), targets

        return dataset.map(shrink, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    def on_train_begin(self, logs=None):
        logger.info("Epochs 1-%d train on %d px images, later epochs on %d px", self.epochs, self.size, self.full_size)

    def on_epoch_begin(self, epoch, logs=None):
        self.side.assign(self.size if epoch < self.epochs else self.full_size)


def _callbacks(
    training: dict[str, Any], target: str, backup: Path | None, monitored: str
) -> list[keras.callbacks.Callback]:
    """Epoch log, backup, early stopping and plateau schedule on ``monitored``, weight averaging."""
    callbacks: list[keras.callbacks.Callback] = [EpochLog(target)]
    if backup is not None:
        if backup.exists():
            logger.info("Resuming from the last finished epoch saved in %s", backup)
        callbacks.append(keras.callbacks.BackupAndRestore(str(backup)))
    if training.get("early_stopping_patience"):
        callbacks.append(
            EarlyStoppingKeepingLast(
                monitor=monitored,
                mode="min",
                patience=int(training["early_stopping_patience"]),
                restore_best_weights=True,
                start_from_epoch=int(training.get("early_stopping_start_epoch") or 0),
            )
        )
    if training.get("weight_averaging_epochs"):
        callbacks.append(WeightAverage(int(training["weight_averaging_epochs"]), int(training["epochs"])))
    if training.get("lr_schedule") == "plateau":
        callbacks.append(
            keras.callbacks.ReduceLROnPlateau(monitor=monitored, mode="min", factor=0.3, patience=2, min_lr=1e-5)
        )
    if training.get("time_budget_minutes"):
        callbacks.append(TimeLimit(float(training["time_budget_minutes"]) * 60))
    return callbacks


def _builder_options(model_options: dict[str, Any], train_labels: pd.DataFrame, target: str) -> dict[str, Any]:
    """Keyword arguments of the architecture's builder: its own block plus the shared model options."""
    auxiliary = dict(model_options.get("auxiliary") or {})
    options = {
        **(model_options.get(model_options["architecture"]) or {}),
        "loss": model_options.get("loss"),
        "augment": model_options.get("augment"),
        "auxiliary": auxiliary,
    }
    if "age" in (target, *auxiliary):
        ages = _targets(train_labels, "age")
        options.setdefault("age_mean", float(ages.mean()))
        options.setdefault("age_std", float(ages.std()) or 1.0)
    return options


def _progressive_resizing(training: dict[str, Any], input_shape: tuple) -> ProgressiveResizing | None:
    settings = training.get("progressive_resizing") or {}
    if not int(settings.get("epochs") or 0):
        return None
    return ProgressiveResizing(settings["size"], settings["epochs"], full_size=input_shape[0])


def _first(data: np.ndarray | dict[str, np.ndarray], count: int) -> np.ndarray | dict[str, np.ndarray]:
    return {name: values[:count] for name, values in data.items()} if isinstance(data, dict) else data[:count]


def _plan_file(backup: Path | None) -> Path | None:
    """Where a budgeted run keeps its planned epochs until it finishes: beside its backup."""
    return backup.with_name(f"{backup.name}.epochs_planned.json") if backup is not None else None


def _probe_epoch_seconds(
    probe: keras.Model,
    train_images: np.ndarray,
    train_labels: pd.DataFrame,
    target: str,
    batch_size: int,
    val_count: int,
) -> float:
    """Seconds an epoch of ``probe``'s network takes here, from a few timed training steps.

    A validation step counts as a third of a training step (a forward pass only).
    """
    steps_per_epoch, val_steps = -(-len(train_images) // batch_size), -(-val_count // batch_size)
    count = 16 * batch_size
    targets = _first(_model_targets(probe, train_labels, target), count)
    data = make_dataset(train_images[:count], targets, batch_size, shuffle=False, seed=0)
    return measure_step_seconds(probe, data) * (steps_per_epoch + val_steps / 3)


def _fit_in_budget(
    training: dict[str, Any],
    epoch_seconds: Callable[..., float],
    backup: Path | None,
    auto_downsample: bool,
) -> tuple[dict[str, Any], float]:
    """``training`` planned to fit ``time_budget_minutes`` on this machine, and the downsampling to build with.

    ``epoch_seconds(**changes)`` times a throwaway copy of the configured network, with
    ``changes`` to its builder's options (``_probe_epoch_seconds``); the random seeds are then
    reset, so the model trained afterwards starts from the same weights as without a budget.
    Epochs that do not fit are cut (``plan_epochs``); with ``auto_downsample``, where fewer than
    half fit, the network for smaller faces is trained instead (``plan_downsample``).

    The schedule, early stopping's start and weight averaging follow the planned epochs, so
    a shortened run still decays its learning rate to the end. A resumed run keeps the plan it
    started with (kept beside its backup).
    """
    budget, epochs = training["time_budget_minutes"], int(training["epochs"])
    plan_file = _plan_file(backup)
    if plan_file is not None and plan_file.exists():
        plan = json.loads(plan_file.read_text())
        logger.info("Resumed run keeps its plan: %d epochs, downsample %g", plan["epochs"], plan.get("downsample", 1))
    else:
        full, probed = epoch_seconds(), {}

        def downsampled_seconds(factor: float) -> float:
            probed[factor] = epoch_seconds(downsample=factor)
            return probed[factor]

        full_planned = plan_epochs(epochs, full, budget)
        downsample, planned = 1, full_planned
        if auto_downsample:
            downsample, planned = plan_downsample(epochs, full, downsampled_seconds, budget)
        notes = [
            f"faces downsampled by {f:g}: {t:.0f} s, {plan_epochs(epochs, t, budget)} of {epochs}"
            for f, t in probed.items()
        ]
        if downsample != 1:
            notes.append(f"training with downsample {downsample:g}, {planned} epochs")
        (logger.warning if planned < epochs or downsample != 1 else logger.info)(
            "Time budget %s min: an epoch takes about %.0f s here, so %d of %d epochs fit%s",
            budget,
            full,
            full_planned,
            epochs,
            "".join(f"; {note}" for note in notes),
        )
        plan = {"epochs": planned, "downsample": downsample}
        if plan_file is not None:
            plan_file.parent.mkdir(parents=True, exist_ok=True)
            plan_file.write_text(json.dumps(plan))
        keras.utils.set_random_seed(training["seed"])
    planned = int(plan["epochs"])
    if planned != epochs:
        start = int(training.get("early_stopping_start_epoch") or 0) * planned // epochs
        training = {**training, "epochs": planned, "early_stopping_start_epoch": start}
    return training, plan.get("downsample", 1)


def train_model(
    train_images: np.ndarray,
    train_labels: pd.DataFrame,
    val_images: np.ndarray,
    val_labels: pd.DataFrame,
    task: dict[str, Any],
    model_options: dict[str, Any],
    training: dict[str, Any],
    keep_training_outputs: bool = False,
) -> tuple[keras.Model, dict[str, list[float]]]:
    """Build the model named in ``model_options["architecture"]`` and fit it on train, validating on val.

    The builder gets the arguments in ``model_options[architecture]`` plus ``loss``, ``augment``
    and ``auxiliary`` (``{task: loss weight}``: other labels learnt alongside, not served).

    Returns the model with the best validation weights and its per-epoch history
    (``{metric: [value per epoch]}``, validation metrics prefixed ``val_``).
    A run that stops half-way resumes from its last finished epoch when started again
    (``training.backup_dir``), with the epochs it planned. With ``training.time_budget_minutes``
    the epochs are cut to what fits in that time on this machine (measured before training);
    with ``downsample: auto`` in the architecture's block, the network for smaller faces is
    trained instead where fewer than half the epochs fit at full size (``plan_downsample``).
    ``keep_training_outputs`` returns the trained network with all its outputs (auxiliary tasks
    included, no mirror averaging) instead of the model to serve.
    """
    configure_runtime(training["seed"], training.get("deterministic", False), training.get("threads"))
    target = task["target"]
    batch_size = int(training["batch_size"])
    steps_per_epoch = -(-len(train_images) // batch_size)

    architecture = model_options["architecture"]
    options = _builder_options(model_options, train_labels, target)
    precision = resolve_precision(training.get("precision"))
    input_shape = tuple(train_images.shape[1:])
    # downsample: auto is settled by the time budget: full-size faces unless they do not fit.
    auto_downsample = str(options.get("downsample")).lower() == "auto"
    if auto_downsample:
        options["downsample"] = 1

    def build(shape: tuple, learning_rate: float | Any, **changes: Any) -> keras.Model:
        # The optimizer is compiled in: its weight decay is an argument of the builder too.
        settings = {
            "precision": precision,
            "weight_decay": float(training.get("weight_decay") or 0),
            **options,
            **changes,
        }
        try:
            return build_model(architecture, shape, target, learning_rate=learning_rate, **settings)
        except ValueError as error:
            if tuple(shape) == input_shape:
                raise
            raise ValueError(
                f"training.progressive_resizing needs a network that takes any image size (global pooling); "
                f"{architecture} does not: {error}"
            ) from error

    # The backup folder is named by the parameters as given, so a resumed run finds it.
    backup = (
        backup_path(training["backup_dir"], model_options, training, train_images.shape)
        if training.get("backup_dir")
        else None
    )
    if training.get("time_budget_minutes"):

        def epoch_seconds(**changes: Any) -> float:
            probe = build(input_shape, float(training["learning_rate"]), **changes)
            return _probe_epoch_seconds(probe, train_images, train_labels, target, batch_size, len(val_images))

        training, downsample = _fit_in_budget(training, epoch_seconds, backup, auto_downsample)
        if auto_downsample:
            options["downsample"] = downsample
    resizing = _progressive_resizing(training, input_shape)
    # While the side of training images changes, the network takes any side.
    training_shape = (None, None, input_shape[-1]) if resizing else input_shape
    learning_rate = _learning_rate(training, steps_per_epoch)
    model = build(training_shape, learning_rate)
    y_train, y_val = _model_targets(model, train_labels, target), _model_targets(model, val_labels, target)
    train_data = make_dataset(train_images, y_train, batch_size, shuffle=True, seed=training["seed"])
    val_data = make_dataset(val_images, y_val, batch_size, shuffle=False, seed=training["seed"])
    fit_val_data = val_data
    if resizing:
        train_data, fit_val_data = resizing.resize(train_data), resizing.resize(val_data)
        # Validation follows the training size: early stopping compares full-size epochs only.
        start = max(int(training.get("early_stopping_start_epoch") or 0), resizing.epochs)
        training = {**training, "early_stopping_start_epoch": start}
    # Auxiliary tasks help training but do not decide which weights are best.
    monitored = f"val_{target}_loss" if options["auxiliary"] else "val_loss"
    callbacks = _callbacks(training, target, backup, monitored)
    if resizing:
        callbacks.insert(0, resizing)
    logger.info(
        "Training %s (%s, %s parameters, %s) on %d images, validating on %d",
        model.name,
        model_options["architecture"],
        f"{model.count_params():,}",
        precision,
        len(train_images),
        len(val_images),
    )
    history = model.fit(
        train_data,
        validation_data=fit_val_data,
        epochs=int(training["epochs"]),
        callbacks=callbacks,
        shuffle=False,  # train_data reshuffles itself every epoch
        verbose=1 if sys.stdout.isatty() else 0,  # progress bar on a terminal, EpochLog lines otherwise
    )
    if (plan_file := _plan_file(backup)) is not None:
        plan_file.unlink(missing_ok=True)  # finished: the next run plans afresh
    if precision != "float32" or resizing:
        # Served in float32 and at the input size of the data: the same network with the trained
        # weights (variables are float32 already), so predictions do not depend on 16-bit
        # support where the model runs.
        model = _with_weights_of(model, build(input_shape, learning_rate, precision="float32"))
    _recalibrate_and_report(
        model,
        train_images,
        val_data,
        int(training.get("batch_norm_recalibration") or 0),
        training["seed"],
        rival=_last_epoch_rival(callbacks, monitored),
    )
    served = (
        model if keep_training_outputs else inference_model(model, target, bool(model_options.get("mirror_average")))
    )
    return served, {_metric_name(name, target): [float(v) for v in values] for name, values in history.history.items()}


def _with_weights_of(trained: keras.Model, model: keras.Model) -> keras.Model:
    """``model`` (the same network, built anew) with the weights and optimizer of ``trained``."""
    model.set_weights(trained.get_weights())
    model.optimizer = trained.optimizer  # saved with its state, as a float32 run's would be
    return model


def _last_epoch_rival(
    callbacks: list[keras.callbacks.Callback], monitored: str
) -> tuple[int, int, list[np.ndarray], str] | None:
    """(restored epoch, last epoch, last epoch's weights, loss) when early stopping restored an earlier epoch.

    Early stopping compares epochs by validation loss with the running batch-norm statistics of
    augmented batches, which jump from epoch to epoch even at a small learning rate; after
    re-estimation the last epoch of a decayed schedule may be the better network.
    """
    stopping = next((c for c in callbacks if isinstance(c, EarlyStoppingKeepingLast)), None)
    if any(isinstance(c, WeightAverage) and c.averaged for c in callbacks):
        return None  # the average replaced both
    if stopping is None or stopping.best_weights is None or stopping.last_weights is None:
        return None
    if stopping.best_epoch == stopping.last_epoch:
        return None
    return stopping.best_epoch + 1, stopping.last_epoch + 1, stopping.last_weights, monitored.removeprefix("val_")


def _recalibrate_and_report(
    model: keras.Model,
    train_images: np.ndarray,
    val_data: tf.data.Dataset,
    count: int,
    seed: int,
    rival: tuple[int, int, list[np.ndarray], str] | None = None,
) -> None:
    """``recalibrate_batch_norm`` on ``count`` training images, logging validation metrics before and after.

    With a ``rival`` (``_last_epoch_rival``), the last epoch's weights are re-estimated too, and
    the model keeps whichever of the two has the lower validation loss afterwards.
    """
    if not count or not _batch_norms(model):
        return
    before = model.evaluate(val_data, verbose=0, return_dict=True)
    used = recalibrate_batch_norm(model, train_images, count, seed)
    after = model.evaluate(val_data, verbose=0, return_dict=True)
    changes = ", ".join(f"val_{name} {before[name]:.4f} -> {after[name]:.4f}" for name in after)
    logger.info("Batch-norm statistics re-estimated on %d training images: %s", used, changes)
    if rival is None:
        return
    restored_epoch, last_epoch, last_weights, loss = rival
    restored_weights = model.get_weights()
    model.set_weights(last_weights)
    recalibrate_batch_norm(model, train_images, count, seed)
    last = model.evaluate(val_data, verbose=0, return_dict=True)
    keep_last = last[loss] < after[loss]
    if not keep_last:
        model.set_weights(restored_weights)
    kept = last if keep_last else after
    logger.info(
        "Last epoch %d against the restored epoch %d, both re-estimated: val_%s %.4f against %.4f; "
        "keeping epoch %d (%s)",
        last_epoch,
        restored_epoch,
        loss,
        last[loss],
        after[loss],
        last_epoch if keep_last else restored_epoch,
        ", ".join(f"val_{name} {value:.4f}" for name, value in kept.items()),
    )


def _metric_name(name: str, target: str) -> str:
    """A multi-output model's metric named like a single-output one's (``val_age_mae`` -> ``val_mae``).

    Losses keep their output's name (``age_distribution_loss``).
    """
    prefix, base = ("val_", name[4:]) if name.startswith("val_") else ("", name)
    if base.startswith(f"{target}_") and not base.endswith("_loss"):
        base = base[len(target) + 1 :]
    return prefix + base


def _batch_norms(model: keras.Model) -> list[keras.layers.BatchNormalization]:
    return [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]


def recalibrate_batch_norm(model: keras.Model, images: np.ndarray, count: int, seed: int, batch_size: int = 256) -> int:
    """Re-estimate every batch-norm layer's statistics on ``count`` un-augmented training images.

    During training the running averages follow augmented batches and the last few hundred
    steps; at inference the network sees plain faces. Layers are done in order, each on the
    activations of the layers before it with their new statistics. Returns the images used.
    """
    norms = _batch_norms(model)
    if not norms or not count:
        return 0
    rng = np.random.default_rng(seed)
    # Read once (sorted indices suit memory-mapped arrays), used by every layer.
    sample = np.asarray(images[np.sort(rng.choice(len(images), min(int(count), len(images)), replace=False))])
    for norm in norms:
        inputs_of_norm = keras.Model(model.inputs, norm.input)
        total = total_squares = 0.0
        values = 0
        for start in range(0, len(sample), batch_size):
            batch = sample[start : start + batch_size]
            activations = keras.ops.convert_to_numpy(inputs_of_norm(batch, training=False)).astype(np.float64)
            axes = tuple(range(activations.ndim - 1))
            total = total + activations.sum(axis=axes)
            total_squares = total_squares + np.square(activations).sum(axis=axes)
            values += activations.size // activations.shape[-1]
        mean = total / values
        norm.moving_mean.assign(mean.astype(np.float32))
        norm.moving_variance.assign(np.maximum(total_squares / values - np.square(mean), 0.0).astype(np.float32))
    return len(sample)


def history_as_metrics(history: dict[str, list[float]]) -> dict[str, list[dict[str, float]]]:
    """Keras history -> ``{metric: [{"value": v, "step": epoch}]}`` (epochs counted from 1)."""
    return {
        name: [{"value": float(value), "step": epoch} for epoch, value in enumerate(values, start=1)]
        for name, values in history.items()
        if name != "learning_rate"
    }


def plot_training_curves(history: dict[str, list[float]], task: dict[str, Any]) -> plt.Figure:
    """Loss and metrics per epoch, train against validation, one panel per metric."""
    names = [name for name in history if not name.startswith("val_") and name not in ("learning_rate", "epoch_seconds")]
    figure, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3.2), squeeze=False)
    for axis, name in zip(axes[0], names, strict=True):
        for key, label in ((name, "train"), (f"val_{name}", "validation")):
            if key in history:
                axis.plot(range(1, len(history[key]) + 1), history[key], marker="o", label=label)
        axis.set_title(name)
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
        axis.legend()
    figure.suptitle(f"{task['target']} model training")
    figure.tight_layout()
    return figure
