"""Training nodes: one template for every task (gender, age); the task is a parameter.

How a run goes lives beside this file: ``run`` (set up, plan, fit, finish), ``data`` (batches),
``callbacks``, ``budget`` (epochs that fit the time budget), ``backup`` (resuming a killed run),
``batch_norm`` (statistics re-estimated after training, the epoch kept) and ``heads`` (the
embedding heads and their mix with the network).
"""

from __future__ import annotations

import logging
from typing import Any

import keras
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from face_pipeline.inference.batching import network_outputs
from face_pipeline.tasks import get_task

from .callbacks import metric_name
from .run import TrainingDecisions, finish, fit, plan_run, runtime_description, set_up, task_target
from .settings import CalibrationSettings

logger = logging.getLogger(__name__)


def train_model(
    train_images: np.ndarray,
    train_labels: pd.DataFrame,
    val_images: np.ndarray,
    val_labels: pd.DataFrame,
    task: dict[str, Any],
    model: dict[str, Any],
    training: dict[str, Any],
) -> tuple[keras.Model, dict[str, list[float]], dict[str, Any]]:
    """Build the model named in ``model["architecture"]``, fit it on train, validating on val:
    set up, plan, fit, finish.

    Returns the model to serve, its per-epoch history (``{metric: [value per epoch]}``,
    validation metrics prefixed ``val_``) and what the run decided at run time
    (``TrainingDecisions``: precision, planned epochs and downsampling, epochs run, the epoch
    kept, threads, distribution strategy, the data's fingerprint), which the catalog logs to MLflow.

    A run that stops half-way resumes from its last finished epoch when started again
    (``training.backup_dir``) with the plan it started with, on the same data only. With
    ``training.time_budget_minutes`` the epochs are cut to what fits in that time on this
    machine (measured first); with ``downsample: auto`` in the architecture's block the network
    for smaller faces is trained instead where fewer than half the epochs fit at full size.
    """
    setup = set_up(train_images, train_labels, task, model, training)
    plan = plan_run(setup, train_images, train_labels, len(val_images))
    network, history, callbacks, resumed, learning_rate = fit(setup, train_images, train_labels, val_images, val_labels)
    served, kept, epochs_run, parameters = finish(
        setup, network, callbacks, learning_rate, train_images, val_images, val_labels
    )
    decisions = TrainingDecisions(
        precision=setup.precision,
        runtime=runtime_description(setup.strategy, setup.cluster),
        plan=plan,
        downsample=plan.downsample if setup.auto_downsample else setup.options.get("downsample", 1),
        resumed_from_backup=resumed,
        epochs_run=epochs_run,
        kept=kept,
        parameters=parameters,
        train_data_sha1=setup.fingerprint,
    ).as_params()
    logger.info("%s training decided: %s", setup.target, ", ".join(f"{k}={v}" for k, v in decisions.items()))
    history_by_name = {
        metric_name(name, setup.target): [float(v) for v in values] for name, values in history.history.items()
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
