"""Kedro datasets read from a model source (a file or an MLflow URI): the network, its calibration,
its embedding head."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from kedro.io.core import (
    AbstractDataset,
    DatasetError,
)


class _FromModelSource(AbstractDataset[None, Any]):
    """A read-only dataset of what was saved at (or with) a model ``source``: a ``.keras`` file, a
    Kedro versioned folder (its latest version) or an MLflow model URI."""

    def __init__(self, *, source: str, metadata: dict[str, Any] | None = None) -> None:
        self._source = str(source)
        self.metadata = metadata

    def _describe(self) -> dict[str, Any]:
        return {"source": self._source}

    def save(self, data: Any) -> None:
        raise DatasetError(f"{type(self).__name__} is read-only")


class KerasModelDataset(_FromModelSource):
    """A trained Keras model from a ``.keras`` file, a Kedro versioned folder (its latest
    version) or an MLflow model URI (``runs:/<run>/gender_model``, ``models:/face_gender/1``).
    Read-only: training saves models through ``tensorflow.TensorFlowModelDataset``.
    """

    def load(self) -> Any:
        from face_pipeline.inference.loading import load_keras_model  # noqa: PLC0415 - TensorFlow only when needed

        return load_keras_model(self._source)


class CalibrationDataset(_FromModelSource):
    """The calibration saved with the model at ``source`` (``predict.load_calibration``): the same
    path or MLflow URI a ``KerasModelDataset`` reads the model from. Read-only."""

    def load(self) -> dict[str, Any]:
        from face_pipeline.inference.loading import load_calibration  # noqa: PLC0415

        return load_calibration(self._source)


class EmbeddingHeadDataset(_FromModelSource):
    """A loader of the embedding head and combination saved with the model at ``source``
    (``predict.load_embedding_head``), for ``mode: accurate``: called only in that mode, so the
    fast mode loads nothing more. Read-only."""

    def load(self) -> Callable[[], dict[str, Any]]:
        from face_pipeline.inference.loading import load_embedding_head  # noqa: PLC0415

        return functools.partial(load_embedding_head, self._source)
