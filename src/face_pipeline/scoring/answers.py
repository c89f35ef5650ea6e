"""Each task's answer as the prediction table holds it (calibrated columns: gender, P(female),
whether to doubt it, age and its range) and as people read it (the command's words, a picture's label)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from face_pipeline.labels import AGE_BINS, GENDERS
from face_pipeline.scoring.calibration import (
    age_range,
    confidence,
    scale_temperature,
)


def served_output(outputs: Mapping[str, np.ndarray]) -> np.ndarray:
    """The one value per image among a network's outputs (``network_outputs``), not its distribution."""
    return next(values for values in outputs.values() if np.ndim(values) == 1)


def distribution_output(outputs: Mapping[str, np.ndarray]) -> np.ndarray | None:
    """The distribution (several values per image) among a network's outputs, if it has one."""
    return next((values for values in outputs.values() if np.ndim(values) == 2), None)


def calibrated_gender(probability: np.ndarray, calibration: Mapping[str, Any]) -> np.ndarray:

    return scale_temperature(probability, calibration.get("temperature", 1.0))


def gender_uncertain(female_probability: np.ndarray, calibration: Mapping[str, Any]) -> np.ndarray:
    """Faces whose answer is less likely than ``uncertain_below`` to be right (none without a calibration)."""

    return confidence(female_probability) < float(calibration.get("uncertain_below", 0.0))


def gender_columns(outputs: Mapping[str, np.ndarray], calibration: Mapping[str, Any]) -> dict[str, np.ndarray]:
    # Rounded first, so that the flag agrees with the probability the user reads.
    female_probability = np.round(calibrated_gender(np.asarray(served_output(outputs), np.float64), calibration), 4)
    return {
        "gender": np.where(female_probability >= 0.5, GENDERS[1], GENDERS[0]).astype(object),
        "female_probability": female_probability,
        "gender_uncertain": gender_uncertain(female_probability, calibration),
    }


def is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA


def gender_text(row: Mapping[str, Any]) -> str | None:
    """``female (P(female) 0.64, uncertain)``."""
    if is_missing(row.get("gender")):
        return None
    doubt = ", uncertain" if not is_missing(row.get("gender_uncertain")) and bool(row["gender_uncertain"]) else ""
    return f"{row['gender']} (P(female) {float(row['female_probability']):.2f}{doubt})"


def gender_label(row: Mapping[str, Any]) -> str | None:
    """``F 0.97``: the initial (``?`` after it when uncertain) and the probability of that answer."""
    if is_missing(row.get("gender")):
        return None
    probability = float(row["female_probability"])
    answered = probability if row["gender"] == "female" else 1 - probability
    doubt = "?" if not is_missing(row.get("gender_uncertain")) and bool(row["gender_uncertain"]) else ""
    return f"{str(row['gender'])[0].upper()}{doubt} {answered:.2f}"


def age_text(row: Mapping[str, Any], short: bool = False) -> str | None:
    """``age 28.6 (20-38)`` (``short``: ``29 (20-38)``)."""
    if is_missing(row.get("age")):
        return None
    text = f"{float(row['age']):.0f}" if short else f"age {float(row['age']):.1f}"
    if not is_missing(row.get("age_low")) and not is_missing(row.get("age_high")):
        text += f" ({float(row['age_low']):.0f}-{float(row['age_high']):.0f})"
    return text


def age_columns(outputs: Mapping[str, np.ndarray], calibration: Mapping[str, Any]) -> dict[str, np.ndarray]:

    years = np.asarray(served_output(outputs), dtype=np.float64)
    low, high = age_range(years, distribution_output(outputs), AGE_BINS, calibration)
    return {"age": np.round(np.clip(years, 0, None), 1), "age_low": low, "age_high": high}
