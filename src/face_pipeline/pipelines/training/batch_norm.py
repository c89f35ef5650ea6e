"""After training: batch-norm statistics re-estimated on plain faces, and which epoch's weights to keep."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from .callbacks import EarlyStoppingKeepingLast

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class KeptEpoch:
    """Which finished epoch (1-based) the model ends with, and why."""

    epoch: int
    reason: str


def batch_norms(model: keras.Model) -> list[keras.layers.BatchNormalization]:
    return [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]


def recalibrate_batch_norm(model: keras.Model, images: np.ndarray, count: int, seed: int, batch_size: int = 256) -> int:
    """Re-estimate every batch-norm layer's statistics on ``count`` un-augmented training images.

    During training the running averages follow augmented batches and the last few hundred
    steps; at inference the network sees plain faces. Layers are done in order, each on the
    activations of the layers before it with their new statistics. Returns the images used.
    """
    norms = batch_norms(model)
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


def finish_weights(
    model: keras.Model,
    train_images: np.ndarray,
    val_data: tf.data.Dataset,
    count: int,
    seed: int,
    stopping: EarlyStoppingKeepingLast | None,
    epochs_run: int,
    monitored: str = "val_loss",
) -> KeptEpoch:
    """Re-estimate batch-norm statistics on ``count`` training images and choose the epoch to keep.

    Early stopping compares epochs by validation loss with the running batch-norm statistics of
    augmented batches, which jump from epoch to epoch even at a small learning rate; after
    re-estimation the last epoch of a decayed schedule may be the better network. So where early
    stopping restored an earlier epoch, the last epoch's weights are re-estimated too, and the
    model keeps whichever has the lower validation loss afterwards.
    """
    restored = stopping is not None and stopping.restored_earlier_epoch
    kept = (
        KeptEpoch(stopping.best_epoch + 1, "early stopping restored the best validation epoch")
        if restored
        else KeptEpoch(epochs_run, "last epoch")
    )
    if not count or not batch_norms(model):
        return kept
    before = model.evaluate(val_data, verbose=0, return_dict=True)
    used = recalibrate_batch_norm(model, train_images, count, seed)
    after = model.evaluate(val_data, verbose=0, return_dict=True)
    changes = ", ".join(f"val_{name} {before[name]:.4f} -> {after[name]:.4f}" for name in after)
    logger.info("Batch-norm statistics re-estimated on %d training images: %s", used, changes)
    if not restored:
        return kept
    loss = monitored.removeprefix("val_")
    restored_weights = model.get_weights()
    model.set_weights(stopping.last_weights)
    recalibrate_batch_norm(model, train_images, count, seed)
    last = model.evaluate(val_data, verbose=0, return_dict=True)
    keep_last = last[loss] < after[loss]
    if not keep_last:
        model.set_weights(restored_weights)
    last_epoch = stopping.last_epoch + 1
    logger.info(
        "Last epoch %d against the restored epoch %d, both re-estimated: val_%s %.4f against %.4f; "
        "keeping epoch %d (%s)",
        last_epoch,
        kept.epoch,
        loss,
        last[loss],
        after[loss],
        last_epoch if keep_last else kept.epoch,
        ", ".join(f"val_{name} {value:.4f}" for name, value in (last if keep_last else after).items()),
    )
    if keep_last:
        return KeptEpoch(last_epoch, "last epoch: lower validation loss than the restored one after re-estimation")
    return KeptEpoch(kept.epoch, "restored epoch: lower validation loss than the last one after re-estimation")
