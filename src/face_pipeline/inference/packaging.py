"""The served model packaged: ``face_model`` logged to MLflow with its networks, settings, card,
signature and pinned requirements, and the networks registered."""

from __future__ import annotations

import base64
import io
import tempfile
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema

import face_pipeline
from face_pipeline.embedding.descriptor import PREDICT_MODES
from face_pipeline.inference.predictor import FACE_COLUMNS, OUTCOME_COLUMNS, task_columns
from face_pipeline.inference.serving import MODEL_CARD, SERVING_LIMITS, FaceModel

# What a logged model needs to load, pinned to the versions installed (MLflow adds itself).
# Pinning them here spares MLflow's requirement inference, which loads each model in a fresh
# Python process (about 20 s per model). Each entry: alternative distributions, first found wins.
NETWORK_REQUIREMENTS = (("tensorflow-cpu", "tensorflow"), ("keras",), ("numpy",))


SERVING_REQUIREMENTS = (
    *NETWORK_REQUIREMENTS,
    ("opencv-python-headless", "opencv-python"),
    ("ai-edge-litert",),
    ("pillow",),
    ("pandas",),
    ("fsspec",),
    ("dlib-bin", "dlib"),  # mode accurate: the face embedding
    ("face-recognition-models",),
)


def pinned_requirements(requirements: tuple[tuple[str, ...], ...] = NETWORK_REQUIREMENTS) -> list[str]:
    """``package==version`` of each installed requirement; a requirement with none installed is left out.

    Default: what the Keras networks need (the ``pip_requirements`` of their MLflow models,
    ``${network_requirements:}`` in the catalog).
    """
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415

    pins = []
    for alternatives in requirements:
        for package in alternatives:
            try:
                pins.append(f"{package}=={version(package)}")
                break
            except PackageNotFoundError:
                continue
    return pins


def output_signature(tasks: Sequence[str]) -> ModelSignature:
    """The served model's answer, one row per face: the photo's ``id``, the face's box, each task's
    columns (``Task.columns``: gender, calibrated P(female), gender_uncertain, age, age_low,
    age_high) and the outcome. Inputs are not enforced by MLflow: ``decode_payload`` checks them
    with messages that name the row."""
    kinds = {"f": "double", "b": "boolean"}
    columns = [ColSpec("string", "id"), *(ColSpec("long", name, required=False) for name in FACE_COLUMNS[1:])]
    columns += [
        ColSpec(kinds.get(dtype.kind, "string"), name, required=False) for name, dtype in task_columns(tasks).items()
    ]
    columns += [ColSpec("string", name, required=name == "status") for name in OUTCOME_COLUMNS]
    return ModelSignature(inputs=None, outputs=Schema(columns))


def input_example() -> pd.DataFrame:
    """A request of one photo (a plain grey square: its answer is a row saying no face was found)."""
    from PIL import Image  # noqa: PLC0415

    buffer = io.BytesIO()
    Image.new("L", (64, 64), 128).save(buffer, "PNG")
    return pd.DataFrame({"id": ["example.png"], "image": [base64.b64encode(buffer.getvalue()).decode()]})


PACKAGED_PARTS = ("model", "calibration", "head", "combination")  # what each task brings, by keyword <task>_<part>


def log_face_model(
    inference_settings: dict[str, Any],
    predict: dict[str, Any] | None = None,
    model_card: str | None = None,
    **task_parts: Any,
) -> str:
    """Log the bundled model as ``face_model`` into the active MLflow run; returns its URI.

    ``task_parts`` holds, for each task, ``<task>_model`` (its network) and optionally
    ``<task>_calibration``, ``<task>_head`` and ``<task>_combination`` (``package_pipeline``
    wires them for every task). Node function: kedro-mlflow's model dataset cannot attach the
    networks as artifacts, so the node logs the model itself (into the run kedro-mlflow opened).
    The networks' calibrations travel in its config; the embedding heads (where every task has
    one) as artifacts, their combinations in the config, and ``mode`` (``predict.mode``) says
    whether they answer. The model card (where given, Markdown) travels as the artifact
    ``model_card``: ``face_model/artifacts/model_card.md``.
    """
    tasks = [name.removesuffix("_model") for name in task_parts if name.endswith("_model")]
    unknown = set(task_parts) - {f"{task}_{part}" for task in tasks for part in PACKAGED_PARTS}
    if unknown:
        raise TypeError(f"log_face_model: unexpected {sorted(unknown)}; each task brings <task>_{PACKAGED_PARTS}")
    heads = {task: task_parts.get(f"{task}_head") for task in tasks}
    combinations = {task: task_parts.get(f"{task}_combination") for task in tasks}
    with_heads = all(head is not None for head in heads.values()) and all(combinations.values())
    # Every limit is in the config so that MLFLOW_PYFUNC_INFERENCE_CONFIG can override it when
    # serving, as can the mode.
    config = {
        "tasks": tasks,
        "inference_settings": inference_settings,
        "calibration": {task: task_parts.get(f"{task}_calibration") or {} for task in tasks},
        "mode": (predict or {}).get("mode", PREDICT_MODES[0]),
        "combination": combinations if with_heads else {},
        **asdict(SERVING_LIMITS),
    }
    with tempfile.TemporaryDirectory() as folder:
        networks = {f"{task}_model": task_parts[f"{task}_model"] for task in tasks}
        if with_heads:
            networks |= {f"{task}_head": head for task, head in heads.items()}
        paths = {name: str(Path(folder) / f"{name}.keras") for name in networks}
        for name, network in networks.items():
            network.save(paths[name])
        if model_card is not None:
            paths[MODEL_CARD] = str(Path(folder) / f"{MODEL_CARD}.md")
            Path(paths[MODEL_CARD]).write_text(model_card, encoding="utf-8")
        info = mlflow.pyfunc.log_model(
            name="face_model",
            python_model=FaceModel(),
            artifacts=paths,
            model_config=config,
            code_paths=[str(Path(face_pipeline.__file__).parent)],
            pip_requirements=pinned_requirements(SERVING_REQUIREMENTS),
            signature=output_signature(tasks),
            input_example=input_example(),
        )
    return info.model_uri


def register_models(face_model_uri: str, registry: dict[str, Any]) -> dict[str, int]:
    """Register this run's models in the MLflow Model Registry when ``registry.register`` is on.

    Returns ``{registered name: version}`` (empty when registration is off).
    """
    if not registry.get("register"):
        return {}
    run = mlflow.active_run()
    if run is None:
        raise RuntimeError("registry.register needs an active MLflow run (kedro-mlflow opens one per kedro run)")
    names = registry["names"]
    # Each task's network as logged by its training (<task>_model), and the bundle.
    sources = {name: f"runs:/{run.info.run_id}/{task}_model" for task, name in names.items() if task != "face"}
    sources[names["face"]] = face_model_uri
    return {name: int(mlflow.register_model(source, name).version) for name, source in sources.items()}
