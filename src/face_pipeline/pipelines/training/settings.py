"""A task's ``training`` and ``calibration`` blocks as typed, frozen objects, read once and checked key by key."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from face_pipeline.config import ConfigError, read_block, require_choice, require_range
from face_pipeline.modelling.precision import PRECISIONS

LR_SCHEDULES = ("constant", "cosine", "plateau")
CALIBRATION_METHODS = ("temperature", "none")


@dataclass(frozen=True)
class TrainingSettings:
    """``<task>.training`` in ``conf/base/parameters_train_<task>.yml`` (see its comments)."""

    epochs: int
    batch_size: int
    learning_rate: float
    lr_schedule: str = "constant"
    warmup_epochs: float = 0
    early_stopping_patience: int = 0
    early_stopping_start_epoch: int = 0
    batch_norm_recalibration: int = 0
    time_budget_minutes: float | None = None
    seed: int = 42
    deterministic: bool = False
    threads: int | None = None
    precision: str = "float32"
    backup_dir: str | None = None

    @classmethod
    def from_params(cls, params: dict[str, Any], block: str) -> TrainingSettings:
        settings = read_block(cls, params, block)
        require_choice(settings.lr_schedule, LR_SCHEDULES, f"{block}.lr_schedule")
        require_choice(settings.precision, sorted(PRECISIONS), f"{block}.precision")
        for key in ("epochs", "batch_size"):
            require_range(getattr(settings, key), f"{block}.{key}", at_least=1)
        require_range(settings.learning_rate, f"{block}.learning_rate", above=0)
        return settings

    def for_planned_epochs(self, epochs: int) -> TrainingSettings:
        """The same run over ``epochs`` epochs: early stopping's start scaled alike."""
        if epochs == self.epochs:
            return self
        return replace(
            self, epochs=epochs, early_stopping_start_epoch=self.early_stopping_start_epoch * epochs // self.epochs
        )

    def resume_key(self) -> dict[str, Any]:
        """What must be equal for a run to resume another's backup (all but where the backup is)."""
        return {key: value for key, value in asdict(self).items() if key != "backup_dir"}


@dataclass(frozen=True)
class CalibrationSettings:
    """``<task>.calibration`` in ``conf/base/parameters_train_<task>.yml``: what is fitted on the
    validation split after training. Each task reads the keys it needs: a probability's
    ``method`` and ``uncertain_below`` (gender), a range's ``level`` and ``bands`` (age)."""

    method: str | None = None
    uncertain_below: float | None = None
    level: float | None = None
    bands: list[float] | None = None
    batch_size: int = 256

    @classmethod
    def from_params(cls, params: dict[str, Any], block: str) -> CalibrationSettings:
        settings = read_block(cls, params, block)
        if settings.method is not None:
            require_choice(settings.method, CALIBRATION_METHODS, f"{block}.method")
        if settings.uncertain_below is not None:
            require_range(settings.uncertain_below, f"{block}.uncertain_below", at_least=0.5, below=1)
        if settings.level is not None:
            require_range(settings.level, f"{block}.level", above=0, below=1)
        if settings.bands is not None and list(settings.bands) != sorted(set(settings.bands)):
            raise ConfigError(f"{block}.bands must be increasing ages; got {settings.bands!r}")
        require_range(settings.batch_size, f"{block}.batch_size", at_least=1)
        return settings

    def for_task(self) -> dict[str, Any]:
        """The keys that were set, as ``Task.calibrate`` reads them."""
        return {key: value for key, value in asdict(self).items() if value is not None and key != "batch_size"}


@dataclass(frozen=True)
class HeadSettings:
    """``<task>.head`` in ``conf/base/parameters_train_<task>.yml``: the embedding head and its training."""

    hidden_units: int = 256
    dropout: float = 0.3
    epochs: int = 100
    batch_size: int = 256
    learning_rate: float = 0.001
    early_stopping_patience: int = 10
    seed: int = 42

    @classmethod
    def from_params(cls, params: dict[str, Any], block: str) -> HeadSettings:
        settings = read_block(cls, params, block)
        for key in ("hidden_units", "epochs", "batch_size"):
            require_range(getattr(settings, key), f"{block}.{key}", at_least=1)
        require_range(settings.dropout, f"{block}.dropout", at_least=0, below=1)
        require_range(settings.learning_rate, f"{block}.learning_rate", above=0)
        return settings
