"""Keras model builders: each returns a compiled ``keras.Model`` from a few named parameters.

Every model takes ``uint8``-valued images of shape ``(size, size, channels)`` and scales them to
[0, 1] itself (a ``Rescaling`` layer), so nothing outside the model needs to know how. Data
augmentation layers sit inside the model too: they act during ``fit`` only.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from keras import layers, ops

# What distinguishes the two tasks: the output layer, the loss and the metrics.
TASKS = ("gender", "age")
LOSSES = {"binary_crossentropy", "mae", "huber", "distribution"}
DEFAULT_LOSSES = {"gender": "binary_crossentropy", "age": "mae"}
# Numeric precision of the layers between the input scaling and the output head while training.
# Saved models always compute in float32.
PRECISIONS = {"float32", "mixed_bfloat16", "auto"}
# Ages the "distribution" loss spreads its probabilities over: one bin per year.
AGE_BINS = np.arange(0, 121, dtype="float32")


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


@contextlib.contextmanager
def _dtype_policy(policy: str) -> Iterator[None]:
    """Layers created inside take ``policy`` unless they name a dtype themselves."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def _task_head(features, task: str, age_mean: float, age_std: float, distribution: bool = False):
    if task == "gender":
        return layers.Dense(1, activation="sigmoid", dtype="float32", name="gender")(features)
    if task == "age" and distribution:
        # Probabilities per year of age, starting from a Gaussian prior around the training
        # mean; the prediction in years is their expectation (a fixed dense layer).
        prior = -0.5 * ((AGE_BINS - age_mean) / age_std) ** 2
        probabilities = layers.Dense(
            len(AGE_BINS),
            activation="softmax",
            kernel_initializer="zeros",
            bias_initializer=keras.initializers.Constant(prior - prior.max()),
            dtype="float32",
            name="age_distribution",
        )(features)
        age = layers.Dense(
            1,
            use_bias=False,
            trainable=False,
            kernel_initializer=keras.initializers.Constant(AGE_BINS.reshape(-1, 1)),
            dtype="float32",
            name="age",
        )(probabilities)
        return {"age": age, "age_distribution": probabilities}
    if task == "age":
        # The dense layer predicts a standardised age; a fixed affine layer turns it into years.
        # Without it the weights must first grow ~20x to span real ages, which stalls training.
        standardised = layers.Dense(1, dtype="float32", name="age_standardised")(features)
        return layers.Rescaling(scale=age_std, offset=age_mean, dtype="float32", name="age")(standardised)
    raise ValueError(f"task must be one of {TASKS}, got {task!r}")


def _heads(
    features,
    task: str,
    age_mean: float,
    age_std: float,
    loss: str | None,
    auxiliary: dict[str, float] | None,
):
    """The task's output, plus one output per auxiliary task (``{task: loss weight}``).

    Auxiliary outputs are trained alongside the main one and dropped from the saved model.
    """
    main = _task_head(features, task, age_mean, age_std, loss == "distribution")
    if not auxiliary:
        return main
    outputs = dict(main) if isinstance(main, dict) else {task: main}
    for other in auxiliary:
        if other == task or other not in TASKS:
            raise ValueError(f"auxiliary tasks must be among {TASKS} and differ from {task!r}, got {other!r}")
        outputs[other] = _task_head(features, other, age_mean, age_std)
    return outputs


def _mirror(images):
    """Images flipped left-right, with built-in layers only (so saved models need no custom code)."""
    width = images.shape[2]
    reverse = np.eye(width, dtype="float32")[::-1]
    columns_last = layers.Permute((1, 3, 2), name="columns_last")(images)
    flipped = layers.Dense(
        width, use_bias=False, trainable=False, kernel_initializer=keras.initializers.Constant(reverse), name="mirror"
    )(columns_last)
    return layers.Permute((1, 3, 2), name="mirrored")(flipped)


