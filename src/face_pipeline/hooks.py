"""Project hooks: tag each MLflow run with the code and data it used."""

from __future__ import annotations

import hashlib
import logging
import subprocess
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
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


class MlflowTagsHook:
    """Adds ``git_commit`` and ``data.manifest_sha1`` tags to the run kedro-mlflow opened."""

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline, catalog) -> None:
        if mlflow.active_run() is None:
            return
        commit = git_commit(Path(run_params.get("project_path") or Path.cwd()))
        if commit:
            mlflow.set_tag("git_commit", commit)
        if MANIFEST in catalog and catalog.exists(MANIFEST) and MANIFEST not in pipeline.all_outputs():
            self._tag_manifest(catalog.load(MANIFEST))

    @hook_impl
    def after_dataset_saved(self, dataset_name: str, data: Any) -> None:
        if dataset_name == MANIFEST:
            self._tag_manifest(data)

    @staticmethod
    def _tag_manifest(manifest: pd.DataFrame) -> None:
        if mlflow.active_run() is not None:
            mlflow.set_tags({"data.manifest_sha1": manifest_hash(manifest), "data.images": len(manifest)})
