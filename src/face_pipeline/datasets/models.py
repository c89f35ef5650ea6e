"""Kedro datasets read from a model source (a file or an MLflow URI): the network, its calibration,
its embedding head."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, ClassVar

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


class TaskModelsDataset(AbstractDataset[None, dict[str, Any]]):
    """For every task (``face_pipeline.tasks``), what was saved with its network, by task: the
    network (``kind: model``), its calibration (``calibration``) or a loader of its embedding head
    (``head``, called only in ``mode: accurate``).

    Each task's source is ``sources[task]`` where given (e.g. ``--params
    predict.models.age=runs:/<run id>/age_model``: a ``.keras`` file, a Kedro versioned folder or
    an MLflow URI), else the latest saved version, ``<folder>/<task>_model.keras`` (``folder``:
    ``data/06_models`` unless given; ``inference.loading.model_sources``). Read-only.
    """

    READERS: ClassVar[dict[str, type[_FromModelSource]]] = {
        "model": KerasModelDataset,
        "calibration": CalibrationDataset,
        "head": EmbeddingHeadDataset,
    }

    def __init__(
        self,
        *,
        kind: str,
        sources: dict[str, str] | None = None,
        folder: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        if kind not in self.READERS:
            raise DatasetError(f"TaskModelsDataset: kind must be one of {sorted(self.READERS)}, got {kind!r}")
        self._kind, self._sources, self._folder = kind, dict(sources or {}), folder
        self.metadata = metadata

    def _describe(self) -> dict[str, Any]:
        return {"kind": self._kind, "sources": self._sources, "folder": self._folder}

    def sources(self) -> dict[str, str]:
        """Each task's model source."""
        from face_pipeline.inference.loading import MODELS_FOLDER, model_sources  # noqa: PLC0415
        from face_pipeline.tasks import TASKS  # noqa: PLC0415

        return model_sources(TASKS, self._sources, folder=self._folder or MODELS_FOLDER)

    def load(self) -> dict[str, Any]:
        read = self.READERS[self._kind]
        return {task: read(source=source).load() for task, source in self.sources().items()}

    def save(self, data: Any) -> None:
        raise DatasetError("TaskModelsDataset is read-only")
