"""Fine-tuning: a trained network adapted to another population's labelled photos."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import keras
import mlflow
import numpy as np
import pandas as pd

from face_pipeline.config import read_block
from face_pipeline.modelling.builders import compile_model
from face_pipeline.pipelines.training.callbacks import training_callbacks
from face_pipeline.pipelines.training.data import make_dataset, model_targets
from face_pipeline.pipelines.training.run import configure_runtime, task_target
from face_pipeline.pipelines.training.settings import TrainingSettings

logger = logging.getLogger(__name__)


def _layers(model: keras.Layer):
    """Every layer, nested models' layers included."""
    for layer in getattr(model, "layers", []):
        yield layer
        yield from _layers(layer)


@dataclass(frozen=True)
class FinetuningSettings:
    """The ``finetuning`` block of ``conf/base/parameters_finetuning.yml`` (see its comments)."""

    base_models: dict[str, str]
    epochs: int
    batch_size: int
    learning_rate: float
    early_stopping_patience: int = 0
    freeze_batch_norm: bool = True
    seed: int = 42
    deterministic: bool = False

    @classmethod
    def from_params(cls, params: dict[str, Any], block: str = "finetuning") -> FinetuningSettings:
        return read_block(cls, params, block)

    def training(self) -> TrainingSettings:
        """The same numbers as a training run's: constant learning rate, no budget, no backup."""
        return TrainingSettings(
            epochs=self.epochs,
            batch_size=self.batch_size,
            learning_rate=self.learning_rate,
            early_stopping_patience=self.early_stopping_patience,
            seed=self.seed,
            deterministic=self.deterministic,
        )


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
    settings = FinetuningSettings.from_params(finetuning)
    configure_runtime(settings.seed, settings.deterministic)
    target = task_target(task)
    if settings.freeze_batch_norm:
        for layer in _layers(base_model):
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = False
    model = compile_model(base_model, target, float(settings.learning_rate))
    batch_size, seed = settings.batch_size, settings.seed
    train = make_dataset(train_images, model_targets(model, train_labels, target), batch_size, shuffle=True, seed=seed)
    val = make_dataset(val_images, model_targets(model, val_labels, target), batch_size, shuffle=False, seed=seed)
    callbacks = training_callbacks(settings.training(), target, backup=None)
    before = model.evaluate(val, verbose=0, return_dict=True)
    logger.info("%s before fine-tuning: %s", target, ", ".join(f"val_{k}={v:.4f}" for k, v in before.items()))
    fitted = model.fit(train, validation_data=val, epochs=settings.epochs, callbacks=callbacks, verbose=0)
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
