"""Evaluation: predictions on held-out images, metrics, per-group breakdowns and plots."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn import metrics as skm

from face_pipeline.pipelines.ingestion.nodes import GENDERS, RACES, age_bands
from face_pipeline.predict import predict_in_batches

logger = logging.getLogger(__name__)

GROUPINGS = ("age_band", "gender", "race")


def predict(
    model, images: np.ndarray, labels: pd.DataFrame, task: dict[str, Any], batch_size: int = 256
) -> pd.DataFrame:
    """One row per image: its labels, the target and the model's prediction.

    For gender the prediction is the probability of "female"; for age, years.
    """
    predictions = predict_in_batches(model, images, batch_size)
    table = labels[["image_id", "age", "gender", "race"]].reset_index(drop=True).copy()
    table["y_true"] = labels[task["target"]].to_numpy(dtype=float)
    table["y_pred"] = predictions.astype(float)
    return table


# ---- metrics ---------------------------------------------------------------------------


def gender_scores(y_true: np.ndarray, probability: np.ndarray, threshold: float = 0.5) -> dict[str, Any]:
    """Classification scores; AUC and log loss are None when only one class is present."""
    y_true = np.asarray(y_true, dtype=int)
    y_pred = (np.asarray(probability) >= threshold).astype(int)
    both_classes = len(np.unique(y_true)) == 2
    clipped = np.clip(probability, 1e-7, 1 - 1e-7)
    return {
        "count": len(y_true),
        "accuracy": float(skm.accuracy_score(y_true, y_pred)) if len(y_true) else None,
        "precision": float(skm.precision_score(y_true, y_pred, zero_division=0)),
        "recall": float(skm.recall_score(y_true, y_pred, zero_division=0)),
        "f1": float(skm.f1_score(y_true, y_pred, zero_division=0)),
        "roc_auc": float(skm.roc_auc_score(y_true, probability)) if both_classes else None,
        "log_loss": float(skm.log_loss(y_true, clipped, labels=[0, 1])) if len(y_true) else None,
        "confusion_matrix": skm.confusion_matrix(y_true, y_pred, labels=[0, 1]).tolist(),
    }


def age_scores(y_true: np.ndarray, y_pred: np.ndarray, tolerance: float = 5.0) -> dict[str, Any]:
    """Regression scores in years; ``cs_at_5`` is the share within ``tolerance`` years."""
    y_true, y_pred = np.asarray(y_true, dtype=float), np.asarray(y_pred, dtype=float)
    if not len(y_true):
        return {
            "count": 0,
            "mae": None,
            "rmse": None,
            "median_ae": None,
            "cs_at_5": None,
            "pearson_r": None,
            "mean_signed_error": None,
        }
    error = y_pred - y_true
    varied = y_true.std() > 0 and y_pred.std() > 0
    return {
        "count": len(y_true),
        "mae": float(np.abs(error).mean()),
        "rmse": float(np.sqrt((error**2).mean())),
        "median_ae": float(np.median(np.abs(error))),
        "cs_at_5": float((np.abs(error) <= tolerance).mean()),
        "pearson_r": float(np.corrcoef(y_true, y_pred)[0, 1]) if varied else None,
        "mean_signed_error": float(error.mean()),
    }


def score(table: pd.DataFrame, target: str) -> dict[str, Any]:
    if target == "gender":
        return gender_scores(table["y_true"].to_numpy(), table["y_pred"].to_numpy())
    return age_scores(table["y_true"].to_numpy(), table["y_pred"].to_numpy())


def with_groups(predictions: pd.DataFrame, age_band_edges: Sequence[int]) -> pd.DataFrame:
    """Add the group columns reports break results down by; unknown race is its own group."""
    return predictions.assign(
        age_band=age_bands(predictions["age"], age_band_edges).astype(str),
        gender=predictions["gender"].map(dict(enumerate(GENDERS))),
        race=predictions["race"].map(dict(enumerate(RACES)), na_action="ignore").astype(object).fillna("unknown"),
    )


HEADLINE = {"gender": "accuracy", "age": "mae"}


def breakdown(predictions: pd.DataFrame, task: dict[str, Any], evaluation: dict[str, Any]) -> pd.DataFrame:
    """Scores per age band, gender and race: one row per group."""
    grouped = with_groups(predictions, evaluation["age_bands"])
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
    metric = HEADLINE[task["target"]]
    gaps = {}
    for grouping, members in groups.groupby("grouping"):
        rows = members[(members["count"] >= min_count) & members[metric].notna()]
        if len(rows) < 2:
            continue
        best, worst = (rows.loc[rows[metric].idxmax()], rows.loc[rows[metric].idxmin()])
        if metric == "mae":
            best, worst = worst, best
        gaps[grouping] = {
            "metric": metric,
            "gap": float(abs(best[metric] - worst[metric])),
            "best_group": best["group"],
            "worst_group": worst["group"],
        }
    return gaps


def evaluate(predictions: pd.DataFrame, groups: pd.DataFrame, task: dict[str, Any], evaluation: dict[str, Any]) -> dict:
    """Overall scores and the fairness summary, as saved to ``08_reporting/<task>_metrics.json``."""
    overall = score(predictions, task["target"])
    report = {
        "task": task["target"],
        "images": len(predictions),
        **overall,
        "largest_group_gap": fairness_gaps(groups, task, evaluation["min_group_size"]),
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


def plot_confusion_matrix(report: dict[str, Any]) -> plt.Figure:
    matrix = np.asarray(report["confusion_matrix"])
    figure, axis = plt.subplots(figsize=(4, 3.6))
    axis.imshow(matrix, cmap="Blues")
    for (row, column), count in np.ndenumerate(matrix):
        color = "white" if count > matrix.max() / 2 else "black"
        axis.text(column, row, f"{count}", ha="center", va="center", color=color, fontsize=12)
    axis.set_xticks([0, 1], GENDERS)
    axis.set_yticks([0, 1], GENDERS)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    axis.set_title(f"Gender confusion matrix (accuracy {report['accuracy']:.3f})")
    figure.tight_layout()
    return figure


def plot_roc_curve(predictions: pd.DataFrame, report: dict[str, Any]) -> plt.Figure:
    figure, axis = plt.subplots(figsize=(4, 4))
    if predictions["y_true"].nunique() == 2:
        false_positive, true_positive, _ = skm.roc_curve(predictions["y_true"], predictions["y_pred"])
        axis.plot(false_positive, true_positive, label=f"AUC {report['roc_auc']:.3f}")
    axis.plot([0, 1], [0, 1], linestyle="--", color="grey", label="chance")
    axis.set_xlabel("false positive rate (male called female)")
    axis.set_ylabel("true positive rate (female called female)")
    axis.set_title("Gender ROC curve")
    axis.legend(loc="lower right")
    figure.tight_layout()
    return figure


def plot_predicted_vs_true(predictions: pd.DataFrame, report: dict[str, Any]) -> plt.Figure:
    figure, axis = plt.subplots(figsize=(4.5, 4.5))
    axis.scatter(predictions["y_true"], predictions["y_pred"], s=4, alpha=0.3)
    top = max(predictions["y_true"].max(), predictions["y_pred"].max(), 1) * 1.05
    axis.plot([0, top], [0, top], linestyle="--", color="grey")
    axis.set_xlim(0, top)
    axis.set_ylim(0, top)
    axis.set_xlabel("true age (years)")
    axis.set_ylabel("predicted age (years)")
    axis.set_title(f"Age: MAE {report['mae']:.2f} years")
    figure.tight_layout()
    return figure


def plot_group_metric(groups: pd.DataFrame, task: dict[str, Any], grouping: str) -> plt.Figure:
    metric = HEADLINE[task["target"]]
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
        if target == "gender":
            label = f"true {GENDERS[int(true)]}\nP(female) {pred:.2f}"
        else:
            label = f"true {true:.0f}, predicted {pred:.0f}"
        axis.set_title(label, fontsize=8)
    figure.suptitle(f"Worst {target} predictions on the test split")
    figure.tight_layout()
    return figure
