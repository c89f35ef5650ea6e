import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from face_pipeline.pipelines.evaluation.nodes import (
    age_scores,
    breakdown,
    evaluate,
    fairness_gaps,
    gender_scores,
    metrics_for_mlflow,
    plot_group_metric,
    plot_worst_faces,
)
from face_pipeline.scoring.plots import (
    plot_age_ranges,
    plot_confusion_matrix,
    plot_predicted_vs_true,
    plot_reliability,
    plot_risk_coverage,
    plot_roc_curve,
)
from face_pipeline.tasks import AGE as AGE_TASK
from face_pipeline.tasks import GENDER as GENDER_TASK

GENDER = {"target": "gender"}
AGE = {"target": "age"}
EVALUATION = {"age_bands": [13, 20, 40, 60], "min_group_size": 2}


def test_gender_scores_by_hand():
    y_true = np.array([1, 1, 1, 0, 0, 0])
    probability = np.array([0.9, 0.8, 0.3, 0.6, 0.2, 0.1])
    scores = gender_scores(y_true, probability)
    # predicted 1 1 0 1 0 0: TP=2 FN=1 FP=1 TN=2
    assert scores["accuracy"] == pytest.approx(4 / 6)
    assert scores["precision"] == pytest.approx(2 / 3)
    assert scores["recall"] == pytest.approx(2 / 3)
    assert scores["f1"] == pytest.approx(2 / 3)
    assert scores["confusion_matrix"] == [[2, 1], [1, 2]]
    # Of the 9 (female, male) pairs, the female scores higher in 8.
    assert scores["roc_auc"] == pytest.approx(8 / 9)
    expected_log_loss = -np.mean(np.log([0.9, 0.8, 0.3, 0.4, 0.8, 0.9]))
    assert scores["log_loss"] == pytest.approx(expected_log_loss)


def test_gender_scores_with_one_class_only():
    scores = gender_scores(np.array([1, 1, 1]), np.array([0.9, 0.4, 0.7]))
    assert scores["accuracy"] == pytest.approx(2 / 3)
    assert scores["roc_auc"] is None
    assert scores["confusion_matrix"] == [[0, 0], [1, 2]]


def test_age_scores_by_hand():
    scores = age_scores(np.array([10, 20, 30, 40]), np.array([12, 20, 21, 47]))
    # errors: +2, 0, -9, +7
    assert scores["mae"] == pytest.approx(4.5)
    assert scores["rmse"] == pytest.approx(np.sqrt((4 + 0 + 81 + 49) / 4))
    assert scores["median_ae"] == pytest.approx(4.5)
    assert scores["cs_at_5"] == pytest.approx(0.5)
    assert scores["mean_signed_error"] == pytest.approx(0.0)
    assert scores["pearson_r"] == pytest.approx(np.corrcoef([10, 20, 30, 40], [12, 20, 21, 47])[0, 1])


def test_age_scores_of_an_empty_or_constant_group():
    assert age_scores(np.array([]), np.array([]))["mae"] is None
    assert age_scores(np.array([30, 30]), np.array([31, 33]))["pearson_r"] is None


def predictions_table() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "image_id": [f"{i}.jpg" for i in range(8)],
            "age": [5, 8, 25, 30, 35, 70, 75, 80],
            "gender": [0, 1, 0, 1, 0, 1, 0, 1],
            "race": pd.array([0, 0, 1, 1, None, 2, 2, 0], dtype="Int8"),
            "y_true": [5, 8, 25, 30, 35, 70, 75, 80],
            "y_pred": [7, 8, 29, 30, 30, 60, 75, 82],
            "age_low": [4, 6, 26, 28, 31, 55, 70, 78],
            "age_high": [9, 10, 30, 34, 38, 66, 79, 85],  # misses ages 25 and 70
        }
    )


def gender_table() -> pd.DataFrame:
    probability = np.array([0.2, 0.9, 0.4, 0.6, 0.7, 0.8, 0.1, 0.3])
    return predictions_table().assign(
        y_true=[0, 1, 0, 1, 0, 1, 0, 1],
        y_pred=probability,
        y_pred_uncalibrated=probability**3 / (probability**3 + (1 - probability) ** 3),  # overconfident
        gender_uncertain=np.maximum(probability, 1 - probability) < 0.75,
    )


