"""Loading what a prediction needs: a Keras network from a file or MLflow, the calibration, the
embedding heads and the inference settings saved beside it."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

MLFLOW_SCHEMES = ("runs:/", "models:/", "mlflow-artifacts:/", "dbfs:/")


SETTINGS_FILE = "inference_settings.json"


def load_keras_model(source: str | Path):
    """A Keras model from a ``.keras`` file, a Kedro versioned folder (latest version) or an MLflow URI."""
    import keras  # noqa: PLC0415 - TensorFlow starts only when a model is needed

    source = str(source)
    if source.startswith(MLFLOW_SCHEMES):
        import mlflow  # noqa: PLC0415

        return mlflow.keras.load_model(source, load_model_kwargs={"safe_mode": True})
    path = Path(source)
    if path.is_dir():  # Kedro's versioned layout: name.keras/<version>/name.keras
        versions = sorted(version for version in path.iterdir() if (version / path.name).is_file())
        if not versions:
            raise FileNotFoundError(f"No saved model version in {path}; train one with `kedro run`")
        path = versions[-1] / path.name
    if not path.is_file():
        raise FileNotFoundError(f"No model at {path}; train one with `kedro run` or pass a path or MLflow URI")
    # safe_mode: a model file cannot run code of its own (a Lambda layer's pickled function) on load.
    return keras.models.load_model(path, safe_mode=True)


MODELS_FOLDER = "data/06_models"  # where training saves each task's network (<task>_model.keras)


def model_sources(
    tasks: Iterable[str],
    overrides: Mapping[str, str] | None = None,
    model_uri: str | None = None,
    folder: str = MODELS_FOLDER,
) -> dict[str, str]:
    """Where each task's network is read from: ``overrides[task]`` where given, else the run
    ``model_uri`` (``<model_uri>/<task>_model``), else the latest saved version,
    ``<folder>/<task>_model.keras``. A task in ``overrides`` that is not among ``tasks``
    is an error (a misspelt name would otherwise be ignored)."""
    tasks = list(tasks)
    unknown = set(overrides or {}) - set(tasks)
    if unknown:
        raise ValueError(f"no task named {', '.join(sorted(unknown))}; the tasks are {', '.join(tasks)}")
    default = {
        task: f"{model_uri.rstrip('/')}/{task}_model" if model_uri else f"{folder}/{task}_model.keras" for task in tasks
    }
    return {task: str((overrides or {}).get(task) or default[task]) for task in tasks}


def companion_name(model_name: str, kind: str = "calibration", suffix: str = ".json") -> str:
    """The file of ``kind`` saved with the model named ``model_name`` (``gender_model.keras`` ->
    ``gender_calibration.json``; ``finetuned_age_model`` -> ``finetuned_age_calibration.json``;
    kind ``head``, suffix ``.keras``: ``gender_head.keras``)."""
    stem = model_name.removesuffix(".keras").removesuffix("_model")
    return f"{stem}_{kind}{suffix}"


def _model_file(path: Path) -> Path:
    """A saved model's own path: a version's file in Kedro's layout is ``name.keras/<version>/name.keras``."""
    if path.parent.parent.suffix == ".keras" and path.parent.parent.name == path.name:
        return path.parent.parent
    return path


def companion_source(source: str | Path, kind: str, suffix: str = "") -> str:
    """Where the ``kind`` saved with the model at ``source`` is: beside its file, or in the run that
    logged it (``runs:/<run>/<name>``); a registered model's run is looked up."""
    source = str(source)
    if source.startswith(MLFLOW_SCHEMES):
        import mlflow  # noqa: PLC0415

        if source.startswith("runs:/"):
            run, _, name = source.removeprefix("runs:/").strip("/").partition("/")
        else:  # a registered or logged model: the run that logged it
            info = mlflow.models.get_model_info(source)
            run, name = info.run_id, getattr(info, "name", None) or info.artifact_path
        return f"runs:/{run}/{companion_name(name.rsplit('/', 1)[-1], kind, suffix)}"
    path = _model_file(Path(source))
    return str(path.parent / companion_name(path.name, kind, suffix))


