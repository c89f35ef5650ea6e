"""Project hooks: check the MLflow store before a run, tag each run with the code and data it used."""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from kedro.config import MissingConfigException
from kedro.framework.hooks import hook_impl

from face_pipeline.config import ConfigError, check_keys
from face_pipeline.embedding.descriptor import EmbeddingSettings
from face_pipeline.ops.tracking import (
    check_tracking_store,
    git_commit,
)
from face_pipeline.parameters import (
    EvaluationSettings,
    IngestionSettings,
    ModelCardSettings,
    PredictSettings,
    PreprocessingSettings,
    RegistrySettings,
    RunSettings,
    profile_name,
)

logger = logging.getLogger(__name__)

MANIFEST = "face_manifest"


def manifest_hash(manifest: pd.DataFrame) -> str:
    """A fingerprint of the data: which images, their bytes' SHA-1, labels and split."""
    return hashlib.sha1(pd.util.hash_pandas_object(manifest, index=False).to_numpy().tobytes()).hexdigest()


def run_name(run_params: dict[str, Any], parameters: dict[str, Any]) -> str:
    """What a run did, as the MLflow UI lists it: ``pipeline · profile · environment``."""
    pipelines = run_params.get("pipeline_names") or [run_params.get("pipeline_name") or "__default__"]
    return " · ".join([",".join(pipelines), profile_name(parameters), run_params.get("env") or "local"])


class MlflowTagsHook:
    """Names the run kedro-mlflow opened after what it did (``run_name``) and adds the tags
    ``profile``, ``git_commit`` and ``data.manifest_sha1``, and the metric ``run_minutes``."""

    def __init__(self) -> None:
        self._started: float | None = None

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline, catalog) -> None:
        if mlflow.active_run() is None:
            return
        self._started = time.monotonic()
        parameters = catalog.load("parameters") if "parameters" in catalog else {}
        mlflow.set_tags({"mlflow.runName": run_name(run_params, parameters), "profile": profile_name(parameters)})
        commit = git_commit(Path(run_params.get("project_path") or Path.cwd()))
        if commit:
            mlflow.set_tag("git_commit", commit)
        if MANIFEST in catalog and catalog.exists(MANIFEST) and MANIFEST not in pipeline.all_outputs():
            self._tag_manifest(catalog.load(MANIFEST))

    @hook_impl(tryfirst=True)  # before kedro-mlflow's, which ends the run
    def after_pipeline_run(self, run_params: dict[str, Any], run_result: Any, pipeline, catalog) -> None:
        if mlflow.active_run() is not None and self._started is not None:
            mlflow.log_metric("run_minutes", (time.monotonic() - self._started) / 60)

    @hook_impl
    def after_dataset_saved(self, dataset_name: str, data: Any) -> None:
        if dataset_name == MANIFEST:
            self._tag_manifest(data)

    @staticmethod
    def _tag_manifest(manifest: pd.DataFrame) -> None:
        if mlflow.active_run() is not None:
            mlflow.set_tags({"data.manifest_sha1": manifest_hash(manifest), "data.images": len(manifest)})


class RunNoteHook:
    """Says ``run.note`` (e.g. the quick profile's "a first look") in the log at the start and the end
    of a run, where it cannot be missed among the stages' lines."""

    def __init__(self) -> None:
        self._said: str | None = None

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline, catalog) -> None:
        parameters = catalog.load("parameters") if "parameters" in catalog else {}
        note = (parameters.get("run") or {}).get("note")
        self._said = f"Profile {profile_name(parameters)}: {note}" if note else None
        if self._said:
            logger.warning(self._said)

    @hook_impl
    def after_pipeline_run(self, run_params: dict[str, Any], run_result: Any, pipeline, catalog) -> None:
        if self._said:
            logger.warning("%s (end of the run)", self._said)


class TrackingStoreCheck:
    """Fails a run at once, with one clear message, when its MLflow store cannot be used."""

    @hook_impl(tryfirst=True)  # before kedro-mlflow's hook, which contacts the store
    def after_context_created(self, context) -> None:
        # Read as kedro-mlflow reads it: conf/<env>/mlflow.yml, server.mlflow_tracking_uri.
        patterns = context.config_loader.config_patterns
        patterns.setdefault("mlflow", ["mlflow*", "mlflow*/**", "**/mlflow*"])
        try:
            uri = context.config_loader["mlflow"]["server"]["mlflow_tracking_uri"]
        except (KeyError, TypeError, MissingConfigException):
            return  # kedro-mlflow's defaults: a local folder
        if uri:
            check_tracking_store(str(uri), Path(context.project_path))


class TrainingInProgress(RuntimeError):
    """Another ``kedro run`` is training in this project."""


