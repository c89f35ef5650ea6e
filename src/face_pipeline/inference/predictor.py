"""Age and gender for the faces in any photo: detection, alignment, the shared preprocessing, both networks.

``FacePredictor`` is used by the ``predict`` pipeline, the ``face-pipeline predict`` command and
the served MLflow model alike, so all three give the same answer for the same photo.
"""

from __future__ import annotations

import logging
import os
import pickle
import tempfile
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from face_pipeline.imaging.decoding import ImageSpec
from face_pipeline.imaging.detection import DetectionSettings
from face_pipeline.inference.batching import fast_inference_model, is_keras_model, network_outputs, predict_in_batches
from face_pipeline.inference.loading import EmbeddingHeads
from face_pipeline.inference.photos import PreparedFaces, prepare_photos
from face_pipeline.ops.parallel import chunked, map_chunks, resolve_workers, worker_pool
from face_pipeline.tasks import get_task

logger = logging.getLogger(__name__)

# Every prediction row: where the face is, then each task's columns (Task.columns), then the outcome.
FACE_COLUMNS = ["file", "face", "box_x", "box_y", "box_size"]
OUTCOME_COLUMNS = ["status", "reason"]


def task_columns(tasks: Iterable[str]) -> dict[str, np.dtype]:
    """Each task's prediction columns with their types, in order (``Task.columns`` of no outputs)."""
    columns: dict[str, np.dtype] = {}
    for task in tasks:
        no_outputs = {"": np.zeros(0)}
        columns.update({name: values.dtype for name, values in get_task(task).columns(no_outputs, {}).items()})
    return columns


BATCH_SIZE = 64  # faces the networks take at a time (predict.batch_size)
# Photos from which each worker process runs its own copy of the networks (predict.worker_networks_from).
WORKER_NETWORKS_FROM = 15_000
ACCURATE_KEY = "__accurate__"  # the embedding heads among the networks a worker process loads


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
            from face_pipeline.modelling.combination import combine_outputs  # noqa: PLC0415

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
