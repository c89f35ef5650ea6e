"""Training batches: ``tf.data`` pipelines over (memory-mapped) image arrays."""

from __future__ import annotations

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from face_pipeline.tasks import get_task


def model_targets(model: keras.Model, labels: pd.DataFrame, target: str) -> np.ndarray | dict[str, np.ndarray]:
    """``target``'s labels, once per output of ``model`` where it has several (the age bins of the
    "distribution" loss learn from the same ages as the served output)."""
    values = get_task(target).targets(labels)
    return {name: values for name in model.output} if isinstance(model.output, dict) else values


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
