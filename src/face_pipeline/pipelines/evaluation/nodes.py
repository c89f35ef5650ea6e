"""Evaluation: predictions on held-out images, metrics, per-group breakdowns and plots."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from face_pipeline.inference.batching import network_outputs
from face_pipeline.labels import GENDERS, RACES
from face_pipeline.parameters import EvaluationSettings
from face_pipeline.pipelines.ingestion.nodes import age_bands
from face_pipeline.scoring.answers import served_output
from face_pipeline.scoring.scores import age_scores, gender_scores
from face_pipeline.tasks import get_task

__all__ = ["age_scores", "gender_scores"]  # the tasks' scores, where evaluation's readers look for them

logger = logging.getLogger(__name__)

GROUPINGS = ("age_band", "gender", "race")


def predict(
    model,
    calibration: dict[str, Any],
    images: np.ndarray,
    labels: pd.DataFrame,
    task: dict[str, Any],
    batch_size: int = 256,
) -> pd.DataFrame:
    """One row per image: its labels, the target and the model's prediction, as users get it.

    ``y_pred`` is the served prediction once calibrated (``Task.calibrated``): for gender the
    probability of "female", for age years; ``y_pred_uncalibrated`` the network's own. The
    task's other prediction columns follow (``gender_uncertain``, ``age_low``, ``age_high``).
    """
    return prediction_rows(network_outputs(model, images, batch_size), calibration, labels, task)


def prediction_rows(
    outputs: dict[str, np.ndarray], calibration: dict[str, Any], labels: pd.DataFrame, task: dict[str, Any]
) -> pd.DataFrame:
    """``predict``'s table from a network's outputs (``network_outputs``) on the images of ``labels``."""
    spec = get_task(task["target"])
    network_prediction = served_output(outputs).astype(float)
    table = labels[["image_id", "age", "gender", "race"]].reset_index(drop=True).copy()
    table["y_true"] = spec.targets(labels).astype(float)
    table["y_pred"] = np.asarray(spec.calibrated(network_prediction, calibration), dtype=float)
    table["y_pred_uncalibrated"] = network_prediction
    for name, values in spec.columns(outputs, calibration).items():
        if name not in table:  # the label columns keep their names (gender, age)
            table[name] = values
    return table


# ---- metrics ---------------------------------------------------------------------------


def score(table: pd.DataFrame, target: str) -> dict[str, Any]:
    """The task's scores of the predictions, then those of the answers built on them (``Task.answer_scores``)."""
    spec = get_task(target)
    return {**spec.scores(table["y_true"].to_numpy(), table["y_pred"].to_numpy()), **spec.answer_scores(table)}


def with_groups(predictions: pd.DataFrame, age_band_edges: Sequence[int]) -> pd.DataFrame:
    """Add the group columns reports break results down by; unknown race is its own group."""
    return predictions.assign(
        age_band=age_bands(predictions["age"], age_band_edges).astype(str),
        gender=predictions["gender"].map(dict(enumerate(GENDERS))),
        race=predictions["race"].map(dict(enumerate(RACES)), na_action="ignore").astype(object).fillna("unknown"),
    )


def breakdown(predictions: pd.DataFrame, task: dict[str, Any], evaluation: dict[str, Any]) -> pd.DataFrame:
    """Scores per age band, gender and race: one row per group."""
    grouped = with_groups(predictions, EvaluationSettings.from_params(evaluation).age_bands)
    rows = []
    for grouping in GROUPINGS:
        for group, members in grouped.groupby(grouping, sort=True):
            scores = score(members, task["target"])
            scores.pop("confusion_matrix", None)
            rows.append({"grouping": grouping, "group": group, **scores})
    return pd.DataFrame(rows)


