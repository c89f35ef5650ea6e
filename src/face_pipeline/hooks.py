"""Project hooks: check the MLflow store before a run, tag each run with the code and data it used."""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import subprocess
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from kedro.config import MissingConfigException
from kedro.framework.hooks import hook_impl

logger = logging.getLogger(__name__)

MANIFEST = "face_manifest"


def git_commit(path: Path) -> str | None:
    """``HEAD``'s commit, with ``-dirty`` when tracked files have changed; None outside git."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=path,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}-dirty" if dirty else commit


def manifest_hash(manifest: pd.DataFrame) -> str:
    """A fingerprint of the data: which images, their bytes' SHA-1, labels and split."""
    return hashlib.sha1(pd.util.hash_pandas_object(manifest, index=False).to_numpy().tobytes()).hexdigest()


def profile_name(parameters: dict[str, Any]) -> str:
    """The training profile of ``parameters``: ``run.profile`` where set (``quick``), else ``default``
    or ``seed`` after the tasks' architectures (``default_cnn``, ``seed_cnn``), both joined by ``+``
    when the tasks differ."""
    from face_pipeline.tasks import TASKS  # noqa: PLC0415

    named = (parameters.get("run") or {}).get("profile")
    if named:
        return str(named)
    architectures = {
        str(parameters[task].get("model", {}).get("architecture", "")).removesuffix("_cnn")
        for task in TASKS
        if isinstance(parameters.get(task), dict)
    }
    return "+".join(sorted(architectures - {""})) or "none"


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


class TrackingStoreUnavailable(RuntimeError):
    """The MLflow tracking store cannot be used; the message names it and says what to do."""


SQLITE_HEADER = b"SQLite format 3\x00"
FALLBACK = "or log to a local file instead: MLFLOW_TRACKING_URI=sqlite:///mlflow.db"


def without_credentials(uri: str) -> str:
    """``uri`` with any ``user:password@`` removed, fit for a message or a log."""
    parts = urllib.parse.urlsplit(uri)
    if not parts.username and not parts.password:
        return uri
    return urllib.parse.urlunsplit(parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else "")))


def check_tracking_store(uri: str, project: Path, timeout: float = 5.0) -> None:
    """Raise ``TrackingStoreUnavailable`` unless the store at ``uri`` answers (a server) or can be
    written (an SQLite file or a folder), within ``timeout`` seconds: MLflow itself retries an
    unreachable server for about four minutes before it fails. Relative paths are the project's."""
    scheme = urllib.parse.urlsplit(uri).scheme
    if scheme in ("http", "https"):
        _check_server(uri, timeout)
    elif scheme == "sqlite":
        _check_sqlite(project / uri.removeprefix("sqlite:///") if uri.startswith("sqlite:///") else None, timeout)
    elif scheme in ("", "file"):
        _check_folder_writable(project / (urllib.parse.urlsplit(uri).path if scheme else uri), "MLflow's run folder")


def _check_server(uri: str, timeout: float) -> None:
    import requests  # noqa: PLC0415

    shown = without_credentials(uri)
    try:
        requests.get(f"{uri.rstrip('/')}/health", timeout=timeout).raise_for_status()
    except requests.RequestException as exc:
        reason = type(exc).__name__ if not isinstance(exc, requests.HTTPError) else str(exc)
        raise TrackingStoreUnavailable(
            f"MLflow tracking server {shown} is not reachable ({reason}). Start it or fix MLFLOW_TRACKING_URI "
            f"(conf/base/mlflow.yml), {FALLBACK}"
        ) from None


def _check_sqlite(path: Path | None, timeout: float) -> None:
    if path is None or str(path) in ("", ":memory:"):
        return
    _check_folder_writable(path.parent, "the folder of the MLflow database")
    if path.exists() and path.stat().st_size:
        with path.open("rb") as stream:
            header = stream.read(len(SQLITE_HEADER))
        if header and header != SQLITE_HEADER:
            raise TrackingStoreUnavailable(
                f"{path} is not an SQLite database (MLflow's store). Move it away and run again, or set "
                "MLFLOW_TRACKING_URI to another file"
            )
        try:
            with sqlite3.connect(path, timeout=timeout) as connection:
                connection.execute("BEGIN IMMEDIATE")  # waits for another writer, up to timeout
                connection.rollback()
        except sqlite3.OperationalError as exc:
            raise TrackingStoreUnavailable(
                f"MLflow database {path} cannot be written ({exc}): another process holds it locked; wait for "
                "it to finish (e.g. another kedro run or mlflow ui) and run again"
            ) from None
    # Always through the lock: a file that exists may be a store another run is creating right
    # now (its tables half migrated); the lock waits for that run to finish them.
    create_sqlite_store(path)


def create_sqlite_store(path: Path) -> None:
    """Create (or check) MLflow's tables in an SQLite file, one process at a time.

    Two runs started together on a new store would both create the tables, and the second fails
    in MLflow's schema migration (alembic: "expected to match one row"); the lock (on the folder,
    so that no lock file is left behind) lets the first create them and the second find them.
    """
    import fcntl  # noqa: PLC0415 - POSIX only, as the rest of the project

    from mlflow.tracking import MlflowClient  # noqa: PLC0415

    folder = os.open(path.parent, os.O_RDONLY)
    try:
        fcntl.flock(folder, fcntl.LOCK_EX)
        MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments(max_results=1)
    finally:
        os.close(folder)  # releases the lock


def _check_folder_writable(folder: Path, what: str) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise TrackingStoreUnavailable(
            f"{folder} ({what}) is not writable: {exc.strerror}. Make it writable or set MLFLOW_TRACKING_URI "
            "to a writable location"
        ) from None


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
