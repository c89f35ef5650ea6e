"""dlib's network file read in Python: the layers of a ``.dat`` (tensors as raw float32), checked."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# Names of layer records (without their "_<version>" suffix) that the builder maps onto Keras.
SUPPORTED_LAYERS = {"input_rgb_image_sized", "con", "affine", "relu", "max_pool", "avg_pool", "add_prev", "fc"}


class DlibFormatError(ValueError):
    """The file is not a dlib network of the kind this module reads."""


@dataclass
class DlibLayer:
    """One layer of a dlib network as stored in its file: the record's name and its settings and weights.

    ``kind`` is the record's name without its version suffix (``"con"`` for ``con_4``); ``weights``
    holds numpy arrays in dlib's own layout (convolution filters as (filters, channels, rows,
    columns), fully-connected weights as (inputs, outputs)).
    """

    kind: str
    settings: dict[str, Any] = field(default_factory=dict)
    weights: dict[str, np.ndarray] = field(default_factory=dict)


class _Reader:
    """dlib's serialization primitives (dlib/serialize.h, dlib/cuda/tensor.h) over a byte string."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.position = 0

    def at_end(self) -> bool:
        return self.position >= len(self.data)

    def _take(self, count: int) -> bytes:
        end = self.position + count
        if end > len(self.data):
            raise DlibFormatError(f"file ends inside a record at byte {self.position}")
        chunk = self.data[self.position : end]
        self.position = end
        return chunk

    def integer(self) -> int:
        """A control byte (bit 7: negative, low 4 bits: byte count) then the magnitude, little-endian."""
        control = self._take(1)[0]
        size = control & 0x0F
        if control & 0x70 or not 1 <= size <= 8:
            raise DlibFormatError(f"bad integer control byte {control:#x} at byte {self.position - 1}")
        value = int.from_bytes(self._take(size), "little")
        return -value if control & 0x80 else value

    def real(self) -> float:
        """A float as dlib's float_details: mantissa * 2**exponent, both as integers."""
        mantissa, exponent = self.integer(), self.integer()
        special = {32000: np.inf, 32001: -np.inf, 32002: np.nan}
        if exponent in special:
            return float(special[exponent])
        return float(np.float32(np.ldexp(float(mantissa), exponent)))

    def string(self) -> str:
        return self._take(self.integer()).decode("ascii")

    def boolean(self) -> bool:
        char = self._take(1)
        if char not in (b"0", b"1"):
            raise DlibFormatError(f"bad bool {char!r} at byte {self.position - 1}")
        return char == b"1"

    def tensor(self) -> np.ndarray:
        """A resizable_tensor: version 2, its four dimensions (NCHW), then raw little-endian float32."""
        if (version := self.integer()) != 2:
            raise DlibFormatError(f"unknown tensor version {version} at byte {self.position}")
        shape = tuple(self.integer() for _ in range(4))
        count = int(np.prod(shape))
        return np.frombuffer(self._take(4 * count), "<f4").reshape(shape).astype(np.float32)

    def alias_tensor(self) -> tuple[int, int, int, int]:
        if (version := self.integer()) != 1:
            raise DlibFormatError(f"unknown alias_tensor version {version} at byte {self.position}")
        return tuple(self.integer() for _ in range(4))  # type: ignore[return-value]

    def startswith_string(self, text: str) -> bool:
        encoded = text.encode("ascii")
        size = len(encoded).to_bytes(max(1, (len(encoded).bit_length() + 7) // 8), "little")
        return self.data.startswith(bytes([len(size)]) + size + encoded, self.position)


TRAINING_HINTS = ("learning_rate", "weight_decay", "bias_learning_rate", "bias_weight_decay")


def _read_con(reader: _Reader, name: str) -> DlibLayer:
    if name not in ("con_4", "con_5", "con_6"):
        raise DlibFormatError(f"unsupported convolution record {name}")
    params = reader.tensor().ravel()
    settings: dict[str, Any] = {key: reader.integer() for key in ("filters", "rows", "columns", "stride_y", "stride_x")}
    settings |= {"padding_y": reader.integer(), "padding_x": reader.integer()}
    filters_shape, biases_shape = reader.alias_tensor(), reader.alias_tensor()
    settings |= {key: reader.real() for key in TRAINING_HINTS}
    settings["use_bias"] = reader.boolean() if name in ("con_5", "con_6") else True
    if name == "con_6":
        settings["use_relu"] = reader.boolean()
    filters_size = int(np.prod(filters_shape))
    weights = {"filters": params[:filters_size].reshape(filters_shape)}
    if settings["use_bias"]:
        weights["biases"] = params[filters_size : filters_size + int(np.prod(biases_shape))]
    return DlibLayer("con", settings, weights)


def _read_affine(reader: _Reader, name: str) -> DlibLayer:
    if name.startswith("bn_"):
        raise DlibFormatError(f"the file holds a network in training form ({name}); save it with affine layers")
    params = reader.tensor().ravel()
    gamma_size = int(np.prod(reader.alias_tensor()))
    beta_size = int(np.prod(reader.alias_tensor()))
    settings: dict[str, Any] = {"mode": reader.integer()}  # 0: per channel, 1: per value
    if name == "affine_2":
        settings["disabled"] = reader.boolean()
    weights = {"gamma": params[:gamma_size], "beta": params[gamma_size : gamma_size + beta_size]}
    return DlibLayer("affine", settings, weights)


def _read_fc(reader: _Reader, name: str) -> DlibLayer:
    settings: dict[str, Any] = {"outputs": reader.integer(), "inputs": reader.integer()}
    params = reader.tensor().ravel()
    weights_size, biases_size = int(np.prod(reader.alias_tensor())), int(np.prod(reader.alias_tensor()))
    settings["bias_mode"] = reader.integer()  # 0: with bias, 1: without
    settings |= {key: reader.real() for key in TRAINING_HINTS}
    if name == "fc_3":
        settings["use_bias"] = reader.boolean()
    weights = {"weights": params[:weights_size].reshape(settings["inputs"], settings["outputs"])}
    if settings["bias_mode"] == 0 and settings.get("use_bias", True):
        weights["biases"] = params[weights_size : weights_size + biases_size]
    return DlibLayer("fc", settings, weights)


def _read_pool(reader: _Reader, name: str) -> DlibLayer:
    keys = ("rows", "columns", "stride_y", "stride_x", "padding_y", "padding_x")
    return DlibLayer(name.removesuffix("_2"), {key: reader.integer() for key in keys})


def _read_relu(reader: _Reader, name: str) -> DlibLayer:
    return DlibLayer("relu", {"disabled": reader.boolean()} if name == "relu_2" else {})


_LAYER_READERS = {
    "con": _read_con,
    "affine": _read_affine,
    "bn_con": _read_affine,
    "bn_fc": _read_affine,
    "fc": _read_fc,
    "max_pool": _read_pool,
    "avg_pool": _read_pool,
    "relu": _read_relu,
    "add_prev": lambda _reader, _name: DlibLayer("add_prev"),
}


def _read_layer_details(reader: _Reader) -> DlibLayer:
    """One layer's own record (dlib/dnn/layers.h), after its add_layer wrapper's header."""
    name = reader.string()
    read = _LAYER_READERS.get(name.rstrip("0123456789").rstrip("_"))
    if read is None:
        raise DlibFormatError(f"unsupported layer record {name!r} at byte {reader.position}")
    return read(reader, name)


def read_dlib_network(path: str | os.PathLike) -> list[DlibLayer]:
    """The layers of a dlib ``loss_metric`` network file, input first, loss last.

    dlib writes a network outside-in: every wrapper's version number first (add_layer 2, the one
    on the input 2 or 3, tag and skip layers 1), then the input layer, then each layer's record
    followed by its wrapper's state (flags and tensors kept for training, skipped here).
    Tags and skips leave nothing else in the file: which layers they connect follows from the
    network's definition (see ``build_embedding_network``).
    """
    reader = _Reader(Path(path).read_bytes())
    if reader.integer() != 1 or not reader.string().startswith("loss_metric"):
        raise DlibFormatError(f"{path} does not start with a loss_metric network")
    loss = DlibLayer("loss_metric", {"margin": reader.real(), "distance_threshold": reader.real()})
    versions = []
    while not reader.startswith_string("input_rgb_image_sized"):
        versions.append(reader.integer())
        if reader.at_end() or len(versions) > 10_000:
            raise DlibFormatError(f"{path}: no input_rgb_image_sized layer found")
    layer_versions = [version for version in versions if version >= 2]
    reader.string()
    average = [reader.real() for _ in range(3)]
    size = (reader.integer(), reader.integer())
    layers = [DlibLayer("input_rgb_image_sized", {"average_rgb": average, "rows": size[0], "columns": size[1]})]
    for index, version in enumerate(reversed(layer_versions)):
        layers.append(_read_layer_details(reader))
        for _ in range(3):  # setup called, gradient stale, output and gradient disabled
            reader.boolean()
        reader.tensor()  # x_grad
        reader.tensor()  # cached_output
        if index == 0:  # the add_layer on the input: grad_final, then (version 3) the sample expansion
            reader.tensor()
            if version >= 3:
                reader.integer()
        elif version >= 2:
            reader.tensor()  # params_grad
    if not reader.at_end():
        raise DlibFormatError(f"{path}: {len(reader.data) - reader.position} bytes left after the last layer")
    return [*layers, loss]
