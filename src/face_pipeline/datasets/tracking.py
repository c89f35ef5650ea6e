"""A Kedro dataset of MLflow run parameters, read back and logged once."""

from __future__ import annotations

import json
from pathlib import PurePosixPath
from typing import Any

import fsspec
from kedro.io.core import (
    AbstractDataset,
    get_filepath_str,
    get_protocol_and_path,
)


class MlflowParamsDataset(AbstractDataset[dict[str, Any], dict[str, Any]]):
    """A dict saved as a JSON file and, in an active MLflow run, logged as that run's params.

    For what a node decides at run time (the epochs a time budget planned, the precision
    ``auto`` resolved to): params sit beside the configured ones in the MLflow UI, so two runs
    with equal parameters that trained different networks tell apart. Keys become
    ``<prefix>.<key>``; values longer than MLflow's limit are cut. With ``log_artifact`` the
    file is also logged as an artifact of the run, under its own name (what ``runs:/`` URIs read
    back with its types intact).

    Example::

        "{task}.training_decisions":
          type: face_pipeline.datasets.folders.MlflowParamsDataset
          filepath: data/08_reporting/{task}_training_decisions.json
          prefix: "{task}.decided"
    """

    def __init__(
        self,
        *,
        filepath: str,
        prefix: str = "",
        log_artifact: bool = False,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        protocol, path = get_protocol_and_path(filepath)
        self._protocol = protocol
        self._fs = fsspec.filesystem(protocol)
        self._filepath = PurePosixPath(path)
        self._prefix = prefix
        self._log_artifact = log_artifact
        self.metadata = metadata

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "prefix": self._prefix}

    def _path(self) -> str:
        return get_filepath_str(self._filepath, self._protocol)

    def load(self) -> dict[str, Any]:
        with self._fs.open(self._path(), "r") as file:
            return json.load(file)

    def save(self, data: dict[str, Any]) -> None:
        import mlflow  # noqa: PLC0415 - only where a run logs

        path = self._path()
        self._fs.mkdirs(str(PurePosixPath(path).parent), exist_ok=True)
        with self._fs.open(path, "w") as file:
            json.dump(data, file, indent=2, default=str)
        if mlflow.active_run() is not None:
            prefix = f"{self._prefix}." if self._prefix else ""
            mlflow.log_params({f"{prefix}{key}": str(value)[:6000] for key, value in data.items()})
            if self._log_artifact:
                mlflow.log_dict(data, self._filepath.name)

    def _exists(self) -> bool:
        return self._fs.exists(self._path())
