"""Scores of each task's answers: classification scores for gender, error and tolerance scores for age."""

from __future__ import annotations

from typing import Any

import numpy as np


def gender_scores(y_true: np.ndarray, probability: np.ndarray, threshold: float = 0.5) -> dict[str, Any]:
    """Classification scores; AUC and log loss are None when only one class is present."""
    from sklearn import metrics as skm  # noqa: PLC0415

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
    names = ("mae", "rmse", "median_ae", "cs_at_5", "pearson_r", "mean_signed_error")
    if not len(y_true):
        return {"count": 0, **dict.fromkeys(names)}
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
