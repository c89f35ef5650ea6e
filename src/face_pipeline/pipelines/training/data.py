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
    shard: tuple[int, int] = (0, 1),
) -> tf.data.Dataset:
    """Batches of ``(uint8 images, float32 targets)`` read from a (memory-mapped) array.

    ``targets`` is one array, or a dict of arrays (one per model output), batched alike.
    Only the indices are shuffled; each batch is gathered from ``images`` in index order
    (good for memory-mapped files) and stays uint8, so the set is never held as float32.

    ``shard=(worker, workers)``: this worker's share of every batch of ``batch_size`` (the
    global batch). Every worker draws the same shuffled order (same seed) and takes rows
    ``worker, worker + workers, ...`` of each batch, so the workers read distinct rows, take
    the same number of steps, and together see exactly the batches one process would.
    """
    names = list(targets) if isinstance(targets, dict) else None
    columns = np.stack([targets[name] for name in names], axis=1) if names else np.asarray(targets)[:, None]
    columns = columns.astype(np.float32)
    if len(images) != len(columns):
        raise ValueError(f"{len(images)} images but {len(columns)} labels")
    image_shape = tuple(images.shape[1:])
    worker, workers = shard

    def gather(indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        indices = np.sort(indices[worker::workers])
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
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return dataset.map(unpack).prefetch(tf.data.AUTOTUNE).with_options(options)


def distribute(dataset_for_shard, strategy, workers: int, worker: int) -> tf.data.Dataset:
    """``dataset_for_shard((worker, workers))`` as the strategy's input: each worker feeds its own share.

    With one worker (or one process with several GPUs) the dataset is returned as it is and the
    strategy splits each batch itself.
    """
    if workers <= 1:
        return dataset_for_shard((0, 1))
    return strategy.distribute_datasets_from_function(lambda context: dataset_for_shard((worker, workers)))
