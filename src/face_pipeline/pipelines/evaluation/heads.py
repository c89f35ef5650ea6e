"""The network, the embedding head and their mix, side by side on the same test faces, by group."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from face_pipeline.inference.batching import network_outputs
from face_pipeline.modelling.combination import combine_outputs
from face_pipeline.pipelines.embeddings.nodes import with_embeddings

from .nodes import breakdown, prediction_rows, score

VARIANTS = ("network", "head", "combined")


def compare_with_head(
    model,
    calibration: dict[str, Any],
    head,
    combination: dict[str, Any],
    images: np.ndarray,
    labels: pd.DataFrame,
    embeddings: pd.DataFrame,
    task: dict[str, Any],
    evaluation: dict[str, Any],
    batch_size: int = 256,
) -> tuple[pd.DataFrame, dict[str, dict[str, float]]]:
    """Scores of each variant (``VARIANTS``: the network as served, ``--mode fast``; the head alone,
    uncalibrated; their mix, ``--mode accurate``) overall and per age band, gender and race, on the
    test faces that have an embedding; and the overall ones as MLflow metrics ``test_<variant>_<score>``."""
    vectors, rows, usable = with_embeddings(embeddings, labels)
    network = network_outputs(model, np.asarray(images)[usable], batch_size)
    head_outputs = network_outputs(head, vectors, batch_size)
    variants = {
        "network": (network, calibration),
        "head": (head_outputs, {}),
        "combined": (combine_outputs(network, head_outputs, combination["head_weight"]), combination["calibration"]),
    }
    tables, metrics = [], {}
    for variant, (outputs, variant_calibration) in variants.items():
        predictions = prediction_rows(outputs, variant_calibration, rows, task)
        overall = {key: value for key, value in score(predictions, task["target"]).items() if key != "confusion_matrix"}
        tables.append(pd.DataFrame([{"grouping": "all", "group": "all", **overall}]).assign(variant=variant))
        tables.append(breakdown(predictions, task, evaluation).assign(variant=variant))
        metrics |= {
            f"test_{variant}_{name}": {"value": float(value), "step": 0}
            for name, value in overall.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool)
        }
    metrics["test_faces_without_embedding"] = {"value": float((~usable).sum()), "step": 0}
    table = pd.concat(tables, ignore_index=True)
    return table[["variant", *[column for column in table if column != "variant"]]], metrics
