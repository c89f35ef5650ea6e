"""The model card's figures, one section per task: gathered from the reports its evaluation wrote
(test metrics with bootstrap intervals, by group, calibration, the modes side by side, what
training decided), and the run's details."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from face_pipeline.parameters import EvaluationSettings, ModelCardSettings, RunSettings
from face_pipeline.scoring.bootstrap import bootstrap_interval
from face_pipeline.tasks import get_task

from .nodes import with_groups

logger = logging.getLogger(__name__)

# The headline metric of a task as the mean of one number per face, for its bootstrap interval.
PER_FACE: dict[str, Callable[[pd.DataFrame], np.ndarray]] = {
    "accuracy": lambda table: ((table["y_pred"] >= 0.5) == (table["y_true"] >= 0.5)).to_numpy(dtype=float),
    "mae": lambda table: (table["y_pred"] - table["y_true"]).abs().to_numpy(dtype=float),
}


def as_number(value: Any) -> float | None:
    """A plain float, or None for a missing value (NaN, None, not a number)."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if np.isnan(number) else number


def _interval(values: np.ndarray, settings: ModelCardSettings) -> tuple[float | None, float | None]:
    low, high = bootstrap_interval(values, settings.bootstrap_resamples, settings.confidence, settings.seed)
    return as_number(low), as_number(high)


def _per_face(predictions: pd.DataFrame, headline: str) -> np.ndarray | None:
    return PER_FACE[headline](predictions) if headline in PER_FACE and len(predictions) else None


def _groups(
    groups: pd.DataFrame,
    predictions: pd.DataFrame,
    headline: str,
    evaluation: EvaluationSettings,
    settings: ModelCardSettings,
) -> list[dict[str, Any]]:
    """One row per group of ``groups`` (the group metrics), with the headline's interval."""
    grouped = with_groups(predictions, evaluation.age_bands)
    per_face = _per_face(grouped, headline)
    rows = []
    for row in groups.to_dict("records"):
        members = (grouped[row["grouping"]].astype(str) == str(row["group"])).to_numpy()
        low, high = _interval(per_face[members], settings) if per_face is not None else (None, None)
        rows.append(
            {
                "grouping": str(row["grouping"]),
                "group": str(row["group"]),
                "count": int(row["count"]),
                headline: as_number(row.get(headline)),
                "low": low,
                "high": high,
                **{name: as_number(row[name]) for name in ANSWER_SCORES if name in row},
            }
        )
    return rows


def _modes(comparison: pd.DataFrame | None, headline: str) -> list[dict[str, Any]]:
    """The network, the head and their mix, overall and by group (``<task>.head_comparison``)."""
    if comparison is None or comparison.empty:
        return []
    columns = [name for name in (headline, "ece", "range_coverage", "range_width") if name in comparison]
    return [
        {
            "variant": str(row["variant"]),
            "grouping": str(row["grouping"]),
            "group": str(row["group"]),
            "count": int(row["count"]),
            **{name: as_number(row[name]) for name in columns},
        }
        for row in comparison.to_dict("records")
    ]


def evaluation_summary(
    metrics: dict[str, Any],
    group_metrics: pd.DataFrame,
    test_predictions: pd.DataFrame,
    head_comparison: pd.DataFrame | None,
    task: dict[str, Any],
    evaluation: dict[str, Any],
    model_card: dict[str, Any],
) -> dict[str, Any]:
    """A task's evaluation as the card shows it: the headline metric with its bootstrap interval
    (computed from the test predictions), the answers' scores, the same by group, the largest gaps,
    and the modes side by side."""
    spec = get_task(task["target"])
    settings = ModelCardSettings.from_params(model_card)
    groups = EvaluationSettings.from_params(evaluation)
    headline = spec.headline
    per_face = _per_face(test_predictions, headline)
    low, high = _interval(per_face, settings) if per_face is not None else (None, None)
    reported = metrics.get(headline)
    if per_face is not None and reported is not None and not np.isclose(per_face.mean(), reported):
        logger.warning(
            "%s: the test predictions give %s %.4f, the metrics report %.4f: the two files are from different runs",
            spec.name,
            headline,
            per_face.mean(),
            reported,
        )
    return {
        "task": spec.name,
        "headline": headline,
        "higher_is_better": spec.higher_is_better,
        "images": int(metrics.get("images", len(test_predictions))),
        "value": as_number(metrics.get(headline)),
        "low": low,
        "high": high,
        "scores": {name: as_number(metrics[name]) for name in (*ANSWER_SCORES, *OTHER_SCORES) if name in metrics},
        "calibration": metrics.get("calibration") or {},
        "gaps": metrics.get("largest_group_gap") or {},
        "groups": _groups(group_metrics, test_predictions, headline, groups, settings),
        "modes": _modes(head_comparison, headline),
        "min_group_size": groups.min_group_size,
        "confidence": settings.confidence,
    }


