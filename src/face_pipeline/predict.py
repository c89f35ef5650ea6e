"""Age and gender for the faces in any photo: detection, alignment, the shared preprocessing, both networks.

``FacePredictor`` is used by the ``predict`` pipeline, the ``face-pipeline predict`` command and
the served MLflow model alike, so all three give the same answer for the same photo.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import sys
import tempfile
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from face_pipeline.faces import DetectionSettings, Face, face_chip, find_faces, whole_image
from face_pipeline.images import ImageRejected, ImageSpec, convert_pixels, face_input, load_scaled_image
from face_pipeline.parallel import chunked, map_chunks, resolve_workers, worker_pool
from face_pipeline.tasks import get_task, served_output

logger = logging.getLogger(__name__)

# Every prediction row: where the face is, then each task's columns (Task.columns), then the outcome.
FACE_COLUMNS = ["file", "face", "box_x", "box_y", "box_size"]
OUTCOME_COLUMNS = ["status", "reason"]
SERVED_TASKS = ("gender", "age")  # the networks the served model and the predict pipeline bundle


def task_columns(tasks: Iterable[str]) -> dict[str, np.dtype]:
    """Each task's prediction columns with their types, in order (``Task.columns`` of no outputs)."""
    columns: dict[str, np.dtype] = {}
    for task in tasks:
        no_outputs = {"": np.zeros(0)}
        columns.update({name: values.dtype for name, values in get_task(task).columns(no_outputs, {}).items()})
    return columns


def prediction_columns(tasks: Iterable[str] = SERVED_TASKS) -> list[str]:
    return [*FACE_COLUMNS, *task_columns(tasks), *OUTCOME_COLUMNS]


PREDICTION_COLUMNS = prediction_columns()
MLFLOW_SCHEMES = ("runs:/", "models:/", "mlflow-artifacts:/", "dbfs:/")
SETTINGS_FILE = "inference_settings.json"
BATCH_SIZE = 64  # faces the networks take at a time (predict.batch_size)
# Photos from which each worker process runs its own copy of the networks (predict.worker_networks_from).
WORKER_NETWORKS_FROM = 15_000
ACCURATE_KEY = "__accurate__"  # the embedding heads among the networks a worker process loads


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
    from face_pipeline.embedding import EmbeddingSettings  # noqa: PLC0415

    return settings.get("embedding", {}).get("backend", EmbeddingSettings().backend)


def embedding_heads(heads: Mapping[str, Mapping[str, Any]], backend: str) -> EmbeddingHeads:
    """``EmbeddingHeads`` from each task's ``{"head", "combination"}`` and the embedding network of ``backend``."""
    from face_pipeline.embedding import embedder  # noqa: PLC0415

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


def network_outputs(model, images: np.ndarray, batch_size: int = 256) -> dict[str, np.ndarray]:
    """Every output of ``model`` per image, by name, ``images`` fed ``batch_size`` at a time (works on memmaps).

    An output of one value per image is an ``(N,)`` array, one of several (a distribution over
    ages) ``(N, k)``. A model with a single output (not a dict) gives it under the name ``""``.

    A shorter batch is padded to the next power of two: Keras traces its predict function anew
    for every batch shape it has not seen, which costs far more than the padding (faces come in
    batches of any size: one per request, or however many a chunk of photos held).
    """
    batches: dict[str, list[np.ndarray]] = {}
    # A network that traces nothing per batch shape (dlib's embedder) says so: padding would only cost it.
    padded = getattr(model, "pad_batches", True)
    for start in range(0, len(images), batch_size):
        batch = np.asarray(images[start : start + batch_size])
        shape = min(batch_size, 1 << (len(batch) - 1).bit_length()) if padded else len(batch)
        if shape > len(batch):
            batch = np.concatenate([batch, np.zeros((shape - len(batch), *batch.shape[1:]), batch.dtype)])
        output = model.predict_on_batch(batch)
        for name, batch_values in (output if isinstance(output, dict) else {"": output}).items():
            values = np.asarray(batch_values).reshape(shape, -1)[: len(images) - start]
            batches.setdefault(name, []).append(values[:, 0] if values.shape[1] == 1 else values)
    if not batches:
        return {"": np.empty(0, dtype=np.float32)}
    return {name: np.concatenate(values) for name, values in batches.items()}