def _metrics(task: str) -> list[keras.metrics.Metric]:
    if task == "gender":
        return [keras.metrics.BinaryAccuracy(name="accuracy"), keras.metrics.AUC(name="auc")]
    return [keras.metrics.MeanAbsoluteError(name="mae"), keras.metrics.RootMeanSquaredError(name="rmse")]


def _optimizer(model: keras.Model, learning_rate: float | Any, weight_decay: float) -> keras.optimizers.Optimizer:
    """Adam, or AdamW where ``weight_decay`` > 0 (decoupled: each step shrinks kernels by rate x decay)."""
    if not weight_decay:
        return keras.optimizers.Adam(learning_rate)
    optimizer = keras.optimizers.AdamW(learning_rate, weight_decay=float(weight_decay))
    # Kernels only: biases and batch-norm scales and offsets set levels, not capacity.
    optimizer.exclude_from_weight_decay(var_list=[w for w in model.trainable_weights if len(w.shape) < 2])
    return optimizer


def _compile(
    model: keras.Model,
    task: str,
    learning_rate: float | Any,
    loss: str | None,
    auxiliary: dict[str, float] | None = None,
    weight_decay: float = 0.0,
) -> keras.Model:
    loss = loss or DEFAULT_LOSSES[task]
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {sorted(LOSSES)}, got {loss!r}")
    if loss == "distribution" and task != "age":
        raise ValueError("loss 'distribution' is for the age task only")
    optimizer = _optimizer(model, learning_rate, weight_decay)
    main_loss = keras.losses.Huber(delta=5.0) if loss == "huber" else "mae" if loss == "distribution" else loss
    if not isinstance(model.output, dict):
        model.compile(optimizer=optimizer, loss=main_loss, metrics=_metrics(task))
        return model
    losses, weights = {task: main_loss}, {task: 1.0}
    if loss == "distribution":
        # DLDL-v2: the divergence shapes the distribution, MAE on its expectation sharpens it.
        losses["age_distribution"], weights["age_distribution"] = AgeDistributionLoss(), 1.0
    for other, weight in (auxiliary or {}).items():
        losses[other], weights[other] = DEFAULT_LOSSES[other], float(weight)
    model.compile(optimizer=optimizer, loss=losses, loss_weights=weights, metrics={task: _metrics(task)})
    return model


def compile_model(model: keras.Model, task: str, learning_rate: float | Any) -> keras.Model:
    """Compile a trained single-output model again, with Adam at ``learning_rate``, for further training."""
    return _compile(model, task, learning_rate, loss=None)


def inference_model(model: keras.Model, task: str, mirror_average: bool = False) -> keras.Model:
    """The single-output model to save and serve.

    Training-only outputs (the age bins of the "distribution" loss, auxiliary tasks) are dropped. With
    ``mirror_average`` the model predicts each face and its mirror image and returns the mean
    of the two, which evens out left/right quirks of one photo for twice the compute.
    Compiled with the task's plain loss and metrics, so it loads without this package.
    """
    if len(model.outputs) == 1 and not mirror_average:
        return model
    # An uncompiled view of the trained layers: a compiled model nested inside would be saved with
    # an optimizer of its own.
    trained = keras.Model(model.inputs, model.get_layer(task).output, name=model.name)
    inputs = keras.Input(shape=model.input_shape[1:], name="image")
    outputs = trained(inputs)
    if mirror_average:
        outputs = layers.Average(name=task)([outputs, trained(_mirror(inputs))])
    single = keras.Model(inputs, outputs, name=model.name)
    single.compile(optimizer=model.optimizer, loss=DEFAULT_LOSSES[task], metrics=_metrics(task))
    return single


