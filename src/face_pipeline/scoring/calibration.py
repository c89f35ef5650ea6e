"""Answers a user can act on: calibrated probabilities, age ranges with a known coverage, when to doubt.

Everything here is fitted on the validation split after training and applied wherever a model
answers. NumPy and SciPy only: prediction workers import it without TensorFlow.

- **Temperature scaling** (Guo et al. 2017): a binary probability's logit divided by one number
  ``T`` fitted by log loss. It keeps every decision (the ranking and the 0.5 threshold are
  unchanged) and only makes the probability mean what it says.
- **Age ranges by split-conformal prediction** over the predicted distribution's central
  intervals (nested conformal, Gupta et al. 2022): the distribution's level ``beta`` is fitted so
  that the interval holds the true age of ``level`` of the validation faces, separately within
  each band of predicted age (Mondrian conformal); on new faces from the same population it then
  covers ``level`` of them in every band, whatever the network's own calibration. A network
  without a distribution gets a symmetric interval of the half-width fitted per band.
- **Expected calibration error** over 15 equal-width confidence bins (the top-label ECE of
  Guo et al.), reliability tables and the risk-coverage curve (accuracy of the most confident
  share of faces).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

ECE_BINS = 15
_EPSILON = 1e-7
# A band of predicted ages with fewer validation faces than this takes the range fitted on all:
# a conformal quantile of a few dozen scores would move with every face.
MIN_BAND_FACES = 50


def _logit(probability: np.ndarray) -> np.ndarray:
    probability = np.clip(np.asarray(probability, dtype=np.float64), _EPSILON, 1 - _EPSILON)
    return np.log(probability) - np.log1p(-probability)


def scale_temperature(probability: np.ndarray, temperature: float) -> np.ndarray:
    """``probability`` with its logit divided by ``temperature`` (1: unchanged)."""
    return 1.0 / (1.0 + np.exp(-_logit(probability) / float(temperature)))


def fit_temperature(y_true: np.ndarray, probability: np.ndarray) -> float:
    """The temperature that minimises the log loss of ``probability`` against the 0/1 labels ``y_true``."""
    from scipy.optimize import minimize_scalar  # noqa: PLC0415 - SciPy only when fitting

    y_true = np.asarray(y_true, dtype=np.float64)
    if len(np.unique(y_true)) < 2:
        raise ValueError("temperature scaling needs both classes among the validation labels")
    logits = _logit(probability)

    def log_loss(log_temperature: float) -> float:
        scaled = logits / math.exp(log_temperature)
        # log(1 + e^-z) for y = 1, log(1 + e^z) for y = 0, without overflow
        return float(np.mean(np.logaddexp(0.0, np.where(y_true == 1, -scaled, scaled))))

    found = minimize_scalar(log_loss, bounds=(math.log(0.05), math.log(20.0)), method="bounded")
    return float(math.exp(found.x))


def confidence(probability: np.ndarray) -> np.ndarray:
    """The probability of the answer given: ``max(p, 1 - p)`` of a binary probability ``p``."""
    probability = np.asarray(probability, dtype=np.float64)
    return np.maximum(probability, 1.0 - probability)


def reliability_table(y_true: np.ndarray, probability: np.ndarray, bins: int = ECE_BINS) -> pd.DataFrame:
    """Per equal-width confidence bin on [0, 1]: faces, mean confidence and accuracy of the answers."""
    y_true = np.asarray(y_true, dtype=np.float64)
    answer_confidence = confidence(probability)
    correct = (np.asarray(probability) >= 0.5) == (y_true == 1)
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(answer_confidence, edges[1:-1], right=True), 0, bins - 1)
    rows = []
    for bin_index in range(bins):
        members = index == bin_index
        count = int(members.sum())
        rows.append(
            {
                "bin_low": edges[bin_index],
                "bin_high": edges[bin_index + 1],
                "count": count,
                "confidence": float(answer_confidence[members].mean()) if count else np.nan,
                "accuracy": float(correct[members].mean()) if count else np.nan,
            }
        )
    return pd.DataFrame(rows)


def expected_calibration_error(y_true: np.ndarray, probability: np.ndarray, bins: int = ECE_BINS) -> float | None:
    """Mean gap between confidence and accuracy over the bins of ``reliability_table``, weighted by faces."""
    table = reliability_table(y_true, probability, bins)
    total = table["count"].sum()
    if not total:
        return None
    filled = table[table["count"] > 0]
    return float((filled["count"] * (filled["confidence"] - filled["accuracy"]).abs()).sum() / total)


def risk_coverage(y_true: np.ndarray, probability: np.ndarray) -> pd.DataFrame:
    """Answering only the most confident faces: for each share answered (``coverage``), the
    accuracy on those faces and the lowest confidence among them (the threshold that answers them)."""
    y_true = np.asarray(y_true, dtype=np.float64)
    answer_confidence = confidence(probability)
    order = np.argsort(-answer_confidence, kind="stable")
    correct = ((np.asarray(probability) >= 0.5) == (y_true == 1))[order]
    answered = np.arange(1, len(order) + 1)
    return pd.DataFrame(
        {
            "coverage": answered / max(len(order), 1),
            "accuracy": np.cumsum(correct) / answered,
            "threshold": answer_confidence[order],
        }
    )


def accuracy_at_coverage(y_true: np.ndarray, probability: np.ndarray, coverage: float = 0.9) -> float | None:
    """Accuracy on the ``coverage`` share of faces the model is most confident about."""
    curve = risk_coverage(y_true, probability)
    if curve.empty:
        return None
    answered = max(1, math.ceil(coverage * len(curve)))
    return float(curve["accuracy"].iloc[answered - 1])


def conformal_quantile(scores: np.ndarray, level: float) -> float:
    """The ``ceil((n + 1) * level)``-th smallest score: a new score from the same population is at
    most this with probability at least ``level`` (split-conformal prediction). Infinite when the
    scores are too few for the level."""
    scores = np.sort(np.asarray(scores, dtype=np.float64))
    rank = math.ceil((len(scores) + 1) * level)
    return float(scores[rank - 1]) if rank <= len(scores) else math.inf


# ---- age ranges ------------------------------------------------------------------------
# A distribution over consecutive whole years (bins) spreads each bin's probability evenly over
# [year - 0.5, year + 0.5]: its cumulative distribution is then continuous and piecewise linear,
# and a central interval holds an age exactly when the age's cumulative probability is inside.


def _normalised(distribution: np.ndarray) -> np.ndarray:
    distribution = np.asarray(distribution, dtype=np.float64)
    return distribution / distribution.sum(axis=1, keepdims=True)


def distribution_cdf(distribution: np.ndarray, bins: np.ndarray, ages: np.ndarray) -> np.ndarray:
    """Each row's cumulative probability at its age (``distribution[i]`` over the whole years ``bins``)."""
    distribution = _normalised(distribution)
    rows = np.arange(len(distribution))
    ages = np.asarray(ages, dtype=np.float64)
    year = np.clip(np.floor(ages - bins[0] + 0.5).astype(int), 0, len(bins) - 1)  # the bin holding the age
    below = np.cumsum(distribution, axis=1)[rows, year] - distribution[rows, year]
    within = np.clip(ages - (bins[year] - 0.5), 0.0, 1.0)
    return np.clip(below + distribution[rows, year] * within, 0.0, 1.0)


