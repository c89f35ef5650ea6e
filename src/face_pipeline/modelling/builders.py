"""Keras model builders: each returns an uncompiled ``keras.Model`` from a few named parameters.

``compile_model`` compiles one for its task (the one place that picks optimizer, loss and metrics).

Every model takes ``uint8``-valued images of shape ``(size, size, channels)`` and scales them to
[0, 1] itself (a ``Rescaling`` layer), so nothing outside the model needs to know how. Data
augmentation layers sit inside the model too: they act during ``fit`` only.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np
from keras import layers

from face_pipeline.config import check_keys, require_choice
from face_pipeline.modelling.precision import _dtype_policy, resolve_precision
from face_pipeline.tasks import get_task


def _mirror(images):
    """Images flipped left-right, with built-in layers only (so saved models need no custom code)."""
    width = images.shape[2]
    reverse = np.eye(width, dtype="float32")[::-1]
    columns_last = layers.Permute((1, 3, 2), name="columns_last")(images)
    flipped = layers.Dense(
        width, use_bias=False, trainable=False, kernel_initializer=keras.initializers.Constant(reverse), name="mirror"
    )(columns_last)
    return layers.Permute((1, 3, 2), name="mirrored")(flipped)


def compile_model(
    model: keras.Model, task: str, learning_rate: float | keras.optimizers.schedules.LearningRateSchedule, loss=None
) -> keras.Model:
    """``model`` compiled for ``task``: Adam at ``learning_rate``, the task's loss named ``loss``
    (None: its default) and its metrics, on the served output only."""
    spec = get_task(task)
    losses = spec.loss(loss)
    if isinstance(model.output, dict):
        # A served model's extra outputs (its distribution) get no loss: they are only predicted.
        losses = losses if isinstance(losses, dict) else {task: losses, **dict.fromkeys(set(model.output) - {task})}
        missing = set(losses) ^ set(model.output)
        if missing:
            raise ValueError(f"loss {loss!r} does not fit the outputs {sorted(model.output)} of {model.name}")
        metrics = {task: spec.metrics()}
    else:
        if isinstance(losses, dict):
            raise ValueError(f"loss {loss!r} needs the outputs {sorted(losses)}; {model.name} has one")
        metrics = spec.metrics()
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=losses, metrics=metrics)
    model.optimizer.build(model.trainable_variables)  # a model saved before training loads without warnings
    return model


def inference_model(model: keras.Model, task: str, mirror_average: bool = False) -> keras.Model:
    """The model to save and serve (a new one compiled with the task's default loss and metrics).

    Its outputs are the task's served output and, where the network predicts one, the
    distribution it is the expectation of (``<task>_distribution``, the age bins of the
    "distribution" loss): the prediction's range comes from it. Other training-only outputs are
    dropped. With ``mirror_average`` the model predicts each face and its mirror image and
    returns the mean of the two, which evens out left/right quirks of one photo for twice the
    compute. The saved model loads without this package.
    """
    if len(model.outputs) == 1 and not mirror_average:
        return model
    kept = [name for name in (task, f"{task}_distribution") if name in model.output_names]
    # An uncompiled view of the trained layers: a compiled model nested inside would be saved
    # with an optimizer of its own.
    outputs = {name: model.get_layer(name).output for name in kept}
    trained = keras.Model(model.inputs, outputs if len(kept) > 1 else outputs[task], name=model.name)
    inputs = keras.Input(shape=model.input_shape[1:], name="image")
    outputs = trained(inputs)
    if mirror_average:
        mirrored = trained(_mirror(inputs))
        if isinstance(outputs, dict):
            outputs = {name: layers.Average(name=name)([outputs[name], mirrored[name]]) for name in kept}
        else:
            outputs = layers.Average(name=task)([outputs, mirrored])
    elif isinstance(outputs, dict):  # named after the task's outputs, as the trained network's are
        outputs = {name: layers.Identity(name=name)(outputs[name]) for name in kept}
    return compile_model(keras.Model(inputs, outputs, name=model.name), task, 1e-3)


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
    loss: str | None = None,
    label_stats: dict[str, float] | None = None,
    augment: dict | None = None,
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
    return keras.Model(inputs, _head(x, task, loss, label_stats), name=f"seed_cnn_{task}")


def _head(features, task: str, loss: str | None, label_stats: dict[str, float] | None):
    """The task's output layer(s) on ``features``; ``label_stats`` as the task's ``label_stats`` gives them."""
    spec = get_task(task)
    spec.loss(loss)  # an unknown loss fails here, before any training
    return spec.head(features, loss, **(label_stats or {}))


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
    loss: str | None = None,
    label_stats: dict[str, float] | None = None,
    augment: dict | None = None,
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
    return keras.Model(inputs, _head(x, task, loss, label_stats), name=f"default_cnn_{task}")


ARCHITECTURES = {"seed_cnn": seed_cnn, "default_cnn": default_cnn}


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


def _keyword_options(function) -> list[str]:
    """The named options of a builder or of ``augmentation``: its keyword-only arguments."""
    parameters = inspect.signature(function).parameters.values()
    return [
        p.name for p in parameters if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is not p.empty
    ]


# Options every builder takes that do not come from its own block: set by training.
_SHARED_OPTIONS = {"loss", "label_stats", "augment"}


@dataclass(frozen=True)
class ModelSettings:
    """A task's ``model`` block: which builder, its options, the loss, augmentation, mirror averaging.

    ``builders`` holds each architecture's block (``default_cnn: {...}``), all checked against
    their builder's arguments, so a misspelt key in a block not chosen fails too.
    """

    architecture: str
    loss: str | None = None
    mirror_average: bool = False
    augment: Mapping[str, Any] | None = None
    builders: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    @classmethod
    def from_params(cls, params: Mapping[str, Any], block: str) -> ModelSettings:
        fields = {"architecture", "loss", "mirror_average", "augment"}
        values = check_keys(params, fields | set(ARCHITECTURES), block)
        builders = {name: dict(values.pop(name) or {}) for name in list(values) if name in ARCHITECTURES}
        require_choice(values.get("architecture"), sorted(ARCHITECTURES), f"{block}.architecture")
        for name, options in builders.items():
            check_keys(options, set(_keyword_options(ARCHITECTURES[name])) - _SHARED_OPTIONS, f"{block}.{name}")
        augment = values.get("augment")
        if augment:
            check_keys(augment, set(_keyword_options(augmentation)) - {"seed"}, f"{block}.augment")
        return cls(**values, builders=builders)

    def builder_options(self) -> dict[str, Any]:
        """The chosen architecture's block, lists as tuples."""
        options = dict(self.builders.get(self.architecture) or {})
        return {key: tuple(value) if isinstance(value, list) else value for key, value in options.items()}