def augmentation(
    flip: bool = True,
    rotation: float = 0.0,
    zoom: float = 0.0,
    translation: float = 0.0,
    brightness: float = 0.0,
    contrast: float = 0.0,
    seed: int | None = None,
) -> keras.Sequential:
    """Random, label-preserving changes to [0, 1] images; identity at inference.

    ``rotation`` is a fraction of a full turn, ``zoom``/``translation`` fractions of the
    image size, ``brightness``/``contrast`` fractions of the value range.
    """
    # Image transforms stay float32 whatever precision the rest of the model computes in.
    with _dtype_policy("float32"):
        steps: list[layers.Layer] = []
        if flip:
            steps.append(layers.RandomFlip("horizontal", seed=seed))
        if rotation:
            steps.append(layers.RandomRotation(rotation, fill_mode="reflect", seed=seed))
        if zoom:
            steps.append(layers.RandomZoom((-zoom, zoom), fill_mode="reflect", seed=seed))
        if translation:
            steps.append(layers.RandomTranslation(translation, translation, fill_mode="reflect", seed=seed))
        if brightness:
            steps.append(layers.RandomBrightness(brightness, value_range=(0.0, 1.0), seed=seed))
        if contrast:
            steps.append(layers.RandomContrast(contrast, value_range=(0.0, 1.0), seed=seed))
        return keras.Sequential(steps, name="augmentation")


def seed_cnn(
    input_shape: tuple[int, int, int],
    task: str,
    *,
    filters: tuple[int, ...] = (32, 64, 128, 256),
    dense_units: int = 256,
    dropout: float = 0.5,
    learning_rate: float | Any = 1e-3,
    weight_decay: float = 0.0,
    loss: str | None = None,
    age_mean: float = 33.0,
    age_std: float = 20.0,
    augment: dict | None = None,
    auxiliary: dict[str, float] | None = None,
) -> keras.Model:
    """The seed recipe: Conv 3x3 + ReLU + 2x2 max-pool per block, Flatten, Dense, Dropout, one output."""
    inputs = keras.Input(shape=input_shape, name="image")
    x = layers.Rescaling(1.0 / 255, dtype="float32", name="rescale")(inputs)
    if augment:
        x = augmentation(**augment)(x)
    for index, width in enumerate(filters):
        x = layers.Conv2D(width, 3, activation="relu", name=f"conv{index + 1}")(x)
        x = layers.MaxPooling2D(2, name=f"pool{index + 1}")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(dense_units, activation="relu", name="dense")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    model = keras.Model(inputs, _heads(x, task, age_mean, age_std, loss, auxiliary), name=f"seed_cnn_{task}")
    return _compile(model, task, learning_rate, loss, auxiliary, weight_decay)


def _downsample(images, factor: float):
    """``images`` shrunk by ``factor``, the same way when training and serving.

    Whole factors average blocks of pixels (an exact antialiased resize); others resize with
    antialiased bilinear interpolation.
    """
    if factor.is_integer():
        return layers.AveragePooling2D(int(factor), dtype="float32", name="downsample")(images)
    if None in images.shape[1:3]:
        raise ValueError(f"downsample {factor} (not a whole number) needs a fixed input size")
    height, width = (round(side / factor) for side in images.shape[1:3])
    return layers.Resizing(height, width, antialias=True, dtype="float32", name="downsample")(images)