def distribution_quantile(distribution: np.ndarray, bins: np.ndarray, probability: float | np.ndarray) -> np.ndarray:
    """Each row's age below which ``probability`` (one for all rows, or one per row) of its distribution lies."""
    distribution = _normalised(distribution)
    rows = np.arange(len(distribution))
    probability = np.broadcast_to(np.asarray(probability, dtype=np.float64), (len(distribution),))
    cumulative = np.cumsum(distribution, axis=1)
    reached = cumulative < probability[:, None] - 1e-12
    year = np.minimum(reached.sum(axis=1), len(bins) - 1)  # the first bin that reaches it
    mass = distribution[rows, year]
    below = cumulative[rows, year] - mass
    within = np.divide(probability - below, mass, out=np.zeros_like(mass), where=mass > 0)
    return bins[year] - 0.5 + np.clip(within, 0.0, 1.0)


def distribution_scores(distribution: np.ndarray, bins: np.ndarray, ages: np.ndarray) -> np.ndarray:
    """The smallest central level of each face's distribution whose interval holds its true age:
    ``|2 F(age) - 1|`` (``F`` its cumulative distribution)."""
    return np.abs(2.0 * distribution_cdf(distribution, bins, ages) - 1.0)


def levels_by_band(scores: np.ndarray, band: np.ndarray, bands: int, level: float) -> list[float]:
    """The conformal quantile of ``scores`` within each of ``bands`` groups (``band``: each face's
    group); a group of fewer than ``MIN_BAND_FACES`` faces takes the quantile of all of them."""
    overall = conformal_quantile(scores, level)
    return [
        conformal_quantile(scores[band == index], level) if (band == index).sum() >= MIN_BAND_FACES else overall
        for index in range(bands)
    ]


