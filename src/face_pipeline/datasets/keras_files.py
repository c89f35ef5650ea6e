"""A Keras model file dataset that never leaves a half-written model where a finished one belongs.

Separate from ``datasets`` because it imports TensorFlow (kedro-datasets' base class does).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import tensorflow as tf
from kedro.io.core import get_filepath_str
from kedro_datasets.tensorflow import TensorFlowModelDataset

from face_pipeline.ops.files import written_atomically


class AtomicTensorFlowModelDataset(TensorFlowModelDataset):
    """``tensorflow.TensorFlowModelDataset`` whose saves are written under a temporary name, then
    renamed: a run killed while copying the model leaves no version folder holding a truncated file
    (Kedro and ``load_keras_model`` take the latest version folder that has the model file)."""

    def save(self, data: tf.keras.Model) -> None:
        save_path = get_filepath_str(self._get_save_path(), self._protocol)
        suffix = ".h5" if self._is_h5 else ".keras"
        with tempfile.TemporaryDirectory(prefix=self._tmp_prefix) as folder:
            local = str(Path(folder) / f"model{suffix}")
            tf.keras.models.save_model(data, local, **self._save_args)
            with written_atomically(self._fs, save_path) as partial:
                self._fs.put(local, partial)
