"""Every parameter block of the project, typed and checked before a run starts.

Each top-level key of the parameter files has a frozen dataclass here or beside the code that
uses it (``TrainingSettings``, ``ModelSettings``, ``ImageSpec``, ``DetectionSettings``, ...).
``check_parameters`` reads them all when Kedro loads the configuration (``ParametersCheckHook``),
so a misspelt key fails the run at once, naming the key, the block and the file, instead of
being ignored or failing an hour in.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from face_pipeline.config import ConfigError, check_keys, read_block, require_choice, require_range
from face_pipeline.datasets.arrays import SHARD_ROWS
from face_pipeline.embedding.descriptor import PREDICT_MODES
from face_pipeline.imaging.decoding import MAX_PIXELS, ImageSpec
from face_pipeline.imaging.detection import DetectionSettings
from face_pipeline.inference.predictor import BATCH_SIZE, WORKER_NETWORKS_FROM
from face_pipeline.ops.parallel import CHUNK_SIZE

LABEL_SOURCES = ("filename", "manifest")


@dataclass(frozen=True)
class LabelSource:
    source: str = "filename"
    manifest_file: str = "labels.csv"


@dataclass(frozen=True)
class SplitSettings:
    fractions: Mapping[str, float]
    seed: int = 42
    age_bands: tuple[int, ...] = (13, 20, 40, 60)


@dataclass(frozen=True)
class IngestionSettings:
    """``ingestion`` (and ``external_ingestion``, ``finetune_ingestion``): which images, which labels, the split."""

    raw_dir: str
    labels: LabelSource
    split: SplitSettings
    age_range: tuple[int, int] = (0, 120)
    max_pixels: int = MAX_PIXELS
    workers: int | None = None
    chunk_size: int = CHUNK_SIZE
    scheduler: str | None = None  # a Dask scheduler's address: check files on its workers
    refuse_outside_links: bool = False  # a folder not trusted: links out of it are reported, never read
    max_images: int | None = None  # a sample of at most this many image files; None = every file

    @classmethod
    def from_params(cls, params: Mapping[str, Any], block: str = "ingestion") -> IngestionSettings:
        values = check_keys(params, cls.__dataclass_fields__, block)
        refuse = values.get("refuse_outside_links", False)
        if not isinstance(refuse, bool):
            raise ConfigError(f"{block}.refuse_outside_links must be true or false; got {refuse!r}")
        labels = read_block(LabelSource, values.get("labels"), f"{block}.labels")
        require_choice(labels.source, LABEL_SOURCES, f"{block}.labels.source")
        split = read_block(SplitSettings, values.get("split"), f"{block}.split")
        check_keys(split.fractions, {"train", "val", "test"}, f"{block}.split.fractions")
        if values.get("max_images") is not None:
            require_range(values["max_images"], f"{block}.max_images", at_least=1)
        return read_block(cls, {**values, "labels": labels, "split": split}, block)


@dataclass(frozen=True)
class PreprocessingSettings:
    """``preprocessing`` (and ``external_preprocessing``, ``finetune_preprocessing``): images to arrays."""

    image: ImageSpec
    workers: int | None = None
    chunk_size: int = CHUNK_SIZE
    shard_images: int = SHARD_ROWS
    scheduler: str | None = None  # a Dask scheduler's address: decode on its workers
    detection: DetectionSettings | None = None  # photos, not chips: find and align the face first

    @classmethod
    def from_params(cls, params: Mapping[str, Any], block: str = "preprocessing") -> PreprocessingSettings:
        values = check_keys(params, cls.__dataclass_fields__, block)
        values["image"] = ImageSpec.from_params(values.get("image") or {}, f"{block}.image")
        if values.get("detection"):
            values["detection"] = DetectionSettings.from_params(values["detection"], f"{block}.detection")
        return read_block(cls, values, block)


@dataclass(frozen=True)
class EvaluationSettings:
    """``evaluation``: how results are broken down by group."""

    age_bands: tuple[int, ...]
    min_group_size: int = 30

    @classmethod
    def from_params(cls, params: Mapping[str, Any], block: str = "evaluation") -> EvaluationSettings:
        return read_block(cls, params, block)


@dataclass(frozen=True)
class ModelCardSettings:
    """``model_card``: the bootstrap intervals of the model card's test figures."""

    bootstrap_resamples: int = 1000
    confidence: float = 0.95
    seed: int = 0

    @classmethod
    def from_params(cls, params: Mapping[str, Any], block: str = "model_card") -> ModelCardSettings:
        settings = read_block(cls, params, block)
        require_range(settings.bootstrap_resamples, f"{block}.bootstrap_resamples", at_least=1)
        require_range(settings.confidence, f"{block}.confidence", above=0, below=1)
        return settings


@dataclass(frozen=True)
class RunSettings:
    """``run``: what kind of run this is (its profile's name) and a line said at its start and end."""

    profile: str | None = None
    note: str | None = None

    @classmethod
    def from_params(cls, params: Mapping[str, Any], block: str = "run") -> RunSettings:
        return read_block(cls, params, block)


# Keys of ``predict`` that only ``--params`` sets: the catalog reads them (``runtime_params``).
PREDICT_RUNTIME_KEYS = ("input_path", "models", "refuse_outside_links")


@dataclass(frozen=True)
class PredictSettings:
    """``predict``: how photos are read, searched for faces and batched."""

    detection: DetectionSettings
    batch_size: int = BATCH_SIZE
    workers: int | None = None
    worker_networks_from: int = WORKER_NETWORKS_FROM
    annotate: bool = False
    mode: str = PREDICT_MODES[0]

    @classmethod
    def from_params(cls, params: Mapping[str, Any], block: str = "predict") -> PredictSettings:
        values = check_keys(params, {*cls.__dataclass_fields__, *PREDICT_RUNTIME_KEYS}, block)
        values = {key: value for key, value in values.items() if key not in PREDICT_RUNTIME_KEYS}
        values["detection"] = DetectionSettings.from_params(values.get("detection") or {}, f"{block}.detection")
        settings = read_block(cls, values, block)
        require_choice(settings.mode, PREDICT_MODES, f"{block}.mode")
        return settings


@dataclass(frozen=True)
class RegistrySettings:
    """``registry``: whether and under which names a run registers its models."""

    register: bool = False
    names: Mapping[str, str] | None = None

    @classmethod
    def from_params(cls, params: Mapping[str, Any], block: str = "registry") -> RegistrySettings:
        from face_pipeline.tasks import TASKS  # noqa: PLC0415 - TensorFlow only where needed

        settings = read_block(cls, params, block)
        check_keys(settings.names, {*TASKS, "face"}, f"{block}.names")
        return settings


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