def predict_in_batches(model, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """The served output of ``model`` per image (``network_outputs`` without the distributions)."""
    return served_output(network_outputs(model, images, batch_size))


def is_keras_model(model: Any) -> bool:
    if "keras" not in sys.modules:  # not imported: cannot be a Keras model
        return False
    import keras  # noqa: PLC0415

    return isinstance(model, keras.Model)


def fast_inference_model(model: Any) -> Any:
    """``model`` with its batch norms folded into its convolutions (``models.fold_batch_norm``) when
    that gives the same outputs (within 1e-3) on a probe batch; otherwise ``model`` itself.

    Anything that is not a Keras model (a stand-in in tests) is returned as it is.
    """
    if not is_keras_model(model):
        return model
    import keras  # noqa: PLC0415

    from face_pipeline.models import fold_batch_norm  # noqa: PLC0415 - TensorFlow, only with a Keras model

    probe = np.random.default_rng(0).integers(0, 256, (4, *model.input_shape[1:])).astype(np.float32)
    try:
        folded = fold_batch_norm(model)
        # Called directly (eagerly): predict_on_batch would trace a function for the probe's batch
        # size. A tensor, not an array: Keras warns about the input structure of an array.
        tensor = keras.ops.convert_to_tensor(probe)
        # Every output side by side (the age network also answers its distribution).
        outputs = [
            np.concatenate([keras.ops.convert_to_numpy(values).reshape(len(probe), -1) for values in flat], axis=1)
            for flat in (keras.tree.flatten(network(tensor, training=False)) for network in (folded, model))
        ]
        difference = np.abs(outputs[0] - outputs[1])
    except Exception as exc:  # noqa: BLE001 - an unusual model still predicts, unfolded
        logger.warning("Model %s runs unfolded: %s: %s", model.name, type(exc).__name__, exc)
        return model
    if difference.max() > 1e-3:
        logger.warning("Model %s runs unfolded: folding changed its outputs by %.2g", model.name, difference.max())
        return model
    return folded


def inference_settings(
    preprocessing: dict[str, Any], predict: dict[str, Any], embeddings: dict[str, Any] | None = None
) -> dict[str, Any]:
    """What turns a photo into the networks' input: the image spec, the detection settings and the
    embedding network's backend (``mode: accurate``).

    Saved with the trained models (``data/06_models/inference_settings.json`` and the MLflow
    run's artifact of that name) so that the ``predict`` pipeline, the ``face-pipeline`` command
    and the served model build the same ``FacePredictor`` from it.
    """
    from face_pipeline.embedding import EmbeddingSettings  # noqa: PLC0415

    spec = ImageSpec.from_params(preprocessing["image"])
    return {
        "image": asdict(spec),
        "detection": DetectionSettings.from_params(predict["detection"]).to_params(),
        "embedding": {"backend": EmbeddingSettings.from_params(embeddings or {}).backend},
    }


def prepare_photo(
    name: str,
    data: bytes | Callable[[], bytes],
    spec: ImageSpec,
    detection: DetectionSettings,
    embedding_chips: bool = False,
) -> tuple[list[dict], list[np.ndarray]]:
    """Rows (without predictions) and network inputs for one photo; failures become rows.

    ``data`` is the photo's bytes or a function returning them (a catalog loader). With detection
    off the photo gets exactly the training images' preprocessing (``decode_face``); otherwise
    each face found is aligned onto the training chips' geometry, then goes through the same
    ``face_input``. With ``embedding_chips`` each input is a pair: the network input and the
    face's chip for the embedding network (``embedding.embedding_chip``, from the same aligned face).
    """
    try:
        data = data() if callable(data) else data
        if detection.mode == "never" and not embedding_chips:
            pixels, scale = load_scaled_image(data, spec, min_side=spec.size)
            return [_row(name, 0, whole_image(pixels), scale)], [face_input(pixels, spec)]
        rgb, scale = load_scaled_image(data, replace(spec, color_mode="rgb"), min_side=detection.max_side)
    except ImageRejected as exc:
        return [{"file": name, "status": "error", "reason": str(exc)}], []
    except Exception as exc:  # noqa: BLE001 - one bad file must not stop the others
        return [{"file": name, "status": "error", "reason": f"unreadable image: {type(exc).__name__}: {exc}"}], []
    faces = find_faces(rgb, detection)
    if not faces:
        return [{"file": name, "status": "no face", "reason": "no face detected"}], []
    chips = [face_chip(rgb, face, detection) for face in faces]
    inputs = [face_input(convert_pixels(chip, spec.color_mode), spec) for chip in chips]
    if embedding_chips:
        from face_pipeline.embedding import embedding_chip  # noqa: PLC0415 - dlib, only when asked

        inputs = [(face, embedding_chip(chip, detection.chip)) for face, chip in zip(inputs, chips, strict=True)]
    return [_row(name, index, face, scale) for index, face in enumerate(faces)], inputs


def _row(name: str, index: int, face: Face, scale: float) -> dict:
    """A face's row, its box in the photo's own pixels."""
    x, y, size = (round(value * scale) for value in (face.box.x, face.box.y, face.box.size))
    return {"file": name, "face": index, "box_x": x, "box_y": y, "box_size": size, "status": "ok"}


@dataclass(frozen=True)
class PreparedFaces:
    """The faces of some photos, ready for the networks: one row per face (or per failed photo),
    the networks' inputs of the ``ok`` rows and, when asked for, their embedding chips."""

    rows: list[dict]
    inputs: np.ndarray
    chips: np.ndarray | None = None


def prepare_photos(
    photos: Sequence[tuple[str, bytes | Callable[[], bytes]]],
    spec: ImageSpec,
    detection: DetectionSettings,
    embedding_chips: bool = False,
) -> PreparedFaces:
    """``prepare_photo`` for a chunk of photos: all rows, and the inputs (and chips) stacked in arrays."""
    rows: list[dict] = []
    inputs: list = []
    for name, data in photos:
        photo_rows, photo_inputs = prepare_photo(name, data, spec, detection, embedding_chips)
        rows.extend(photo_rows)
        inputs.extend(photo_inputs)
    faces = [face for face, _ in inputs] if embedding_chips else inputs
    stacked = np.stack(faces) if faces else np.empty((0, *spec.shape), dtype=np.uint8)
    if not embedding_chips:
        return PreparedFaces(rows, stacked)
    from face_pipeline.embedding import CHIP_SIZE  # noqa: PLC0415

    chips = np.stack([chip for _, chip in inputs]) if inputs else np.empty((0, CHIP_SIZE, CHIP_SIZE, 3), np.uint8)
    return PreparedFaces(rows, stacked, chips)


@dataclass(frozen=True)
class EmbeddingHeads:
    """What ``mode: accurate`` adds to the networks: the embedding network (``embedding.embedder``),
    a head per task on its embeddings, and per task how the head's answer is mixed with the
    network's and calibrated (``combination.fit_combination``: ``head_weight``, ``calibration``)."""

    embedder: Any
    heads: Mapping[str, Any]
    combinations: Mapping[str, Mapping[str, Any]]


def prediction_table(
    models: Mapping[str, Any],
    prepared: PreparedFaces,
    batch_size: int,
    run_networks: Callable[..., Iterable[Mapping[str, np.ndarray]]] = map,
    calibration: Mapping[str, Mapping[str, Any]] | None = None,
    accurate: EmbeddingHeads | None = None,
) -> pd.DataFrame:
    """The rows of ``prepared`` photos (``prepare_photos``) with each task's predictions on their inputs.

    ``run_networks`` maps a function over the networks (``map``: one after the other); each
    task's columns are calibrated by ``calibration[task]`` (``Task.calibrate``), if given. With
    ``accurate`` (and ``prepared.chips``) each task's answer is its network's mixed with its
    embedding head's, calibrated as that mix was on the validation split.
    """
    calibration = dict(calibration or {})
    types = task_columns(models)
    table = pd.DataFrame(prepared.rows, columns=[*FACE_COLUMNS, *types, *OUTCOME_COLUMNS]).astype(
        {name: {"f": "float64", "b": "boolean"}.get(dtype.kind, "object") for name, dtype in types.items()}
        | {"reason": "object"}
    )
    if len(prepared.inputs):
        ok = table["status"] == "ok"
        inputs = prepared.inputs
        outputs = dict(
            zip(
                models,
                run_networks(lambda model: network_outputs(model, inputs, batch_size), models.values()),
                strict=True,
            )
        )
        if accurate is not None and prepared.chips is not None:
            from face_pipeline.combination import combine_outputs  # noqa: PLC0415

            [embeddings] = network_outputs(accurate.embedder, prepared.chips, batch_size).values()
            heads = [accurate.heads[task] for task in models]
            head_outputs = run_networks(lambda head: network_outputs(head, embeddings, batch_size), heads)
            for task, task_head_outputs in zip(models, head_outputs, strict=True):
                combination = accurate.combinations[task]
                outputs[task] = combine_outputs(outputs[task], task_head_outputs, combination["head_weight"])
                calibration[task] = combination["calibration"]
        for task, task_outputs in outputs.items():
            for name, values in get_task(task).columns(task_outputs, calibration.get(task, {})).items():
                table.loc[ok, name] = values
    return table.astype({"face": "Int16", "box_x": "Int32", "box_y": "Int32", "box_size": "Int32"})


_loaded_networks: dict[str, Mapping[str, Any]] = {}


def worker_networks(networks: str, tensorflow_threads: int | None, batch_size: int) -> Mapping[str, Any]:
    """This worker process's copy of the networks pickled in the file ``networks``, loaded on first use.

    TensorFlow gets ``tensorflow_threads`` threads (``None``: the networks are not Keras models).
    Each network is called once on a batch of ``batch_size``, so that its trace is made here.
    """
    if networks not in _loaded_networks:
        if tensorflow_threads:
            import tensorflow as tf  # noqa: PLC0415 - only in workers that run Keras networks

            try:
                tf.config.threading.set_intra_op_parallelism_threads(tensorflow_threads)
                tf.config.threading.set_inter_op_parallelism_threads(tensorflow_threads)
            except RuntimeError:  # TensorFlow already started in this worker: it keeps its threads
                pass
        models = pickle.loads(Path(networks).read_bytes())  # the file this run's predictor wrote
        for model in models.values():
            if is_keras_model(model):
                predict_in_batches(model, np.zeros((batch_size, *model.input_shape[1:]), np.uint8), batch_size)
        _loaded_networks.clear()  # one predictor's networks at a time
        _loaded_networks[networks] = models
    return _loaded_networks[networks]


def load_worker_networks(networks: str, tensorflow_threads: int | None, batch_size: int) -> None:
    """``worker_networks`` loaded ahead of the photos (nothing is sent back)."""
    worker_networks(networks, tensorflow_threads, batch_size)


def predict_photos_in_worker(
    photos: Sequence[tuple[str, bytes | Callable[[], bytes]]],
    spec: ImageSpec,
    detection: DetectionSettings,
    networks: str,
    tensorflow_threads: int | None,
    batch_size: int,
    calibration: Mapping[str, Mapping[str, Any]],
) -> pd.DataFrame:
    """A worker process's chunk: its photos prepared, then its own networks (``worker_networks``) run on their faces."""
    models = dict(worker_networks(networks, tensorflow_threads, batch_size))
    accurate = models.pop(ACCURATE_KEY, None)
    prepared = prepare_photos(photos, spec, detection, embedding_chips=accurate is not None)
    return prediction_table(models, prepared, batch_size, calibration=calibration, accurate=accurate)


@dataclass
class FacePredictor:
    """Detection, alignment, ``face_input`` and one network per task, for any number of photos.

    ``models`` maps each task (``face_pipeline.tasks``) to its network; each adds its columns
    (``Task.columns``) to the prediction table, in that order, calibrated by ``calibration[task]``
    (fitted after training, saved with the model; none: the network's own output, no age range).
    Keras networks run with their batch norms folded (``fast_inference_model``). Photos are
    taken ``chunk_size`` at a time and memory does not grow with the number of photos:

    - one of ``workers`` (the default): this process does everything, the networks side by side
      in threads (a served model's requests);
    - several: worker processes decode, search and align the photos while this process runs the
      networks on their faces;
    - several, and at least ``worker_networks_from`` photos: each worker also runs its own copy of
      the networks, TensorFlow on its share of the cores, as separate processes would. It scales
      better with the cores, but every worker first imports TensorFlow and loads the networks
      (seconds), so it pays only on large folders; meanwhile this process predicts the first
      photos itself.
    """

    models: Mapping[str, Any]
    spec: ImageSpec = field(default_factory=ImageSpec)
    detection: DetectionSettings = field(default_factory=DetectionSettings)
    batch_size: int = BATCH_SIZE
    workers: int | None = 1
    chunk_size: int = 128
    worker_networks_from: int = WORKER_NETWORKS_FROM
    calibration: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    accurate: EmbeddingHeads | None = None

    def __post_init__(self) -> None:
        self.models = {task: fast_inference_model(model) for task, model in self.models.items()}
        self._network_threads: ThreadPoolExecutor | None = None
        self._networks_file: str | None = None
        self._workers_ready = False

    def _networks(self) -> ThreadPoolExecutor:
        """Threads that run the networks, started on first use: one per task for each of up to four
        callers at once (a served model's concurrent requests)."""
        if self._network_threads is None:
            self._network_threads = ThreadPoolExecutor(4 * len(self.models), thread_name_prefix="network")
        return self._network_threads

    def _shared_networks(self) -> str:
        """The networks pickled into a file for the worker processes (written once, removed with the predictor)."""
        if self._networks_file is None:
            handle, path = tempfile.mkstemp(prefix="face-networks-", suffix=".pickle")
            networks = {**self.models, ACCURATE_KEY: self.accurate} if self.accurate else self.models
            with os.fdopen(handle, "wb") as file:
                pickle.dump(networks, file)
            weakref.finalize(self, os.remove, path)
            self._networks_file = path
        return self._networks_file

    @classmethod
    def from_settings(cls, models: Mapping[str, Any], settings: dict[str, Any], **options: Any) -> FacePredictor:
        """The predictor for networks saved with ``settings`` (see ``inference_settings``)."""
        return cls(
            models,
            ImageSpec.from_params(settings["image"]),
            DetectionSettings.from_params(settings["detection"]),
            **options,
        )

    def predict_stream(self, photos: Iterable[tuple[str, bytes | Callable[[], bytes]]]) -> Iterator[pd.DataFrame]:
        """One table per chunk of photos, in input order: one row per face found, or per photo
        without a usable face."""
        photos = list(photos)
        chunks = chunked(photos, self.chunk_size)
        workers = resolve_workers(self.workers)
        if workers == 1 or len(chunks) <= 1:
            yield from map(self._predict_here, chunks)
            return
        if len(photos) < self.worker_networks_from:
            preparation = {"spec": self.spec, "detection": self.detection, "embedding_chips": self.accurate is not None}
            for _, prepared in map_chunks(
                prepare_photos, photos, workers=workers, chunk_size=self.chunk_size, description=None, **preparation
            ):
                yield self._predictions(prepared)
            return
        options = self._worker_options(workers)
        warming = [] if self._workers_ready else self._load_worker_networks(workers, options)
        # A worker needs seconds to import TensorFlow and load its networks: until every one has,
        # this process goes through the photos itself.
        here = 0
        while here < len(chunks) and not all(future.done() for future in warming):
            yield self._predict_here(chunks[here])
            here += 1
        self._workers_ready = True
        if len(chunks) - here <= 1:
            yield from map(self._predict_here, chunks[here:])
            return
        for _, table in map_chunks(
            predict_photos_in_worker,
            photos[here * self.chunk_size :],
            workers=workers,
            chunk_size=self.chunk_size,
            description=None,
            spec=self.spec,
            detection=self.detection,
            **options,
        ):
            yield table

    def warm_up(self) -> None:
        """With several ``workers``: have each load its networks now, rather than while photos wait."""
        workers = resolve_workers(self.workers)
        if workers > 1 and not self._workers_ready:
            for future in self._load_worker_networks(workers, self._worker_options(workers)):
                future.result()
            self._workers_ready = True

    def _worker_options(self, workers: int) -> dict[str, Any]:
        """What ``predict_photos_in_worker`` needs besides the photos."""
        # Each worker runs the whole path, networks included, like separate processes: networks in
        # this process would compete with the workers for the cores (1.1-1.4x, see docs/experiments.md).
        keras_networks = any(is_keras_model(model) for model in self.models.values())
        return {
            "networks": self._shared_networks(),
            "tensorflow_threads": max(1, (os.cpu_count() or 1) // workers) if keras_networks else None,
            "batch_size": self.batch_size,
            "calibration": self.calibration,
        }

    def _load_worker_networks(self, workers: int, options: dict[str, Any]) -> list[Future]:
        pool = worker_pool(workers, __name__)
        networks = (options["networks"], options["tensorflow_threads"], options["batch_size"])
        return [pool.submit(load_worker_networks, *networks) for _ in range(workers)]

    def _predict_here(self, photos: Sequence[tuple[str, bytes | Callable[[], bytes]]]) -> pd.DataFrame:
        """A chunk of photos prepared and predicted in this process."""
        return self._predictions(prepare_photos(photos, self.spec, self.detection, self.accurate is not None))

    def predict(self, photos: Iterable[tuple[str, bytes | Callable[[], bytes]]]) -> pd.DataFrame:
        """One row per face found (or per photo without a usable face), in input order."""
        tables = list(self.predict_stream(photos))
        return pd.concat(tables, ignore_index=True) if tables else self._predictions(PreparedFaces([], np.empty(0)))

    def _predictions(self, prepared: PreparedFaces) -> pd.DataFrame:
        # The networks run side by side: TensorFlow releases the GIL, and two half-used thread pools
        # keep the cores busier than one network after the other (1.2-1.9x on 2 cores).
        return prediction_table(
            self.models, prepared, self.batch_size, self._networks().map, self.calibration, self.accurate
        )
