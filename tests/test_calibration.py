"""Calibrated probabilities, age ranges with their coverage, and when to doubt: on synthetic models
whose miscalibration is known."""

import math

import numpy as np
import pandas as pd
import pytest
from conftest import PROJECT_ROOT
from kedro.config import OmegaConfigLoader

from face_pipeline.config import ConfigError
from face_pipeline.hooks import check_parameters
from face_pipeline.labels import AGE_BINS
from face_pipeline.pipelines.training.settings import CalibrationSettings
from face_pipeline.scoring.calibration import (
    accuracy_at_coverage,
    age_range,
    conformal_quantile,
    distribution_cdf,
    distribution_quantile,
    expected_calibration_error,
    fit_age_range,
    fit_temperature,
    range_scores,
    reliability_table,
    risk_coverage,
    scale_temperature,
    whole_year_range,
)
from face_pipeline.tasks import AGE, GENDER


def overconfident_model(count: int, seed: int, sharpness: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from a true probability, and a model that reports that probability's logit times ``sharpness``."""
    rng = np.random.default_rng(seed)
    true_logit = rng.normal(0, 1.5, count)
    labels = (rng.random(count) < 1 / (1 + np.exp(-true_logit))).astype(float)
    return labels, 1 / (1 + np.exp(-sharpness * true_logit))


def test_temperature_scaling_undoes_a_known_overconfidence_and_keeps_every_decision():
    labels, probability = overconfident_model(20_000, seed=0)
    temperature = fit_temperature(labels, probability)
    assert temperature == pytest.approx(3.0, rel=0.1)
    calibrated = scale_temperature(probability, temperature)
    before, after = (expected_calibration_error(labels, p) for p in (probability, calibrated))
    assert before > 0.1 and after < 0.02
    # Fitted on one sample, it holds on another from the same model.
    test_labels, test_probability = overconfident_model(20_000, seed=1)
    assert expected_calibration_error(test_labels, scale_temperature(test_probability, temperature)) < 0.02
    np.testing.assert_array_equal(calibrated >= 0.5, probability >= 0.5)


def test_an_underconfident_model_is_sharpened():
    labels, probability = overconfident_model(20_000, seed=2, sharpness=0.5)
    assert fit_temperature(labels, probability) == pytest.approx(0.5, rel=0.1)


def test_temperature_scaling_needs_both_classes():
    with pytest.raises(ValueError, match="both classes"):
        fit_temperature(np.ones(10), np.full(10, 0.7))


def test_ece_and_reliability_by_hand():
    labels = np.array([1, 0, 1, 1])
    probability = np.array([0.95, 0.95, 0.3, 0.55])  # confidences 0.95, 0.95, 0.7, 0.55
    table = reliability_table(labels, probability, bins=10)
    assert table["count"].sum() == 4 and len(table) == 10
    top = table.iloc[9]
    assert (top["count"], top["confidence"], top["accuracy"]) == (2, pytest.approx(0.95), 0.5)
    # |0.95 - 0.5| * 2 + |0.7 - 0| + |0.55 - 1|, over 4 faces
    assert expected_calibration_error(labels, probability, bins=10) == pytest.approx((0.9 + 0.7 + 0.45) / 4)
    assert expected_calibration_error(np.array([]), np.array([])) is None


def test_risk_coverage_answers_the_most_confident_first():
    labels = np.array([1, 0, 1, 0, 1])
    probability = np.array([0.99, 0.45, 0.2, 0.1, 0.6])  # right, right, wrong, right, right
    curve = risk_coverage(labels, probability)
    assert curve["coverage"].tolist() == [0.2, 0.4, 0.6, 0.8, 1.0]
    assert curve["accuracy"].tolist() == pytest.approx([1, 1, 2 / 3, 3 / 4, 4 / 5])  # 0.99, 0.9, 0.8, 0.6, 0.55
    assert accuracy_at_coverage(labels, probability, 1.0) == pytest.approx(0.8)
    assert accuracy_at_coverage(labels, probability, 0.5) == pytest.approx(2 / 3)  # ceil(2.5) = 3 answered


def test_conformal_quantile_is_the_finite_sample_rank():
    scores = np.arange(1, 10, dtype=float)  # 9 scores
    assert conformal_quantile(scores, 0.8) == 8.0  # ceil(10 * 0.8) = 8th
    assert conformal_quantile(scores, 0.95) == math.inf  # ceil(9.5) = 10 > 9


def test_distribution_cdf_and_quantile_are_inverse():
    bins = np.arange(0, 11, dtype=float)
    distribution = np.zeros((2, 11))
    distribution[0, 5] = 1.0  # all on year 5: spread over [4.5, 5.5]
    distribution[1, [2, 8]] = 0.5
    np.testing.assert_allclose(distribution_cdf(distribution, bins, [5.0, 5.0]), [0.5, 0.5])
    np.testing.assert_allclose(distribution_quantile(distribution, bins, 0.1), [4.6, 1.7])
    np.testing.assert_allclose(distribution_quantile(distribution, bins, 0.5), [5.0, 2.5])  # first of the gap


def synthetic_ages(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """True ages drawn from each face's own distribution over the age bins, and a network that
    reports that distribution too narrow (half its spread): its central intervals cover too little."""
    rng = np.random.default_rng(seed)
    centre = rng.uniform(5, 90, count)
    spread = rng.uniform(2, 10, count)
    ages = np.clip(np.round(rng.normal(centre, spread)), 0, 120)
    reported = np.exp(-0.5 * ((AGE_BINS[None, :] - centre[:, None]) / (spread[:, None] / 2)) ** 2)
    return ages, reported / reported.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("level", [0.8, 0.5, 0.95])
def test_the_age_range_covers_its_level_on_new_faces(level):
    ages, distribution = synthetic_ages(4000, seed=3)
    years = distribution @ AGE_BINS
    naive = age_range(years, distribution, AGE_BINS, {"method": "distribution", "distribution_levels": [level]})
    assert range_scores(ages, *naive)["range_coverage"] < level - 0.1  # too narrow before calibration
    calibration = fit_age_range(years, distribution, AGE_BINS, ages, level)
    assert calibration["method"] == "distribution" and calibration["distribution_levels"][0] > level
    test_ages, test_distribution = synthetic_ages(8000, seed=4)
    low, high = age_range(test_distribution @ AGE_BINS, test_distribution, AGE_BINS, calibration)
    scores = range_scores(test_ages, low, high)
    assert abs(scores["range_coverage"] - level) <= 0.02
    assert np.all(low <= high) and np.all(low == np.round(low)) and np.all(low >= 0)
    # Wider where the network is less sure: the range follows each face's distribution.
    width = high - low
    assert np.corrcoef(width, _spread(test_distribution))[0, 1] > 0.9


def banded_ages(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Faces whose network is too sure when young and not sure enough when old (its reported
    spread is half the truth under 30, twice it from 30 on)."""
    rng = np.random.default_rng(seed)
    centre = rng.uniform(5, 90, count)
    spread = np.where(centre < 30, 3.0, 8.0)
    ages = np.clip(np.round(rng.normal(centre, spread)), 0, 120)
    reported = np.exp(-0.5 * ((AGE_BINS[None, :] - centre[:, None]) / np.where(centre < 30, 1.5, 16)[:, None]) ** 2)
    return ages, reported / reported.sum(axis=1, keepdims=True)


def test_the_range_covers_its_level_in_every_band_of_predicted_age():
    ages, distribution = banded_ages(6000, seed=10)
    years = distribution @ AGE_BINS
    one_band = fit_age_range(years, distribution, AGE_BINS, ages, 0.8)
    banded = fit_age_range(years, distribution, AGE_BINS, ages, 0.8, bands=[30])
    assert banded["bands"] == [30.0] and banded["distribution_levels"][0] > banded["distribution_levels"][1]
    test_ages, test_distribution = banded_ages(8000, seed=11)
    test_years = test_distribution @ AGE_BINS
    young = test_years < 30
    for calibration, within in ((one_band, 0.15), (banded, 0.035)):
        low, high = age_range(test_years, test_distribution, AGE_BINS, calibration)
        coverage = [range_scores(test_ages[part], low[part], high[part])["range_coverage"] for part in (young, ~young)]
        assert all(abs(value - 0.8) <= within for value in coverage) == (calibration is banded), coverage
    residual = fit_age_range(years, None, AGE_BINS, ages, 0.8, bands=[30])
    assert residual["half_widths"][0] < residual["half_widths"][1]  # older faces: wider ranges


def test_a_small_band_takes_the_level_of_all_faces():
    ages, distribution = synthetic_ages(400, seed=12)
    years = distribution @ AGE_BINS
    fitted = fit_age_range(years, distribution, AGE_BINS, ages, 0.8, bands=[2])  # hardly any face under 2
    assert (
        fitted["distribution_levels"][0]
        == fit_age_range(years, distribution, AGE_BINS, ages, 0.8)["distribution_levels"][0]
    )


def _spread(distribution: np.ndarray) -> np.ndarray:
    mean = distribution @ AGE_BINS
    return np.sqrt(distribution @ AGE_BINS**2 - mean**2)


def test_a_network_without_a_distribution_gets_a_symmetric_range_that_covers_its_level():
    rng = np.random.default_rng(5)
    ages = rng.integers(1, 90, 6000).astype(float)
    years = ages + rng.normal(0, 6, len(ages))
    calibration = fit_age_range(years[:3000], None, AGE_BINS, ages[:3000], 0.8)
    assert calibration["method"] == "residual" and calibration["half_widths"][0] == pytest.approx(6 * 1.2816, rel=0.1)
    low, high = age_range(years[3000:], None, AGE_BINS, calibration)
    assert abs(range_scores(ages[3000:], low, high)["range_coverage"] - 0.8) <= 0.02


def test_whole_years_keep_exactly_the_ages_the_interval_holds():
    low, high = np.array([27.2, 3.0, -2.0, 40.3]), np.array([41.9, 3.0, 4.6, 40.6])
    first, last = whole_year_range(low, high)
    assert first.tolist() == [28, 3, 0, 40] and last.tolist() == [41, 3, 4, 40]  # 40.3-40.6 holds no whole year
    for age in range(0, 50):
        inside = (low <= age) & (age <= high)
        np.testing.assert_array_equal(inside[:3], ((first <= age) & (age <= last))[:3])


def test_without_a_calibration_there_is_no_range():
    low, high = age_range(np.array([30.0]), None, AGE_BINS, {})
    assert np.isnan(low).all() and np.isnan(high).all()
    assert range_scores(np.array([30.0]), low, high) == {"range_coverage": None, "range_width": None}


def test_tasks_fit_and_apply_their_calibration():
    labels, probability = overconfident_model(5000, seed=6)
    gender = GENDER.calibrate({"gender": probability}, labels, {"method": "temperature", "uncertain_below": 0.8})
    assert gender["temperature"] == pytest.approx(3.0, rel=0.15) and gender["uncertain_below"] == 0.8
    columns = GENDER.columns({"gender": probability}, gender)
    confident = np.maximum(columns["female_probability"], 1 - columns["female_probability"])
    np.testing.assert_array_equal(columns["gender_uncertain"], confident < 0.8)
    assert GENDER.calibrate({"gender": probability}, labels, {"method": "none", "uncertain_below": 0.8})[
        "temperature"
    ] == (1.0)
    ages, distribution = synthetic_ages(3000, seed=7)
    outputs = {"age": distribution @ AGE_BINS, "age_distribution": distribution}
    age = AGE.calibrate(outputs, ages, {"level": 0.8, "bands": [20, 60]})
    table = pd.DataFrame(AGE.columns(outputs, age)).assign(y_true=ages)
    assert AGE.answer_scores(table)["range_coverage"] >= 0.8


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ({"level": 1.0}, "age.calibration.level must be positive and below 1; got 1.0"),
        ({"level": 0}, "age.calibration.level must be positive and below 1"),
        ({"uncertain_below": 0.3}, "age.calibration.uncertain_below must be at least 0.5"),
        ({"method": "isotonic"}, "age.calibration.method must be one of temperature, none"),
        ({"bands": [40, 20]}, "age.calibration.bands must be increasing ages"),
        ({"levels": 0.8}, "unknown key(s) 'levels' in parameters 'age.calibration'"),
    ],
)
def test_bad_calibration_settings_are_refused_naming_the_key(block, message):
    with pytest.raises(ConfigError) as error:
        CalibrationSettings.from_params(block, "age.calibration")
    assert message in str(error.value)


def test_a_bad_level_in_the_project_parameters_stops_the_run_before_training():
    from face_pipeline.settings import CONFIG_LOADER_ARGS  # noqa: PLC0415

    parameters = OmegaConfigLoader(str(PROJECT_ROOT / "conf"), **CONFIG_LOADER_ARGS)["parameters"]
    check_parameters(parameters)  # as shipped
    parameters["age"]["calibration"]["level"] = 80  # a percentage where a share was meant
    with pytest.raises(ConfigError, match=r"age\.calibration\.level must be positive and below 1; got 80"):
        check_parameters(parameters)


def test_a_missing_calibration_key_is_named():
    labels, probability = overconfident_model(100, seed=8)
    with pytest.raises(ConfigError, match=r"gender\.calibration\.uncertain_below is required"):
        GENDER.calibrate({"gender": probability}, labels, {"method": "temperature"})
