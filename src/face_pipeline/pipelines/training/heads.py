"""Nodes of the embedding heads: trained on the cached embeddings, then mixed with the task's network.

The head learns the task from dlib's face embedding (``face_pipeline.modelling.heads``) with the task's
loss; the mix of head and network (``face_pipeline.modelling.combination``) is weighted and calibrated on
the validation split, never the test split. Faces without an embedding are left out of both.
"""

from __future__ import annotations

import logging
from typing import Any

import keras
import numpy as np
import pandas as pd

from face_pipeline.inference.batching import network_outputs
from face_pipeline.modelling.builders import compile_model, inference_model
from face_pipeline.modelling.combination import fit_combination
from face_pipeline.modelling.heads import embedding_head
from face_pipeline.pipelines.embeddings.nodes import with_embeddings
from face_pipeline.tasks import get_task

from .callbacks import EpochLog, metric_name
from .data import model_targets
from .run import configure_runtime, task_target
from .settings import CalibrationSettings, HeadSettings

logger = logging.getLogger(__name__)


def train_head(
    train_embeddings: pd.DataFrame,
    train_labels: pd.DataFrame,
    val_embeddings: pd.DataFrame,
    val_labels: pd.DataFrame,
    task: dict[str, Any],
    model: dict[str, Any],
    head: dict[str, Any],
    embedding_summary: dict[str, Any] | None = None,
) -> tuple[keras.Model, dict[str, list[float]], dict[str, Any]]:
    """The task's embedding head, trained with the network's loss (``<task>.model.loss``) and early
    stopping on the validation loss (best weights kept); its history and what was used, with how
    many embeddings this run computed and how many it reused from the cache (``embedding_summary``)."""
    target = task_target(task)
    settings = HeadSettings.from_params(head, f"{target}.head")
    configure_runtime(settings.seed)
    train_x, train_rows, _ = with_embeddings(train_embeddings, train_labels)
    val_x, val_rows, _ = with_embeddings(val_embeddings, val_labels)
    if not len(train_x) or not len(val_x):
        raise ValueError(
            f"{target} head: no training or validation image has an embedding (see embedding_failures.csv)"
        )
    spec = get_task(target)
    network = embedding_head(
        target,
        hidden_units=settings.hidden_units,
        dropout=settings.dropout,
        loss=model.get("loss"),
        label_stats=spec.label_stats(spec.targets(train_rows)),
    )
    compile_model(network, target, settings.learning_rate, model.get("loss"))
    stop = keras.callbacks.EarlyStopping(patience=settings.early_stopping_patience, restore_best_weights=True)
    history = network.fit(
        train_x,
        model_targets(network, train_rows, target),
        validation_data=(val_x, model_targets(network, val_rows, target)),
        epochs=settings.epochs,
        batch_size=settings.batch_size,
        callbacks=[stop, EpochLog(target)],
        verbose=0,
    )
    decisions = {
        "train_faces": len(train_x),
        "val_faces": len(val_x),
        "left_out_without_embedding": len(train_labels) + len(val_labels) - len(train_x) - len(val_x),
        "epochs_run": len(history.history["loss"]),
        "epoch_kept": int(np.argmin(history.history["val_loss"])) + 1,
        **{
            f"embeddings_{kind}": sum(split[kind] for split in (embedding_summary or {}).values())
            for kind in ("computed", "reused")
        },
    }
    logger.info("%s head: %s", target, decisions)
    curves = {metric_name(name, target): [float(v) for v in values] for name, values in history.history.items()}
    curves.pop("epoch_seconds", None)
    return inference_model(network, target), curves, decisions


def fit_head_combination(
    model: keras.Model,
    head: keras.Model,
    val_images: np.ndarray,
    val_labels: pd.DataFrame,
    val_embeddings: pd.DataFrame,
    task: dict[str, Any],
    calibration: dict[str, Any],
) -> dict[str, Any]:
    """How much of the head's answer to mix into the network's, and the mix's calibration, fitted on
    the validation faces that have an embedding (``combination.fit_combination``)."""
    target = task_target(task)
    settings = CalibrationSettings.from_params(calibration, f"{target}.calibration")
    embeddings, rows, usable = with_embeddings(val_embeddings, val_labels)
    network = network_outputs(model, np.asarray(val_images)[usable], settings.batch_size)
    head_outputs = network_outputs(head, embeddings, settings.batch_size)
    fitted = fit_combination(
        get_task(target), network, head_outputs, get_task(target).targets(rows), settings.for_task()
    )
    logger.info("%s: head weight %.2f on %d validation faces", target, fitted["head_weight"], len(rows))
    return {**fitted, "validation_faces": len(rows)}
