"""dlib's face-recognition ResNet as a Keras model, with the weights read from dlib's own file.

dlib's own CPU code computes a 128-D face descriptor in about 70 ms; the same network in Keras
runs batched on TensorFlow's kernels (or a GPU) and gives the same descriptors to about 1e-6.
The weights come straight from ``dlib_face_recognition_resnet_model_v1.dat``: dlib's binary
serialization is read in Python (``read_dlib_network``) and mapped onto built-in Keras layers
(``build_embedding_network``), so the model saves and loads with ``safe_mode=True``. The built
model is cached as a ``.keras`` file named after the ``.dat`` file's SHA-256.

The network (``anet_type`` of dlib's ``dnn_face_recognition_ex.cpp``): a 7x7/2 convolution and a
3x3/2 max pool, then 14 residual blocks of two 3x3 convolutions (32, 64, 128, 256 filters; the
first block of each level halves the size, its shortcut an average pool, zero-padded to the new
channel count), a global average pool and a 128-output fully-connected layer without bias.
Batch normalisation was frozen into per-channel affine layers when dlib saved the network; here
each affine layer is folded into the convolution before it.

This module must stay importable without TensorFlow: Keras is imported inside the functions.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from face_pipeline.embedding.dlib_file import (
    SUPPORTED_LAYERS,
    DlibFormatError,
    DlibLayer,
    read_dlib_network,
)

if TYPE_CHECKING:
    import keras

INPUT_SIZE = 150
DESCRIPTOR_SIZE = 128
# Bumped when the mapping onto Keras changes, so that older cached models are not reused.
CONVERTER_VERSION = 1


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def default_model_path() -> Path:
    """The ResNet file that ships with the ``face_recognition_models`` package."""
    import face_recognition_models  # noqa: PLC0415 - an optional package

    return Path(face_recognition_models.face_recognition_model_location())


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "face_pipeline"


def build_embedding_network(
    path: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None
) -> keras.Model:
    """dlib's face-descriptor network as a Keras model: (None, 150, 150, 3) RGB -> (None, 128) float32.

    The input is a batch of dlib face chips (``dlib.get_face_chip(..., size=150)``), pixel values
    0-255 as float32 (uint8 arrays work with ``predict``); the output is dlib's descriptor, not
    normalised. ``path`` defaults to the file from ``face_recognition_models``; the converted
    model is cached in ``cache_dir`` (default ``~/.cache/face_pipeline``) under the file's hash.
    """
    import keras  # noqa: PLC0415 - keeps this module free of TensorFlow at import

    path = Path(path) if path is not None else default_model_path()
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cached = cache_dir / f"{path.stem}-{_file_sha256(path)[:16]}-v{CONVERTER_VERSION}.keras"
    if cached.exists():
        return keras.saving.load_model(cached, safe_mode=True, compile=False)
    model = embedding_network_from_layers(read_dlib_network(path))
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = cached.with_name(f"{cached.stem}.{os.getpid()}.partial.keras")
    model.save(partial)
    partial.replace(cached)  # atomic: a concurrent reader sees the whole file or none
    return model


def embedding_network_from_layers(layers: list[DlibLayer]) -> keras.Model:
    """The Keras model of dlib's ResNet from ``read_dlib_network``'s layers (no caching).

    The flat list is walked with the network's definition in mind: ``con, affine, relu`` and
    ``con, affine`` make a block; an ``avg_pool`` straight after a block is its shortcut from the
    block's input (``residual_down``), and ``add_prev`` adds the shortcut (or the block's input)
    to the block's output, zero-padding the smaller one (channels, then rows and columns at the
    bottom and right) as dlib does.
    """
    import keras  # noqa: PLC0415

    unsupported = {layer.kind for layer in layers[:-1]} - SUPPORTED_LAYERS
    if unsupported or layers[0].kind != "input_rgb_image_sized":
        raise DlibFormatError(f"not the face-recognition ResNet: layers {sorted(unsupported)}")
    source = layers[0].settings
    inputs = keras.Input((source["rows"], source["columns"], 3), dtype="float32", name="rgb_chip")
    # dlib: (pixel - average) / 256. x / 256 and average / 256 are exact, so this rounds the same.
    offsets = [float(-value / np.float32(256)) for value in np.asarray(source["average_rgb"], np.float32)]
    graph = _Graph(keras, keras.layers.Rescaling(1 / 256, offsets, name="dlib_input")(inputs))
    body, index = layers[1:-1], 0
    while index < len(body):
        if body[index].kind == "con":
            index += graph.convolution(body[index : index + 3])
        else:
            graph.add(body[index], body[index - 1].kind if index else "")
            index += 1
    return keras.Model(inputs, graph.x, name="dlib_face_recognition_resnet")


class _Graph:
    """The Keras graph under construction: the current tensor, and the residual block's input."""

    def __init__(self, keras: Any, x: Any) -> None:
        self.keras, self.x = keras, x
        self.block_input = x  # dlib's tag1: the input of the current residual block
        self.shortcut: Any = None  # the block's input average-pooled, where the block halves the size
        self.counts = {"con": 0, "pool": 0, "add": 0}

    def convolution(self, layers: list[DlibLayer]) -> int:
        """con, with the affine after it folded in and a relu after that as its activation; layers used."""
        kinds = [layer.kind for layer in layers]
        affine = layers[1] if kinds[1:2] == ["affine"] else None
        relu = affine is not None and kinds[2:3] == ["relu"]
        self.x = _convolution(self.keras, self.x, layers[0], affine, relu, f"conv{self.counts['con']}")
        self.counts["con"] += 1
        return 1 + (affine is not None) + relu

    def add(self, layer: DlibLayer, previous: str) -> None:
        keras, settings = self.keras, layer.settings
        if layer.kind == "relu":
            self.x = keras.layers.ReLU(name=f"relu{self.counts['add']}")(self.x)
            if previous == "add_prev":
                self.block_input = self.x
        elif layer.kind == "max_pool":
            self.x = _pool(keras, self.x, layer, keras.layers.MaxPooling2D, f"max_pool{self.counts['pool']}")
            self.block_input = self.x
            self.counts["pool"] += 1
        elif layer.kind == "avg_pool" and settings["rows"] == settings["columns"] == 0:
            self.x = keras.layers.GlobalAveragePooling2D(name="average_everything")(self.x)
        elif layer.kind == "avg_pool":
            name = f"avg_pool{self.counts['pool']}"
            self.shortcut = _pool(keras, self.block_input, layer, keras.layers.AveragePooling2D, name)
            self.counts["pool"] += 1
        elif layer.kind == "add_prev":
            other = self.shortcut if self.shortcut is not None else self.block_input
            padded = _zero_pad_to_match(keras, self.x, other, self.counts["add"])
            self.x = keras.layers.Add(name=f"add{self.counts['add']}")(padded)
            self.shortcut = None
            self.counts["add"] += 1
        elif layer.kind == "fc":
            if len(self.x.shape) != 2:
                raise DlibFormatError("fc on an unpooled tensor is not supported (dlib flattens NCHW)")
            bias = "biases" in layer.weights
            dense = keras.layers.Dense(settings["outputs"], use_bias=bias, name="descriptor")
            self.x = dense(self.x)
            dense.set_weights([layer.weights["weights"], *([layer.weights["biases"]] if bias else [])])
        else:  # an affine on its own: not in this network
            raise DlibFormatError(f"unexpected {layer.kind} after {previous}")


