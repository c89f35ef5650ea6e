"""Keras losses of the project's own (registered, so a model compiled with one loads again)."""

from __future__ import annotations

import keras
from keras import ops

from face_pipeline.labels import AGE_BINS


@keras.saving.register_keras_serializable(package="face_pipeline")
class AgeDistributionLoss(keras.losses.Loss):
    """Kullback-Leibler divergence from a Gaussian around the true age to the predicted bins.

    Label distribution learning (DLDL-v2, Gao et al. 2018): the target is not one age but a
    narrow distribution over neighbouring ages, which suits labels that are themselves
    uncertain by a few years. ``y_true`` holds ages in years, ``y_pred`` probabilities per bin.
    """

    def __init__(self, sigma: float = 2.0, name: str = "age_distribution", **kwargs):
        super().__init__(name=name, **kwargs)
        self.sigma = float(sigma)

    def call(self, y_true, y_pred):
        bins = ops.convert_to_tensor(AGE_BINS)
        y_true = ops.reshape(ops.cast(y_true, y_pred.dtype), (-1, 1))
        target = ops.softmax(-0.5 * ops.square((bins - y_true) / self.sigma), axis=-1)
        eps = keras.config.epsilon()
        return ops.sum(target * (ops.log(target + eps) - ops.log(y_pred + eps)), axis=-1)

    def get_config(self):
        return {**super().get_config(), "sigma": self.sigma}
