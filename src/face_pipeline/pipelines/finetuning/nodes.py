"""Fine-tuning: a trained network adapted to another population's labelled photos."""

from __future__ import annotations

import logging
from typing import Any

import keras
import mlflow
import numpy as np
import pandas as pd

from face_pipeline.models import compile_model
from face_pipeline.pipelines.training.nodes import _callbacks, _targets, configure_runtime, make_dataset

logger = logging.getLogger(__name__)


def _layers(model: keras.Layer):
    """Every layer, nested models' layers included."""
    for layer in getattr(model, "layers", []):
        yield layer
        yield from _layers(layer)


def finetune_model(
    base_model: keras.Model,
    train_images: np.ndarray,
    train_labels: pd.DataFrame,
    val_images: np.ndarray,
    val_labels: pd.DataFrame,
    task: dict[str, Any],
    finetuning: dict[str, Any],
) -> tuple[keras.Model, dict[str, list[float]]]:
    """Train ``base_model`` further on the new photos with a small learning rate.

    Batch-norm statistics stay those of the original training set (the layers run in inference
    mode), so a few thousand photos adapt the weights without re-estimating what the network
    learnt from far more. Early stopping on the validation loss restores the best epoch.
    """
    configure_runtime(finetuning["seed"], finetuning.get("deterministic", False))
    target = task["target"]
    if finetuning.get("freeze_batch_norm", True):
        for layer in _layers(base_model):
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = False
    model = compile_model(base_model, target, float(finetuning["learning_rate"]))
    batch_size, seed = int(finetuning["batch_size"]), int(finetuning["seed"])
    train = make_dataset(train_images, _targets(train_labels, target), batch_size, shuffle=True, seed=seed)
    val = make_dataset(val_images, _targets(val_labels, target), batch_size, shuffle=False, seed=seed)
    callbacks = _callbacks(finetuning, target, backup=None, monitored="val_loss")
    before = model.evaluate(val, verbose=0, return_dict=True)
    logger.info("%s before fine-tuning: %s", target, ", ".join(f"val_{k}={v:.4f}" for k, v in before.items()))
    fitted = model.fit(train, validation_data=val, epochs=int(finetuning["epochs"]), callbacks=callbacks, verbose=0)
    history = {name: [float(value) for value in values] for name, values in fitted.history.items()}
    return model, history


def tag_lineage(base_model_source: str, task: dict[str, Any]) -> dict[str, str]:
    """Tag the run with the model it started from; an MLflow source also names its run.

    Returns the tags (saved as a report). Node with a side effect on the active MLflow run,
    like the model packaging: kedro-mlflow has no dataset for tags.
    """
    target = task["target"]
    tags = {f"finetune.{target}.base_model": str(base_model_source)}
    run_id = _source_run(str(base_model_source))
    if run_id:
        tags[f"finetune.{target}.base_run_id"] = run_id
    if mlflow.active_run() is not None:
        mlflow.set_tags(tags)
    return tags


def _source_run(source: str) -> str | None:
    """The MLflow run that logged ``source`` (``runs:/<id>/...`` or ``models:/<name>/<version>``)."""
    if source.startswith("runs:/"):
        return source.removeprefix("runs:/").split("/")[0]
    if source.startswith("models:/"):
        name, _, version = source.removeprefix("models:/").strip("/").partition("/")
        return mlflow.MlflowClient().get_model_version(name, version).run_id if version.isdigit() else None
    return None
