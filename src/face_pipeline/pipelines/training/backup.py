"""Resuming a killed run: one backup folder per configuration and data set, and the plan it started with."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import pandas as pd

from face_pipeline.ops.files import written_atomically

from .budget import Plan

LOCAL = fsspec.filesystem("file")

logger = logging.getLogger(__name__)

# Images read to fingerprint an array: evenly spread, so any re-split or re-preprocessing shows.
FINGERPRINT_IMAGES = 64


def data_fingerprint(images: np.ndarray, labels: pd.DataFrame) -> str:
    """A SHA-1 of the labels (every row, in order) and of a spread sample of the images, with the shape.

    Two data sets of the same size that differ in which faces, their order or their labels
    have different fingerprints.
    """
    digest = hashlib.sha1(json.dumps(list(images.shape)).encode())
    digest.update(pd.util.hash_pandas_object(labels, index=False).to_numpy().tobytes())
    if len(images):
        rows = np.unique(np.linspace(0, len(images) - 1, min(FINGERPRINT_IMAGES, len(images))).astype(int))
        digest.update(np.ascontiguousarray(images[rows]).tobytes())
    return digest.hexdigest()


def backup_path(root: str, settings: dict[str, Any], fingerprint: str) -> Path:
    """Where a run's last finished epoch is kept: one folder per configuration and training data.

    A run only resumes from a backup made with the same model and training parameters on the
    same data (``data_fingerprint``); after any change it starts afresh instead of restoring
    weights trained on something else.
    """
    key = json.dumps({**settings, "data": fingerprint}, sort_keys=True, default=str)
    return Path(root) / hashlib.sha1(key.encode()).hexdigest()[:12]


def plan_file(backup: Path) -> Path:
    """Where a budgeted run keeps its plan until it finishes: beside its backup."""
    return backup.with_name(f"{backup.name}.epochs_planned.json")


def saved_plan(backup: Path | None) -> Plan | None:
    """The plan of the interrupted run that ``backup`` continues, if it kept one."""
    if backup is None or not plan_file(backup).exists():
        return None
    saved = json.loads(plan_file(backup).read_text())
    plan = Plan(int(saved["epochs"]), float(saved.get("downsample", 1)), "resumed")
    logger.info("Resumed run keeps its plan: %d epochs, downsample %g", plan.epochs, plan.downsample)
    return plan


def keep_plan(backup: Path | None, plan: Plan) -> None:
    """Write ``plan`` beside ``backup`` (temporary name, then rename: never half a file)."""
    if backup is None:
        return
    path = plan_file(backup)
    path.parent.mkdir(parents=True, exist_ok=True)
    plan_values = {key: value for key, value in asdict(plan).items() if key != "source"}
    with written_atomically(LOCAL, str(path)) as partial:
        Path(partial).write_text(json.dumps(plan_values))


def forget_plan(backup: Path | None) -> None:
    """A finished run's plan is removed: the next run plans afresh."""
    if backup is not None:
        plan_file(backup).unlink(missing_ok=True)
