"""Embedding heads: a task's output layer on dlib's face embedding (``face_pipeline.embedding.descriptor``).

Like the model builders in ``models``, a function returning an uncompiled ``keras.Model`` from
a few named parameters; compiled by ``models.compile_model``, with the task's loss and outputs
(the age head predicts a distribution over the years, as the age network does).
"""

from __future__ import annotations

import keras
from keras import layers

from face_pipeline.embedding.descriptor import EMBEDDING_SIZE
from face_pipeline.tasks import get_task


def embedding_head(
    task: str,
    *,
    hidden_units: int = 256,
    dropout: float = 0.3,
    loss: str | None = None,
    label_stats: dict[str, float] | None = None,
) -> keras.Model:
    """One hidden layer on the unit-length embedding, then the task's head."""
    inputs = keras.Input(shape=(EMBEDDING_SIZE,), name="embedding")
    features = layers.Dense(hidden_units, activation="relu", name="hidden")(inputs)
    features = layers.Dropout(dropout, name="dropout")(features)
    outputs = get_task(task).head(features, loss, **(label_stats or {}))
    return keras.Model(inputs, outputs, name=f"{task}_head")
