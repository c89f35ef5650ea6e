"""Every parameter block of the project, typed and checked before a run starts.

Each top-level key of the parameter files has a frozen dataclass here or beside the code that
uses it (``TrainingSettings``, ``ModelSettings``, ``ImageSpec``, ``DetectionSettings``, ...).
``check_parameters`` reads them all when Kedro loads the configuration (``ParametersCheckHook``),
so a misspelt key fails the run at once, naming the key, the block and the file, instead of
being ignored or failing an hour in.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
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


def _nested(settings: Any, name: str, read: Any) -> None:
    """``settings.<name>`` read into its block type (``read(mapping)``) where it is still a mapping."""
    value = getattr(settings, name)
    if value is None or not isinstance(value, Mapping):
        return
    object.__setattr__(settings, name, read(value))


@dataclass(frozen=True)
class IngestionSettings:
    """``ingestion`` (and ``external_ingestion``, ``finetune_ingestion``): which images, which labels, the split.

    Nodes take it typed: Kedro builds it from the block (``IngestionSettings(**block)``), and
    ``__post_init__`` reads the nested blocks and checks every value, as ``from_params`` does.
    """

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

    def __post_init__(self) -> None:
        block = "ingestion"
        _nested(self, "labels", lambda values: read_block(LabelSource, values, f"{block}.labels"))
        _nested(self, "split", lambda values: read_block(SplitSettings, values, f"{block}.split"))
        if not isinstance(self.refuse_outside_links, bool):
            raise ConfigError(f"{block}.refuse_outside_links must be true or false; got {self.refuse_outside_links!r}")
        require_choice(self.labels.source, LABEL_SOURCES, f"{block}.labels.source")
        check_keys(self.split.fractions, {"train", "val", "test"}, f"{block}.split.fractions")
        if self.max_images is not None:
            require_range(self.max_images, f"{block}.max_images", at_least=1)

    @classmethod
    def from_params(cls, params: Mapping[str, Any], block: str = "ingestion") -> IngestionSettings:
        return read_block(cls, params, block)


@dataclass(frozen=True)
class PreprocessingSettings:
    """``preprocessing`` (and ``external_preprocessing``, ``finetune_preprocessing``): images to arrays.
    Built by Kedro from the block for the nodes that take it typed (see ``IngestionSettings``)."""

    image: ImageSpec = field(default_factory=ImageSpec)
    workers: int | None = None
    chunk_size: int = CHUNK_SIZE
    shard_images: int = SHARD_ROWS
    scheduler: str | None = None  # a Dask scheduler's address: decode on its workers
    detection: DetectionSettings | None = None  # photos, not chips: find and align the face first

    def __post_init__(self) -> None:
        _nested(self, "image", lambda values: ImageSpec.from_params(values, "preprocessing.image"))
        if isinstance(self.detection, Mapping) and not self.detection:
            object.__setattr__(self, "detection", None)
        _nested(self, "detection", lambda values: DetectionSettings.from_params(values, "preprocessing.detection"))
        require_range(self.shard_images, "preprocessing.shard_images", at_least=1)

    @classmethod
    def from_params(cls, params: Mapping[str, Any], block: str = "preprocessing") -> PreprocessingSettings:
        return read_block(cls, params, block)


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


@dataclass(frozen=True)
class PredictSettings:
    """``predict``: how photos are read, searched for faces and batched, and in which mode the
    networks answer. ``input_path``, ``models`` and ``refuse_outside_links`` are set on the
    command line only (``--params``; the catalog reads them). Built by Kedro from the block for
    the nodes that take it typed (see ``IngestionSettings``)."""

    detection: DetectionSettings = field(default_factory=DetectionSettings)
    batch_size: int = BATCH_SIZE
    workers: int | None = None
    worker_networks_from: int = WORKER_NETWORKS_FROM
    annotate: bool = False
    mode: str = PREDICT_MODES[0]
    input_path: str | None = None
    models: Mapping[str, str] | None = None
    refuse_outside_links: bool | None = None

    def __post_init__(self) -> None:
        _nested(self, "detection", lambda values: DetectionSettings.from_params(values, "predict.detection"))
        require_choice(self.mode, PREDICT_MODES, "predict.mode")
        require_range(self.batch_size, "predict.batch_size", at_least=1)

    @classmethod
    def from_params(cls, params: Mapping[str, Any], block: str = "predict") -> PredictSettings:
        return read_block(cls, params, block)


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
