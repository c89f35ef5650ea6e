"""Training nodes: one template for every task (gender, age); the task is a parameter.

How a run is put together lives beside this file: ``data`` (batches), ``callbacks``,
``budget`` (epochs that fit the time budget), ``backup`` (resuming a killed run) and
``batch_norm`` (statistics re-estimated after training, the epoch kept).
"""

from __future__ import annotations

import logging
import os
import random
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import tensorflow as tf

from face_pipeline.config import check_keys
from face_pipeline.distribute import Cluster, agree, cluster_from_environment, strategy_name, training_strategy
from face_pipeline.models import ModelSettings, build_model, compile_model, inference_model, resolve_precision
from face_pipeline.predict import network_outputs
from face_pipeline.tasks import get_task

from .backup import backup_path, data_fingerprint, forget_plan, keep_plan, saved_plan
from .batch_norm import finish_weights
from .budget import Plan, measure_step_seconds, plan_in_budget
from .callbacks import EarlyStoppingKeepingLast, EpochLog, TimeLimit, metric_name
from .data import distribute, make_dataset, model_targets
from .settings import CalibrationSettings, TrainingSettings

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


def task_target(task: dict[str, Any], block: str = "task") -> str:
    """The label column a ``task`` block names, checked against the known tasks."""
    target = check_keys(task, {"target"}, block).get("target")
    return get_task(target).name


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
    targets = model_targets(probe, train_labels.iloc[:count], target)
    data = make_dataset(train_images[:count], targets, batch_size, shuffle=False, seed=0)
    return measure_step_seconds(probe, data) * (steps_per_epoch + val_steps / 3)


def _batches(
    network: keras.Model,
    images: np.ndarray,
    labels: pd.DataFrame,
    target: str,
    settings: TrainingSettings,
    shuffle: bool,
    strategy=None,
    cluster: Cluster | None = None,
) -> tf.data.Dataset:
    """The batches of ``images``; on several workers, this worker's share of each (see ``make_dataset``)."""
    targets = model_targets(network, labels, target)
    cluster = cluster or Cluster()

    def for_shard(shard: tuple[int, int]) -> tf.data.Dataset:
        return make_dataset(images, targets, settings.batch_size, shuffle=shuffle, seed=settings.seed, shard=shard)

    return distribute(for_shard, strategy, cluster.workers, cluster.index)


def _runtime(strategy, cluster: Cluster) -> dict[str, Any]:
    """Where the run trained: TensorFlow's threads per op, the distribution strategy, the workers."""
    return {
        "threads": tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count(),
        "distribution_strategy": strategy_name(strategy),
        "workers": cluster.workers,
        "replicas": strategy.num_replicas_in_sync,
    }


def _backup_folder(
    settings: TrainingSettings, model: dict[str, Any], fingerprint: str, cluster: Cluster
) -> Path | None:
    """The run's backup folder (``backup_path``), one per worker: Keras callbacks know no chief."""
    if not settings.backup_dir:
        return None
    backup = backup_path(settings.backup_dir, {"model": model, "training": settings.resume_key()}, fingerprint)
    return backup / f"worker-{cluster.index}" if cluster.distributed else backup


def _plan_run(
    settings: TrainingSettings, backup, epoch_seconds: Callable[[float], float], auto_downsample: bool
) -> Plan:
    """The epochs (and downsampling) to train: as configured, or what fits the time budget here.

    A resumed run keeps the plan it started with. Probing draws random numbers, so the seeds
    are reset afterwards: the model then starts from the same weights as without a budget.
    """
    if not settings.time_budget_minutes:
        return Plan(settings.epochs)
    plan = saved_plan(backup) or plan_in_budget(
        settings.epochs, settings.time_budget_minutes, epoch_seconds, auto_downsample
    )
    keep_plan(backup, plan)
    keras.utils.set_random_seed(settings.seed)
    return plan