def summarise_for_card(
    metrics: dict[str, Any],
    group_metrics: pd.DataFrame,
    test_predictions: pd.DataFrame,
    head_comparison: pd.DataFrame,
    training_decisions: dict[str, Any],
    head_decisions: dict[str, Any],
    combination: dict[str, Any],
    task: dict[str, Any],
    model: dict[str, Any],
    evaluation: dict[str, Any],
    model_card: dict[str, Any],
) -> dict[str, Any]:
    """One task's section of the card: its evaluation on the test split and what its training decided."""
    summary = evaluation_summary(
        metrics, group_metrics, test_predictions, head_comparison, task, evaluation, model_card
    )
    return {
        **summary,
        "scope": "test",
        "model": {
            "architecture": model.get("architecture"),
            "loss": model.get("loss") or get_task(task["target"]).default_loss,
            "mirror_average": bool(model.get("mirror_average")),
            "decisions": {key: training_decisions[key] for key in DECISIONS_SHOWN if key in training_decisions},
            "head": dict(head_decisions),
            "head_weight": as_number(combination.get("head_weight")),
        },
    }


def summarise_folder_for_card(
    metrics: dict[str, Any],
    group_metrics: pd.DataFrame,
    test_predictions: pd.DataFrame,
    head_comparison: pd.DataFrame,
    data_summary: dict[str, Any],
    task: dict[str, Any],
    ingestion: dict[str, Any],
    evaluation: dict[str, Any],
    model_card: dict[str, Any],
) -> dict[str, Any]:
    """One task's figures on another labelled folder (``evaluate_folder``), for the card's cross-dataset part."""
    summary = evaluation_summary(
        metrics, group_metrics, test_predictions, head_comparison, task, evaluation, model_card
    )
    return {
        **summary,
        "scope": "external",
        "folder": Path(str(ingestion.get("raw_dir", ""))).name or "another folder",
        "rejected": int(data_summary.get("rejected", 0)),
    }


def describe_run(run: dict[str, Any], **task_models: dict[str, Any]) -> dict[str, Any]:
    """The MLflow run writing the card (id, name, start, the tags ``git_commit`` and ``profile`` the
    project's hook set) or, outside MLflow, the work tree's commit and the time now. ``run`` is the
    ``run`` block, ``task_models`` each task's ``model`` block (what the profile is named after):
    only those, so that kedro-mlflow logs no parameter twice."""
    import mlflow  # noqa: PLC0415

    from face_pipeline.ops.tracking import git_commit  # noqa: PLC0415
    from face_pipeline.parameters import profile_name  # noqa: PLC0415

    active = mlflow.active_run()
    details = {
        "profile": profile_name({"run": run, **{task: {"model": model} for task, model in task_models.items()}}),
        "note": RunSettings.from_params(run or {}).note,
        "run_id": None,
        "run_name": None,
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "git_commit": None,
    }
    if active is not None:
        logged = mlflow.get_run(active.info.run_id)  # the tags set since the run started
        details |= {
            "run_id": logged.info.run_id,
            "run_name": logged.data.tags.get("mlflow.runName") or logged.info.run_name,
            "date": datetime.fromtimestamp(logged.info.start_time / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "git_commit": logged.data.tags.get("git_commit"),
        }
    details["git_commit"] = details["git_commit"] or git_commit(Path.cwd())
    return details


# The answers' figures the card shows where a task has them (calibration, ranges).
ANSWER_SCORES = (
    "ece_uncalibrated",
    "ece",
    "accuracy_at_90_coverage",
    "uncertain_share",
    "accuracy_when_certain",
    "range_coverage",
    "range_width",
)


GROUP_SCORES = ("ece", "uncertain_share", "accuracy_when_certain", "range_coverage", "range_width")


OTHER_SCORES = ("roc_auc", "f1", "log_loss", "rmse", "median_ae", "cs_at_5", "mean_signed_error")


DECISIONS_SHOWN = (
    "precision",
    "downsample",
    "planned_epochs",
    "plan",
    "epochs_run",
    "epoch_kept",
    "epoch_kept_because",
    "parameters",
    "threads",
    "distribution_strategy",
    "resumed_from_backup",
)