MODELS_FOLDER = Path("data") / "06_models"


class OneTrainingAtATime:
    """Refuses a second ``kedro run`` that trains while one is training in the same project.

    Two trainings at once would share ``data/06_models`` (the epoch backups Keras resumes from
    and writes with HDF5 file locks, the saved versions); the second failed midway with an
    HDF5 locking error. The lock is on the folder itself (``flock``), so it is released however
    the first run ends, SIGKILL included, and leaves no file behind. Runs that do not train
    (predict, evaluation, ingestion) are not held back.
    """

    def __init__(self) -> None:
        self._held: int | None = None

    @hook_impl(tryfirst=True)  # before kedro-mlflow opens an MLflow run that would be left dangling
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline, catalog) -> None:
        if not any(name.endswith(".model") for name in pipeline.all_outputs()):
            return
        folder = Path(run_params.get("project_path") or Path.cwd()) / MODELS_FOLDER
        self._held = lock_folder(folder)

    @hook_impl
    def after_pipeline_run(self, run_params: dict[str, Any], run_result: Any, pipeline, catalog) -> None:
        self._release()

    @hook_impl
    def on_pipeline_error(self, error: Exception, run_params: dict[str, Any], pipeline, catalog) -> None:
        self._release()

    def _release(self) -> None:
        if self._held is not None:
            os.close(self._held)
            self._held = None


def lock_folder(folder: Path) -> int:
    """An exclusive lock on ``folder`` (its open descriptor), or ``TrainingInProgress`` at once."""
    import fcntl  # noqa: PLC0415 - POSIX only, as the rest of the project

    folder.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        raise TrainingInProgress(
            f"another `kedro run` is training in this project (it holds {folder}); wait for it to finish, "
            "or run the second one from a copy of the project"
        ) from None
    return descriptor


def _task_block(params: Mapping[str, Any], block: str) -> None:
    from face_pipeline.modelling.builders import ModelSettings  # noqa: PLC0415 - TensorFlow only where needed
    from face_pipeline.pipelines.training.settings import (  # noqa: PLC0415
        CalibrationSettings,
        HeadSettings,
        TrainingSettings,
    )

    values = check_keys(params, {"task", "model", "training", "calibration", "head"}, block)
    target = check_keys(values.get("task"), {"target"}, f"{block}.task").get("target")
    if target != block:
        raise ConfigError(f"{block}.task.target must be {block!r} (the block's name); got {target!r}")
    ModelSettings.from_params(values.get("model") or {}, f"{block}.model")
    TrainingSettings.from_params(values.get("training") or {}, f"{block}.training")
    CalibrationSettings.from_params(values.get("calibration") or {}, f"{block}.calibration")
    HeadSettings.from_params(values.get("head") or {}, f"{block}.head")


def _finetuning_block(params: Mapping[str, Any], block: str) -> None:
    from face_pipeline.pipelines.finetuning.nodes import FinetuningSettings  # noqa: PLC0415

    FinetuningSettings.from_params(params, block)


# What each top-level key of the parameter files is read as.
BLOCKS: dict[str, Callable[[Mapping[str, Any], str], Any]] = {
    "ingestion": IngestionSettings.from_params,
    "external_ingestion": IngestionSettings.from_params,
    "finetune_ingestion": IngestionSettings.from_params,
    "preprocessing": PreprocessingSettings.from_params,
    "external_preprocessing": PreprocessingSettings.from_params,
    "finetune_preprocessing": PreprocessingSettings.from_params,
    "evaluation": EvaluationSettings.from_params,
    "model_card": ModelCardSettings.from_params,
    "run": RunSettings.from_params,
    "predict": PredictSettings.from_params,
    "registry": RegistrySettings.from_params,
    "finetuning": _finetuning_block,
    "embeddings": EmbeddingSettings.from_params,
}


def check_parameters(params: Mapping[str, Any]) -> None:
    """Read every block of ``params`` (Kedro's merged parameters) into its typed object.

    Raises ``ConfigError`` for an unknown top-level key or any key a block does not have; a task
    (``gender``, ``age`` or one registered in ``face_pipeline.tasks``) is a block too.
    """
    from face_pipeline.tasks import TASKS  # noqa: PLC0415 - TensorFlow only where needed

    known = {*BLOCKS, *TASKS}
    check_keys(params, known, "(top level)")
    for block, values in params.items():
        if block in TASKS:
            _task_block(values, block)
        else:
            BLOCKS[block](values, block)


class ParametersCheckHook:
    """Checks every parameter block as soon as Kedro has loaded the configuration."""

    @hook_impl(tryfirst=True)  # before kedro-mlflow logs anything, before any server is contacted
    def after_context_created(self, context) -> None:
        check_parameters(context.params)
