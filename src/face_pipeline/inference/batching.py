"""Networks run on many faces: in batches, with the batch norms folded into the convolutions."""

from __future__ import annotations

import logging
import sys
from typing import Any

import numpy as np

from face_pipeline.scoring.answers import served_output

logger = logging.getLogger(__name__)


def network_outputs(model, images: np.ndarray, batch_size: int = 256) -> dict[str, np.ndarray]:
    """Every output of ``model`` per image, by name, ``images`` fed ``batch_size`` at a time (works on memmaps).

    An output of one value per image is an ``(N,)`` array, one of several (a distribution over
    ages) ``(N, k)``. A model with a single output (not a dict) gives it under the name ``""``.

    A shorter batch is padded to the next power of two: Keras traces its predict function anew
    for every batch shape it has not seen, which costs far more than the padding (faces come in
    batches of any size: one per request, or however many a chunk of photos held).
    """
    batches: dict[str, list[np.ndarray]] = {}
    # A network that traces nothing per batch shape (dlib's embedder) says so: padding would only cost it.
    padded = getattr(model, "pad_batches", True)
    for start in range(0, len(images), batch_size):
        batch = np.asarray(images[start : start + batch_size])
        shape = min(batch_size, 1 << (len(batch) - 1).bit_length()) if padded else len(batch)
        if shape > len(batch):
            batch = np.concatenate([batch, np.zeros((shape - len(batch), *batch.shape[1:]), batch.dtype)])
        output = model.predict_on_batch(batch)
        for name, batch_values in (output if isinstance(output, dict) else {"": output}).items():
            values = np.asarray(batch_values).reshape(shape, -1)[: len(images) - start]
            batches.setdefault(name, []).append(values[:, 0] if values.shape[1] == 1 else values)
    if not batches:
        return {"": np.empty(0, dtype=np.float32)}
    return {name: np.concatenate(values) for name, values in batches.items()}


def predict_in_batches(model, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """The served output of ``model`` per image (``network_outputs`` without the distributions)."""
    return served_output(network_outputs(model, images, batch_size))


def is_keras_model(model: Any) -> bool:
    if "keras" not in sys.modules:  # not imported: cannot be a Keras model
        return False
    import keras  # noqa: PLC0415

    return isinstance(model, keras.Model)


def fast_inference_model(model: Any) -> Any:
    """``model`` with its batch norms folded into its convolutions (``folding.fold_batch_norm``) when
    that gives the same outputs (within 1e-3) on a probe batch; otherwise ``model`` itself.

    Anything that is not a Keras model (a stand-in in tests) is returned as it is.
    """
    if not is_keras_model(model):
        return model
    import keras  # noqa: PLC0415

    from face_pipeline.modelling.folding import fold_batch_norm  # noqa: PLC0415 - TensorFlow, only with a Keras model

    probe = np.random.default_rng(0).integers(0, 256, (4, *model.input_shape[1:])).astype(np.float32)
    try:
        folded = fold_batch_norm(model)
        # Called directly (eagerly): predict_on_batch would trace a function for the probe's batch
        # size. A tensor, not an array: Keras warns about the input structure of an array.
        tensor = keras.ops.convert_to_tensor(probe)
        # Every output side by side (the age network also answers its distribution).
        outputs = [
            np.concatenate([keras.ops.convert_to_numpy(values).reshape(len(probe), -1) for values in flat], axis=1)
            for flat in (keras.tree.flatten(network(tensor, training=False)) for network in (folded, model))
        ]
        difference = np.abs(outputs[0] - outputs[1])
    except Exception as exc:  # noqa: BLE001 - an unusual model still predicts, unfolded
        logger.warning("Model %s runs unfolded: %s: %s", model.name, type(exc).__name__, exc)
        return model
    if difference.max() > 1e-3:
        logger.warning("Model %s runs unfolded: folding changed its outputs by %.2g", model.name, difference.max())
        return model
    return folded