def load_companion(source: str | Path, kind: str) -> dict[str, Any]:
    """The JSON ``kind`` (``calibration``, ``combination``) saved with the model at ``source``."""
    location = companion_source(source, kind, ".json")
    if location.startswith("runs:/"):
        import mlflow  # noqa: PLC0415

        return mlflow.artifacts.load_dict(location)
    return json.loads(Path(location).read_text())


def load_calibration(source: str | Path) -> dict[str, Any]:
    """The calibration saved with the model at ``source`` (a path or MLflow URI, as ``load_keras_model``
    takes): the file of ``companion_name`` beside a saved model, or that artifact of the run
    that logged it. A model without one answers uncalibrated, with a warning."""
    try:
        return load_companion(source, "calibration")
    except Exception as exc:  # noqa: BLE001 - a model from before calibration still answers
        logger.warning(
            "No calibration saved with %s (%s: %s): its probabilities are uncalibrated and it gives no age range",
            source,
            type(exc).__name__,
            exc,
        )
        return {}


def load_embedding_heads(sources: Mapping[str, str | Path], backend: str) -> EmbeddingHeads:
    """``mode: accurate`` for the networks at ``sources`` (task -> model source): each one's embedding
    head and combination saved with it (``<task>_head.keras``, ``<task>_combination.json`` beside
    the file, or in the MLflow run), and the embedding network of ``backend``."""
    heads = {task: load_embedding_head(source) for task, source in sources.items()}
    return embedding_heads(heads, backend)


def load_embedding_head(source: str | Path) -> dict[str, Any]:
    """The embedding head and combination saved with the model at ``source``: ``{"head", "combination"}``."""
    suffix = "" if str(source).startswith(MLFLOW_SCHEMES) else ".keras"
    try:
        return {
            "head": load_keras_model(companion_source(source, "head", suffix)),
            "combination": load_companion(source, "combination"),
        }
    except Exception as exc:
        raise FileNotFoundError(
            f"mode accurate needs the embedding head and combination saved with {source} "
            f"({type(exc).__name__}: {exc}); train them with `kedro run`, or use mode fast"
        ) from exc


class _FirstTraces(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "triggered tf.function retracing" not in record.getMessage()


def embedding_backend(settings: Mapping[str, Any]) -> str:
    """The embedding network's backend saved in ``inference_settings`` (the default for settings saved
    before it: every backend gives the same embeddings)."""
    from face_pipeline.embedding.descriptor import EmbeddingSettings  # noqa: PLC0415

    return settings.get("embedding", {}).get("backend", EmbeddingSettings().backend)


def embedding_heads(heads: Mapping[str, Mapping[str, Any]], backend: str) -> EmbeddingHeads:
    """``EmbeddingHeads`` from each task's ``{"head", "combination"}`` and the embedding network of ``backend``."""
    from face_pipeline.embedding.descriptor import embedder  # noqa: PLC0415

    # Five networks each trace their predict function once; TensorFlow counts those traces
    # together and warns of "retracing" that is not happening.
    tensorflow_log = logging.getLogger("tensorflow")
    if not any(isinstance(existing, _FirstTraces) for existing in tensorflow_log.filters):
        tensorflow_log.addFilter(_FirstTraces())
    return EmbeddingHeads(
        embedder(backend),
        {task: head["head"] for task, head in heads.items()},
        {task: head["combination"] for task, head in heads.items()},
    )


def load_inference_settings(source: str | Path) -> dict[str, Any]:
    """Saved ``inference_settings``: a JSON file, or the artifact of an MLflow run (``runs:/<run id>``)."""
    source = str(source)
    if source.startswith("runs:/"):
        import mlflow  # noqa: PLC0415

        run = source.removeprefix("runs:/").strip("/").split("/")[0]
        return mlflow.artifacts.load_dict(f"runs:/{run}/{SETTINGS_FILE}")
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"No inference settings at {path}; train with `kedro run` or pass --model-uri")
    return json.loads(path.read_text())


@dataclass(frozen=True)
class EmbeddingHeads:
    """What ``mode: accurate`` adds to the networks: the embedding network (``embedding.embedder``),
    a head per task on its embeddings, and per task how the head's answer is mixed with the
    network's and calibrated (``combination.fit_combination``: ``head_weight``, ``calibration``)."""

    embedder: Any
    heads: Mapping[str, Any]
    combinations: Mapping[str, Mapping[str, Any]]