def train_model(
    train_images: np.ndarray,
    train_labels: pd.DataFrame,
    val_images: np.ndarray,
    val_labels: pd.DataFrame,
    task: dict[str, Any],
    model: dict[str, Any],
    training: dict[str, Any],
) -> tuple[keras.Model, dict[str, list[float]], dict[str, Any]]:
    """Build the model named in ``model["architecture"]``, fit it on train, validating on val.

    Returns the model to serve, its per-epoch history (``{metric: [value per epoch]}``,
    validation metrics prefixed ``val_``) and what the run decided at run time (precision,
    planned epochs and downsampling, epochs run, the epoch kept, threads, distribution
    strategy, the data's fingerprint), which the catalog logs to MLflow.

    A run that stops half-way resumes from its last finished epoch when started again
    (``training.backup_dir``) with the plan it started with, on the same data only. With
    ``training.time_budget_minutes`` the epochs are cut to what fits in that time on this
    machine (measured first); with ``downsample: auto`` in the architecture's block the network
    for smaller faces is trained instead where fewer than half the epochs fit at full size.
    """
    target = task_target(task)
    spec = get_task(target)
    model_settings = ModelSettings.from_params(model, f"{target}.model")
    settings = TrainingSettings.from_params(training, f"{target}.training")
    configure_runtime(settings.seed, settings.deterministic, settings.threads)
    precision = resolve_precision(settings.precision)
    input_shape = tuple(train_images.shape[1:])
    options = {
        **model_settings.builder_options(),
        "loss": model_settings.loss,
        "augment": model_settings.augment,
        "label_stats": spec.label_stats(spec.targets(train_labels)),
    }
    # downsample: auto is settled by the time budget: full-size faces unless they do not fit.
    auto_downsample = str(options.get("downsample")).lower() == "auto"
    if auto_downsample:
        options["downsample"] = 1

    def build(learning_rate: Any, precision: str = precision, **changes: Any) -> keras.Model:
        arguments = {**options, **changes}
        network = build_model(model_settings.architecture, input_shape, target, precision=precision, **arguments)
        return compile_model(network, target, learning_rate, model_settings.loss)

    cluster = cluster_from_environment()
    strategy = training_strategy(cluster)
    fingerprint = data_fingerprint(train_images, train_labels)
    backup = _backup_folder(settings, model, fingerprint, cluster)

    def epoch_seconds(downsample: float) -> float:
        probe = build(float(settings.learning_rate), **({"downsample": downsample} if auto_downsample else {}))
        batch = settings.batch_size
        seconds = _probe_epoch_seconds(probe, train_images, train_labels, target, batch, len(val_images))
        return agree(seconds, strategy)  # every worker plans with the slowest one's time

    plan = _plan_run(settings, backup, epoch_seconds, auto_downsample)
    if auto_downsample:
        options["downsample"] = plan.downsample
    settings = settings.for_planned_epochs(plan.epochs)

    steps_per_epoch = -(-len(train_images) // settings.batch_size)
    learning_rate = learning_rate_schedule(settings, steps_per_epoch)
    with strategy.scope():
        network = build(learning_rate)
    train_data = _batches(network, train_images, train_labels, target, settings, True, strategy, cluster)
    callbacks = training_callbacks(settings, target, backup, strategy)
    resumed = backup is not None and backup.exists()
    logger.info(
        "Training %s (%s, %s parameters, %s, %s) on %d images, validating on %d",
        network.name,
        model_settings.architecture,
        f"{network.count_params():,}",
        precision,
        f"worker {cluster.index + 1} of {cluster.workers}" if cluster.distributed else strategy_name(strategy),
        len(train_images),
        len(val_images),
    )
    history = network.fit(
        train_data,
        validation_data=_batches(network, val_images, val_labels, target, settings, False, strategy, cluster),
        epochs=settings.epochs,
        callbacks=callbacks,
        shuffle=False,  # train_data reshuffles itself every epoch
        verbose=1 if sys.stdout.isatty() else 0,  # progress bar on a terminal, EpochLog lines otherwise
    )
    forget_plan(backup)
    if precision != "float32" or strategy.num_replicas_in_sync > 1:
        # Served in float32 and outside the strategy: the same network with the trained weights
        # (variables are float32 already), so predictions do not depend on 16-bit support or on
        # the other workers. Everything after this runs on each worker alone, alike.
        trained_weights = network.get_weights()
        network = build(learning_rate, precision="float32")
        network.set_weights(trained_weights)
    val_data = _batches(network, val_images, val_labels, target, settings, False)
    epoch_log = callbacks[0]
    stopping = next((c for c in callbacks if isinstance(c, EarlyStoppingKeepingLast)), None)
    epochs_run = (epoch_log.last_epoch or 0) + 1
    kept = finish_weights(
        network, train_images, val_data, int(settings.batch_norm_recalibration), settings.seed, stopping, epochs_run
    )
    served = inference_model(network, target, bool(model_settings.mirror_average))
    decisions = {
        "precision": precision,
        **_runtime(strategy, cluster),
        "planned_epochs": plan.epochs,
        "plan": plan.source,
        "downsample": plan.downsample if auto_downsample else options.get("downsample", 1),
        "resumed_from_backup": resumed,
        "epochs_run": epochs_run,
        "epoch_kept": kept.epoch,
        "epoch_kept_because": kept.reason,
        "parameters": network.count_params(),
        "train_data_sha1": fingerprint,
    }
    logger.info("%s training decided: %s", target, ", ".join(f"{k}={v}" for k, v in decisions.items()))
    history_by_name = {
        metric_name(name, target): [float(v) for v in values] for name, values in history.history.items()
    }
    return served, history_by_name, decisions


def fit_calibration(
    model: keras.Model, val_images: np.ndarray, val_labels: pd.DataFrame, task: dict[str, Any], calibration: dict
) -> dict[str, Any]:
    """What makes the answers actionable, fitted on the validation split (``Task.calibrate``):
    gender's temperature, age's range level. Saved next to the model and logged as MLflow params
    ``<task>.calibrated.*``; every prediction surface applies it."""
    target = task_target(task)
    spec = get_task(target)
    settings = CalibrationSettings.from_params(calibration, f"{target}.calibration")
    outputs = network_outputs(model, val_images, settings.batch_size)
    fitted = spec.calibrate(outputs, spec.targets(val_labels), settings.for_task())
    logger.info("%s calibration on %d validation images: %s", target, len(val_images), fitted)
    return fitted


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
