"""A task's ``training`` block as a typed, frozen object, read once and checked key by key."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from face_pipeline.config import read_block, require_choice, require_range
from face_pipeline.models import PRECISIONS

LR_SCHEDULES = ("constant", "cosine", "plateau")


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
