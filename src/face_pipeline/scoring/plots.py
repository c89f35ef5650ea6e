"""The evaluation's figures of each task: confusion matrix, reliability, risk and coverage, ROC,
age ranges, predicted against true age (matplotlib imported where a figure is drawn)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from face_pipeline.labels import GENDERS
from face_pipeline.scoring.calibration import (
    ECE_BINS,
    reliability_table,
    risk_coverage,
)

if TYPE_CHECKING:
    import matplotlib.pyplot as plt


def plot_confusion_matrix(predictions: pd.DataFrame, report: dict[str, Any]) -> plt.Figure:
    import matplotlib.pyplot as plt  # noqa: PLC0415

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


def plot_reliability(predictions: pd.DataFrame, report: dict[str, Any]) -> plt.Figure:
    """Accuracy against confidence per bin, before and after calibration (the diagonal is perfect)."""
    import matplotlib.pyplot as plt  # noqa: PLC0415

    figure, axis = plt.subplots(figsize=(4.5, 4.5))
    axis.plot([0.5, 1], [0.5, 1], linestyle="--", color="grey", label="perfectly calibrated")
    for column, name, key in (("y_pred_uncalibrated", "network", "ece_uncalibrated"), ("y_pred", "calibrated", "ece")):
        table = reliability_table(predictions["y_true"], predictions[column], ECE_BINS)
        table = table[table["count"] > 0]
        ece = report.get(key)
        label = f"{name} (ECE {ece:.3f})" if ece is not None else name
        axis.plot(table["confidence"], table["accuracy"], marker="o", label=label)
    axis.set_xlim(0.5, 1)
    axis.set_ylim(0, 1.02)
    axis.set_xlabel("confidence of the answer")
    axis.set_ylabel("accuracy")
    axis.set_title(f"Gender reliability ({ECE_BINS} bins)")
    axis.legend(loc="lower right")
    figure.tight_layout()
    return figure


def plot_risk_coverage(predictions: pd.DataFrame, report: dict[str, Any]) -> plt.Figure:
    """Accuracy on the answered faces against the share answered, most confident first."""
    import matplotlib.pyplot as plt  # noqa: PLC0415

    curve = risk_coverage(predictions["y_true"], predictions["y_pred"])
    figure, axis = plt.subplots(figsize=(4.5, 3.6))
    axis.plot(curve["coverage"], curve["accuracy"])
    at_90 = report.get("accuracy_at_90_coverage")
    if at_90 is not None:
        axis.scatter([0.9], [at_90], color="black", zorder=3, label=f"90 % answered: {at_90:.3f}")
        axis.legend(loc="lower left")
    axis.set_xlim(0, 1)
    axis.set_xlabel("share of faces answered (most confident first)")
    axis.set_ylabel("accuracy on the answered faces")
    axis.set_title("Gender risk-coverage")
    axis.grid(alpha=0.3)
    figure.tight_layout()
    return figure


def plot_roc_curve(predictions: pd.DataFrame, report: dict[str, Any]) -> plt.Figure:
    import matplotlib.pyplot as plt  # noqa: PLC0415
    from sklearn import metrics as skm  # noqa: PLC0415

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


def plot_age_ranges(predictions: pd.DataFrame, report: dict[str, Any]) -> plt.Figure:
    """Each face's range against its true age: inside in blue, missed in red."""
    import matplotlib.pyplot as plt  # noqa: PLC0415

    figure, axis = plt.subplots(figsize=(5, 4.5))
    sample = predictions.sample(min(len(predictions), 400), random_state=0)
    inside = (sample["y_true"] >= sample["age_low"]) & (sample["y_true"] <= sample["age_high"])
    for mask, color, label in ((inside, "tab:blue", "inside"), (~inside, "tab:red", "missed")):
        rows = sample[mask]
        axis.vlines(rows["y_true"], rows["age_low"], rows["age_high"], color=color, alpha=0.35, label=label)
    top = max(float(predictions["y_true"].max()), float(predictions["age_high"].max(skipna=True) or 0), 1) * 1.05
    axis.plot([0, top], [0, top], linestyle="--", color="grey")
    axis.set_xlabel("true age (years)")
    axis.set_ylabel("predicted range (years)")
    coverage, width = report.get("range_coverage"), report.get("range_width")
    title = "Age ranges"
    if coverage is not None:
        title += f": {coverage:.1%} inside, {width:.1f} years wide on average"
    axis.set_title(title, fontsize=10)
    axis.legend(loc="upper left")
    figure.tight_layout()
    return figure


def plot_predicted_vs_true(predictions: pd.DataFrame, report: dict[str, Any]) -> plt.Figure:
    import matplotlib.pyplot as plt  # noqa: PLC0415

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
