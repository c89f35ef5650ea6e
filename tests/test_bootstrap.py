"""The bootstrap interval of a mean: around the estimate, narrower with more faces, repeatable."""

import numpy as np
import pytest

from face_pipeline.scoring.bootstrap import bootstrap_interval


def correct_answers(faces: int, accuracy: float = 0.9, seed: int = 1) -> np.ndarray:
    return (np.random.default_rng(seed).random(faces) < accuracy).astype(float)


def test_the_interval_holds_the_estimate_and_narrows_with_more_faces():
    widths = []
    for faces in (100, 1_000, 10_000):
        values = correct_answers(faces)
        low, high = bootstrap_interval(values, resamples=1000, seed=0)
        assert low <= values.mean() <= high
        assert 0 <= low < high <= 1
        widths.append(high - low)
    assert widths[0] > widths[1] > widths[2]
    # About 2 x 1.96 standard errors: sqrt(0.9 x 0.1 / 1000) = 0.0095 for 1,000 faces.
    assert widths[1] == pytest.approx(2 * 1.96 * np.sqrt(0.09 / 1000), rel=0.15)


def test_the_same_seed_gives_the_same_interval_and_a_higher_confidence_a_wider_one():
    errors = np.abs(np.random.default_rng(2).normal(0, 6, 500))
    assert bootstrap_interval(errors, seed=3) == bootstrap_interval(errors, seed=3)
    assert bootstrap_interval(errors, seed=3) != bootstrap_interval(errors, seed=4)
    low_95, high_95 = bootstrap_interval(errors, confidence=0.95)
    low_80, high_80 = bootstrap_interval(errors, confidence=0.8)
    assert low_95 < low_80 < errors.mean() < high_80 < high_95


def test_edge_cases():
    assert bootstrap_interval(np.ones(5)) == (1.0, 1.0)
    assert np.isnan(bootstrap_interval(np.array([]))).all()
    assert bootstrap_interval(np.array([2.0, np.nan, 2.0])) == (2.0, 2.0)  # NaN left out
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_interval(np.ones(3), confidence=95)
    with pytest.raises(ValueError, match="resamples"):
        bootstrap_interval(np.ones(3), resamples=0)