def _convolution(keras: Any, x: Any, con: DlibLayer, affine: DlibLayer | None, relu: bool, name: str) -> Any:
    """dlib's con (+ affine folded into its weights) (+ relu as its activation)."""
    settings = con.settings
    filters = con.weights["filters"].astype(np.float64)  # (filters, channels, rows, columns)
    biases = con.weights.get("biases", np.zeros(settings["filters"], np.float32)).astype(np.float64)
    if affine is not None:
        if affine.settings["mode"] != 0:
            raise DlibFormatError("only per-channel affine layers (after a convolution) are supported")
        gamma = affine.weights["gamma"].astype(np.float64)
        filters = filters * gamma[:, None, None, None]
        biases = biases * gamma + affine.weights["beta"]
    kernel = (settings["rows"], settings["columns"])
    strides = (settings["stride_y"], settings["stride_x"])
    padding = (settings["padding_y"], settings["padding_x"])
    if strides == (1, 1) and padding == (kernel[0] // 2, kernel[1] // 2) and kernel[0] % 2 and kernel[1] % 2:
        mode = "same"  # symmetric padding by half the kernel, as dlib pads
    else:
        if padding != (0, 0):
            x = keras.layers.ZeroPadding2D(padding, name=f"{name}_pad")(x)
        mode = "valid"
    layer = keras.layers.Conv2D(
        settings["filters"], kernel, strides, mode, activation="relu" if relu else None, name=name
    )
    x = layer(x)
    layer.set_weights([filters.transpose(2, 3, 1, 0).astype(np.float32), biases.astype(np.float32)])
    return x


def _pool(keras: Any, x: Any, pool: DlibLayer, layer_class: Any, name: str) -> Any:
    settings = pool.settings
    if (settings["padding_y"], settings["padding_x"]) != (0, 0):
        raise DlibFormatError("padded pooling is not supported")  # dlib leaves padding out of averages
    size, strides = (settings["rows"], settings["columns"]), (settings["stride_y"], settings["stride_x"])
    return layer_class(size, strides, "valid", name=name)(x)


def _zero_pad_to_match(keras: Any, first: Any, second: Any, index: int) -> list[Any]:
    """Both tensors zero-padded to the larger rows, columns and channels (dlib's add_prev)."""
    target = [max(a, b) for a, b in zip(first.shape[1:], second.shape[1:], strict=True)]
    padded = []
    for which, original in enumerate((first, second)):
        tensor, (rows, columns, channels) = original, original.shape[1:]
        if channels < target[2]:  # pad the channel axis as the third axis of a 3-D volume
            tensor = keras.layers.Reshape((rows, columns, channels, 1), name=f"add{index}_{which}_volume")(tensor)
            pad = ((0, 0), (0, 0), (0, target[2] - channels))
            tensor = keras.layers.ZeroPadding3D(pad, name=f"add{index}_{which}_channels")(tensor)
            tensor = keras.layers.Reshape((rows, columns, target[2]), name=f"add{index}_{which}_image")(tensor)
        if (rows, columns) != tuple(target[:2]):
            pad = ((0, target[0] - rows), (0, target[1] - columns))
            tensor = keras.layers.ZeroPadding2D(pad, name=f"add{index}_{which}_pad")(tensor)
        padded.append(tensor)
    return padded


def unit_embedding_network(path: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None):
    """``build_embedding_network`` with each descriptor scaled to unit length: what the embedding heads take."""
    import keras  # noqa: PLC0415

    network = build_embedding_network(path, cache_dir)
    embedding = keras.layers.UnitNormalization(name="embedding")(network.outputs[0])
    return keras.Model(network.inputs, embedding, name="face_embedding")