def test_breakdown_has_every_group_and_unknown_race():
    groups = breakdown(predictions_table(), AGE, EVALUATION)
    races = groups[groups["grouping"] == "race"].set_index("group")
    assert races.loc["unknown", "count"] == 1
    assert races.loc["unknown", "mae"] == pytest.approx(5)
    assert races.loc["White", "count"] == 3  # ages 5, 8, 80: errors 2, 0, 2
    assert races.loc["White", "mae"] == pytest.approx(4 / 3)
    bands = groups[groups["grouping"] == "age_band"].set_index("group")
    assert set(bands.index) == {"0-12", "20-39", "60+"}  # empty bands are not reported
    assert bands.loc["60+", "mae"] == pytest.approx(4)
    assert bands.loc["20-39", "range_coverage"] == pytest.approx(2 / 3)
    assert bands.loc["60+", "range_coverage"] == pytest.approx(2 / 3) and bands.loc["0-12", "range_width"] == 4.5
    assert set(groups[groups["grouping"] == "gender"]["group"]) == {"male", "female"}


def test_largest_gap_skips_small_groups():
    groups = breakdown(predictions_table(), AGE, EVALUATION)
    gaps = fairness_gaps(groups, AGE, min_count=2)
    # Races with >= 2 images: White 1.33, Black (25, 30) 2.0, Asian (70, 75) 5.0
    assert gaps["race"]["gap"] == pytest.approx(5 - 4 / 3)
    assert (gaps["race"]["best_group"], gaps["race"]["worst_group"]) == ("White", "Asian")
    assert "race" not in fairness_gaps(groups, AGE, min_count=4)


def test_report_and_mlflow_metrics():
    table = gender_table()
    groups = breakdown(table, GENDER, EVALUATION)
    calibration = {"method": "temperature", "temperature": 3.0, "uncertain_below": 0.75}
    report = evaluate(table, groups, calibration, GENDER, EVALUATION)
    json.dumps(report)  # saved by JSONDataset
    assert report["images"] == 8
    assert report["accuracy"] == pytest.approx(6 / 8)
    assert report["calibration"] == calibration
    # Confidence 0.6 (2 right), 0.7 (2 wrong), 0.8 and 0.9 (2 right each), each pair in its own bin.
    assert report["ece"] == pytest.approx((2 * 0.4 + 2 * 0.7 + 2 * 0.2 + 2 * 0.1) / 8)
    assert report["ece_uncalibrated"] != pytest.approx(report["ece"])
    # Uncertain (confidence < 0.75): 0.4, 0.6, 0.7, 0.3; the other four are all right.
    assert report["uncertain_share"] == 0.5 and report["accuracy_when_certain"] == 1.0
    assert report["accuracy_at_90_coverage"] == pytest.approx(6 / 8)  # ceil(7.2) = all 8 answered
    metrics = metrics_for_mlflow(report)
    assert metrics["test_accuracy"] == {"value": 0.75, "step": 0}
    assert {"test_ece", "test_ece_uncalibrated", "test_accuracy_at_90_coverage"} <= set(metrics)
    assert metrics_for_mlflow(
        evaluate(predictions_table(), breakdown(predictions_table(), AGE, EVALUATION), {}, AGE, EVALUATION)
    )["test_range_coverage"]["value"] == pytest.approx(6 / 8)
    assert "test_gap_race" in metrics
    assert "test_confusion_matrix" not in metrics


def is_png(figure, tmp_path) -> bool:
    path = tmp_path / "plot.png"
    figure.savefig(path)
    with Image.open(path) as image:
        return image.format == "PNG" and image.width > 100


def test_plots_are_valid_pngs(tmp_path):
    age_table = predictions_table()
    genders = gender_table()
    gender_report = {**gender_scores(genders["y_true"], genders["y_pred"]), **GENDER_TASK.answer_scores(genders)}
    age_report = {**age_scores(age_table["y_true"], age_table["y_pred"]), **AGE_TASK.answer_scores(age_table)}
    figures = [
        plot_confusion_matrix(genders, gender_report),
        plot_roc_curve(genders, gender_report),
        plot_reliability(genders, gender_report),
        plot_risk_coverage(genders, gender_report),
        plot_predicted_vs_true(age_table, age_report),
        plot_age_ranges(age_table, age_report),
        plot_group_metric(breakdown(age_table, AGE, EVALUATION), AGE, "race"),
        plot_worst_faces(age_table, np.zeros((8, 16, 16, 1), dtype=np.uint8), AGE, count=5),
        plot_worst_faces(genders, np.zeros((8, 16, 16, 1), dtype=np.uint8), GENDER),
    ]
    assert all(is_png(figure, tmp_path) for figure in figures)
    worst = figures[-2]
    titles = [axis.get_title() for axis in worst.axes if axis.get_title()]
    assert titles[0] == "true 70, predicted 60"  # the largest error first
