"""Bootstrap confidence intervals of a mean (NumPy only).

A test metric such as accuracy or mean absolute error is the mean of one number per face (1 for
a right answer, 0 for a wrong one; the error in years). Drawing the faces again with
replacement, many times, and taking the mean of each draw shows how much that mean would move
with another test set of the same size: the central ``confidence`` share of those means is the
(percentile) bootstrap interval.
"""

from __future__ import annotations

import numpy as np

RESAMPLES_PER_BATCH = 100  # draws held in memory at once: resamples x faces indices


def bootstrap_interval(
    values: np.ndarray, resamples: int = 1000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """The percentile bootstrap interval of ``values``' mean: ``(low, high)``.

    The same ``values`` and ``seed`` always give the same interval. NaN values are left out;
    with no value left the interval is ``(nan, nan)``.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1; got {confidence}")
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1; got {resamples}")
    values = np.asarray(values, dtype=np.float64).ravel()
    values = values[~np.isnan(values)]
    if not len(values):
        return float("nan"), float("nan")
    generator = np.random.default_rng(seed)
    means = np.empty(resamples)
    for start in range(0, resamples, RESAMPLES_PER_BATCH):
        count = min(RESAMPLES_PER_BATCH, resamples - start)
        draws = generator.integers(0, len(values), size=(count, len(values)))
        means[start : start + count] = values[draws].mean(axis=1)
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(low), float(high)
