"""A task's network and its embedding head, mixed: the weight fitted on the validation split.

The mix is a weighted mean of the two answers, output by output: gender's probabilities, age's
years and, where both have one, their distributions over the years (so the age range still
comes from a distribution). The weight is the one, on a grid from 0 (the network alone) to 1
(the head alone), that scores best on the validation split (log loss where the task has one,
else its headline score); the mix is then calibrated on the same faces, as the network alone is.
NumPy only: prediction workers import it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from face_pipeline.scoring.answers import distribution_output, served_output
from face_pipeline.tasks import Task

WEIGHT_GRID = np.round(np.linspace(0, 1, 21), 2)


def combine_outputs(
    network: Mapping[str, np.ndarray], head: Mapping[str, np.ndarray], head_weight: float
) -> dict[str, np.ndarray]:
    """``network``'s outputs (``predict.network_outputs``) mixed with ``head``'s, output by output.

    Outputs are matched by shape (one value per face; a distribution). A distribution only one
    of them has is dropped: the mix has one only where both do.
    """
    head_distribution = distribution_output(head)
    combined = {}
    for name, values in network.items():
        if np.ndim(values) == 1:
            other = next(v for v in head.values() if np.ndim(v) == 1)
        elif head_distribution is not None and np.shape(head_distribution) == np.shape(values):
            other = head_distribution
        else:
            continue
        combined[name] = (1 - head_weight) * np.asarray(values, np.float64) + head_weight * np.asarray(
            other, np.float64
        )
    return combined


def mix_score(task: Task, targets: np.ndarray, outputs: Mapping[str, np.ndarray]) -> float:
    """The number the weight is chosen by, lower is better: log loss, or the headline score."""
    scores = task.scores(targets, served_output(outputs))
    if scores.get("log_loss") is not None:
        return float(scores["log_loss"])
    return -float(scores[task.headline]) if task.higher_is_better else float(scores[task.headline])


def fit_combination(
    task: Task,
    network: Mapping[str, np.ndarray],
    head: Mapping[str, np.ndarray],
    targets: np.ndarray,
    calibration: Mapping[str, Any],
) -> dict[str, Any]:
    """The head's weight (``WEIGHT_GRID``) and the mix's calibration (``Task.calibrate`` with the
    task's ``calibration`` settings), from the validation faces' outputs and labels."""
    scores = {float(weight): mix_score(task, targets, combine_outputs(network, head, weight)) for weight in WEIGHT_GRID}
    head_weight = min(scores, key=scores.get)
    mixed = combine_outputs(network, head, head_weight)
    return {
        "head_weight": head_weight,
        "validation_scores": {f"{weight:.2f}": round(score, 5) for weight, score in scores.items()},
        "calibration": task.calibrate(mixed, targets, calibration),
    }