def whole_year_range(low: np.ndarray, high: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The whole years within ``[low, high]`` as ``(first, last)``, at least one year, never below 0.

    A whole-year age is inside the returned range exactly when it is inside ``[low, high]``,
    so rounding keeps the fitted coverage.
    """
    first = np.ceil(np.clip(np.asarray(low, dtype=np.float64), 0, None) - 1e-9)
    last = np.floor(np.asarray(high, dtype=np.float64) + 1e-9)
    middle = np.round((np.asarray(low) + np.asarray(high)) / 2)
    narrow = last < first  # the whole interval inside one year: that year
    first = np.where(narrow, np.clip(middle, 0, None), first)
    last = np.where(narrow, np.clip(middle, 0, None), last)
    return first, last


def age_range(
    years: np.ndarray, distribution: np.ndarray | None, bins: np.ndarray, calibration: Mapping[str, Any]
) -> tuple[np.ndarray, np.ndarray]:
    """``(age_low, age_high)`` in whole years by ``calibration`` (``fit_age_range``); NaN without one."""
    method = calibration.get("method")
    years = np.asarray(years, dtype=np.float64)
    band = np.digitize(years, calibration.get("bands") or [])  # each face's predicted-age band
    if method == "distribution" and distribution is not None:
        beta = np.asarray(calibration["distribution_levels"], dtype=np.float64)[band]
        low = distribution_quantile(distribution, bins, (1 - beta) / 2)
        high = distribution_quantile(distribution, bins, (1 + beta) / 2)
        return whole_year_range(low, high)
    if method == "residual":
        half_width = np.asarray(calibration["half_widths"], dtype=np.float64)[band]
        return whole_year_range(years - half_width, years + half_width)
    nothing = np.full(len(years), np.nan)
    return nothing, nothing.copy()


def fit_age_range(
    years: np.ndarray,
    distribution: np.ndarray | None,
    bins: np.ndarray,
    ages: np.ndarray,
    level: float,
    bands: Sequence[float] = (),
) -> dict[str, Any]:
    """The age range's calibration for ``level``, fitted separately within each band of predicted
    age (``bands``: their lower edges), so that young and old faces alike get ranges that hold
    ``level`` of true ages, not only all faces together. From the distribution where the network
    predicts one (its central interval's level per band), else from the absolute errors of
    ``years`` (a symmetric half-width per band)."""
    years = np.asarray(years, dtype=np.float64)
    band = np.digitize(years, bands)
    fitted = {"level": level, "bands": [float(edge) for edge in bands]}
    if distribution is not None:
        scores = distribution_scores(distribution, bins, ages)
        levels = levels_by_band(scores, band, len(bands) + 1, level)
        return {"method": "distribution", **fitted, "distribution_levels": [min(1.0, beta) for beta in levels]}
    errors = np.abs(years - np.asarray(ages, dtype=np.float64))
    return {"method": "residual", **fitted, "half_widths": levels_by_band(errors, band, len(bands) + 1, level)}


def range_scores(ages: np.ndarray, low: np.ndarray, high: np.ndarray) -> dict[str, float | None]:
    """Share of ``ages`` inside their ranges, and the ranges' mean width in years (``high - low``)."""
    ages, low, high = (np.asarray(values, dtype=np.float64) for values in (ages, low, high))
    known = ~(np.isnan(low) | np.isnan(high))
    if not known.any():
        return {"range_coverage": None, "range_width": None}
    inside = (ages[known] >= low[known]) & (ages[known] <= high[known])
    return {"range_coverage": float(inside.mean()), "range_width": float((high[known] - low[known]).mean())}