def fairness_gaps(groups: pd.DataFrame, task: dict[str, Any], min_count: int) -> dict[str, Any]:
    """For each grouping, the largest difference in the headline metric between two groups.

    Groups with fewer than ``min_count`` images are left out: their scores are noise.
    """
    spec = get_task(task["target"])
    metric = spec.headline
    gaps = {}
    for grouping, members in groups.groupby("grouping"):
        rows = members[(members["count"] >= min_count) & members[metric].notna()]
        if len(rows) < 2:
            continue
        best, worst = (rows.loc[rows[metric].idxmax()], rows.loc[rows[metric].idxmin()])
        if not spec.higher_is_better:
            best, worst = worst, best
        gaps[grouping] = {
            "metric": metric,
            "gap": float(abs(best[metric] - worst[metric])),
            "best_group": best["group"],
            "worst_group": worst["group"],
        }
    return gaps


def evaluate(
    predictions: pd.DataFrame,
    groups: pd.DataFrame,
    calibration: dict[str, Any],
    task: dict[str, Any],
    evaluation: dict[str, Any],
) -> dict:
    """Overall scores, the calibration they were made with and the fairness summary, as saved to
    ``08_reporting/<task>_metrics.json``."""
    overall = score(predictions, task["target"])
    report = {
        "task": task["target"],
        "images": len(predictions),
        **overall,
        "calibration": calibration,
        "largest_group_gap": fairness_gaps(groups, task, EvaluationSettings.from_params(evaluation).min_group_size),
    }
    logger.info(
        "%s on %d test images: %s",
        task["target"],
        len(predictions),
        ", ".join(f"{k}={v:.4f}" for k, v in overall.items() if isinstance(v, float)),
    )
    return report


def metrics_for_mlflow(report: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Every number of the report as an MLflow metric ``test_<name>`` (``test_gap_<grouping>`` for gaps)."""
    metrics = {
        f"test_{name}": {"value": float(value), "step": 0}
        for name, value in report.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool) and name not in ("images", "count")
    }
    for grouping, gap in report["largest_group_gap"].items():
        metrics[f"test_gap_{grouping}"] = {"value": gap["gap"], "step": 0}
    return metrics


# ---- plots -----------------------------------------------------------------------------


def plot_task(predictions: pd.DataFrame, report: dict[str, Any], task: dict[str, Any], plot: str) -> plt.Figure:
    """The task's own plot named ``plot`` (``Task.plots``), e.g. gender's confusion matrix."""
    return get_task(task["target"]).plots[plot](predictions, report)


def plot_group_metric(groups: pd.DataFrame, task: dict[str, Any], grouping: str) -> plt.Figure:
    metric = get_task(task["target"]).headline
    rows = groups[groups["grouping"] == grouping]
    figure, axis = plt.subplots(figsize=(5, 3.2))
    bars = axis.bar(rows["group"].astype(str), rows[metric].fillna(0))
    axis.bar_label(bars, labels=[f"n={n}" for n in rows["count"]], fontsize=8)
    axis.set_ylabel(metric)
    axis.set_title(f"{task['target']} {metric} by {grouping.replace('_', ' ')}")
    axis.tick_params(axis="x", rotation=20)
    figure.tight_layout()
    return figure


def plot_worst_faces(
    predictions: pd.DataFrame, images: np.ndarray, task: dict[str, Any], count: int = 16
) -> plt.Figure:
    """The test faces the model got most wrong, with true and predicted labels."""
    target = task["target"]
    error = (predictions["y_pred"] - predictions["y_true"]).abs()
    worst = error.sort_values(ascending=False).index[:count]
    columns = 4
    rows = max(1, -(-len(worst) // columns))
    figure, axes = plt.subplots(rows, columns, figsize=(2.2 * columns, 2.5 * rows), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for axis, index in zip(axes.flat, worst, strict=False):
        image = np.asarray(images[index])
        axis.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=255)
        true, pred = predictions.at[index, "y_true"], predictions.at[index, "y_pred"]
        axis.set_title(get_task(target).describe_prediction(true, pred), fontsize=8)
    figure.suptitle(f"Worst {target} predictions on the test split")
    figure.tight_layout()
    return figure