def default_cnn(
    input_shape: tuple[int, int, int],
    task: str,
    *,
    stem_filters: int = 32,
    stem_convs: int = 1,
    filters: tuple[int, ...] = (48, 96, 192),
    convs_per_stage: int = 2,
    batch_norm: bool = True,
    dense_units: int = 128,
    dropout: float = 0.3,
    downsample: float = 1,
    learning_rate: float | Any = 1e-3,
    weight_decay: float = 0.0,
    loss: str | None = None,
    age_mean: float = 33.0,
    age_std: float = 20.0,
    augment: dict | None = None,
    auxiliary: dict[str, float] | None = None,
) -> keras.Model:
    """A CNN sized for CPUs: early downsampling, then VGG-style stages and global pooling.

    A 5x5 stride-2 stem and a max-pool bring 128x128 inputs to 32x32 before the wide
    convolutions, where most of a plain CNN's time goes; ``stem_convs`` > 1 adds 3x3
    convolutions at half resolution before that max-pool. Each stage has
    ``convs_per_stage`` 3x3 convolutions; every stage but the last ends in a max-pool.
    Global average pooling keeps the head small and tolerant of where the face sits.
    ``downsample`` > 1 average-pools the input by that factor first (then augments it): the network
    for faces of 1/downsample the side, at about 1/downsample**2 of the compute, that still
    takes and serves full-size images.
    """
    inputs = keras.Input(shape=input_shape, name="image")
    x = layers.Rescaling(1.0 / 255, dtype="float32", name="rescale")(inputs)
    if float(downsample) > 1:
        # Before the augmentation, which then costs a quarter: a training step 12-18 % cheaper.
        x = _downsample(x, float(downsample))
    if augment:
        x = augmentation(**augment)(x)

    def conv(x, width: int, kernel: int, name: str, strides: int = 1):
        x = layers.Conv2D(
            width,
            kernel,
            strides=strides,
            padding="same",
            use_bias=not batch_norm,
            kernel_initializer="he_normal",
            name=name,
        )(x)
        if batch_norm:
            x = layers.BatchNormalization(name=f"{name}_bn")(x)
        return layers.ReLU(name=f"{name}_relu")(x)

    x = conv(x, stem_filters, 5, "stem", strides=2)
    for index in range(2, stem_convs + 1):
        x = conv(x, stem_filters, 3, f"stem_conv{index}")
    x = layers.MaxPooling2D(2, name="stem_pool")(x)
    for stage, width in enumerate(filters, start=1):
        for index in range(convs_per_stage):
            x = conv(x, width, 3, f"stage{stage}_conv{index + 1}")
        if stage < len(filters):
            x = layers.MaxPooling2D(2, name=f"stage{stage}_pool")(x)
    x = layers.GlobalAveragePooling2D(name="global_pool")(x)
    x = layers.Dropout(dropout, name="features_dropout")(x)
    x = layers.Dense(dense_units, activation="relu", kernel_initializer="he_normal", name="dense")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    model = keras.Model(inputs, _heads(x, task, age_mean, age_std, loss, auxiliary), name=f"default_cnn_{task}")
    return _compile(model, task, learning_rate, loss, auxiliary, weight_decay)


ARCHITECTURES = {"seed_cnn": seed_cnn, "default_cnn": default_cnn}


def _cpu_has_bfloat16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str | None) -> str:
    """The Keras dtype policy that ``precision`` names; ``auto`` picks what this machine runs fastest.

    ``auto``: ``mixed_bfloat16`` on a GPU of compute capability 8.0 or newer and on CPUs with
    native bfloat16 instructions (AVX512-BF16 or AMX), where it is ~1.3x faster than float32;
    ``float32`` elsewhere, because emulated bfloat16 is slower than float32.
    """
    precision = precision or "float32"
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
    if precision != "auto":
        return precision
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        capability = tf.config.experimental.get_device_details(gpus[0]).get("compute_capability", (0, 0))
        return "mixed_bfloat16" if tuple(capability) >= (8, 0) else "float32"
    return "mixed_bfloat16" if _cpu_has_bfloat16() else "float32"


def build_model(
    architecture: str, input_shape: tuple[int, int, int], task: str, *, precision: str = "float32", **options: Any
) -> keras.Model:
    """The builder named by ``architecture`` (a key of ``ARCHITECTURES``), called with ``options``.

    With a mixed ``precision`` the hidden layers compute in 16 bits (variables stay float32);
    input scaling, augmentation and the output head stay float32, as in the Keras mixed
    precision guide.
    """
    if architecture not in ARCHITECTURES:
        raise ValueError(f"architecture must be one of {sorted(ARCHITECTURES)}, got {architecture!r}")
    for key in ("filters",):
        if key in options:
            options[key] = tuple(options[key])
    with _dtype_policy(resolve_precision(precision)):
        return ARCHITECTURES[architecture](tuple(input_shape), task, **options)
