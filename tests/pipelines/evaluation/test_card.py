"""The model card from a task's reports: figures from the reports, intervals from the predictions."""

import json
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from conftest import CARD_SECTIONS

from face_pipeline.pipelines.evaluation.card import card_headlines, write_model_card
from face_pipeline.pipelines.evaluation.card_summary import describe_run, summarise_folder_for_card, summarise_for_card
from face_pipeline.pipelines.evaluation.nodes import breakdown, evaluate

GENDER = {"target": "gender"}
AGE = {"target": "age"}
EVALUATION = {"age_bands": [13, 20, 40, 60], "min_group_size": 20}
CARD = {"bootstrap_resamples": 500, "confidence": 0.95, "seed": 0}
MODEL = {"architecture": "default_cnn", "loss": "binary_crossentropy", "mirror_average": False}
DECISIONS = {"precision": "float32", "planned_epochs": 10, "epochs_run": 9, "epoch_kept": 7, "parameters": 12345}
DATA = {
    "images": 500,
    "rejected": 3,
    "rejected_by_reason": {"duplicate": 3},
    "splits": {"train": {"images": 400, "female_share": 0.5, "age_mean": 33.0}, "test": {"images": 100}},
    "race": {"White": 250, "Asian": 250},
}


def predictions(faces: int = 400, seed: int = 0) -> pd.DataFrame:
    """Gender predictions that are right for adults and a coin toss for children; Asian faces a little worse."""
    rng = np.random.default_rng(seed)
    age = rng.integers(1, 80, faces)
    gender = rng.integers(0, 2, faces)
    race = rng.choice([0, 2], faces)
    wrong = rng.random(faces) < np.where(age < 13, 0.4, 0.05)
    answer = np.where(wrong, 1 - gender, gender)
    probability = np.clip(np.where(answer == 1, 0.85, 0.15) + rng.normal(0, 0.05, faces), 0.01, 0.99)
    return pd.DataFrame(
        {
            "image_id": [f"{i}.jpg" for i in range(faces)],
            "age": age,
            "gender": gender,
            "race": pd.array(race, dtype="Int8"),
            "y_true": gender.astype(float),
            "y_pred": probability,
            "y_pred_uncalibrated": probability,
            "gender_uncertain": np.maximum(probability, 1 - probability) < 0.75,
        }
    )


def comparison(table: pd.DataFrame) -> pd.DataFrame:
    """A head comparison where the head is worse than the network on Asian faces and the mix in between."""
    rows = []
    for variant, asian in (("network", 0.90), ("head", 0.80), ("combined", 0.85)):
        rows.append({"variant": variant, "grouping": "all", "group": "all", "count": len(table), "accuracy": 0.9})
        rows.append({"variant": variant, "grouping": "race", "group": "Asian", "count": 200, "accuracy": asian})
        rows.append({"variant": variant, "grouping": "race", "group": "White", "count": 200, "accuracy": 0.93})
    return pd.DataFrame(rows).assign(ece=0.02)


def gender_section(table: pd.DataFrame) -> tuple[dict, dict]:
    groups = breakdown(table, GENDER, EVALUATION)
    calibration = {"method": "temperature", "temperature": 1.1, "uncertain_below": 0.75}
    report = evaluate(table, groups, calibration, GENDER, EVALUATION)
    section = summarise_for_card(
        report,
        groups,
        table,
        comparison(table),
        DECISIONS,
        {"train_faces": 400},
        {"head_weight": 0.6},
        GENDER,
        MODEL,
        EVALUATION,
        CARD,
    )
    return report, section


def test_a_task_section_has_the_reports_figures_and_their_intervals():
    table = predictions()
    report, section = gender_section(table)
    assert section["value"] == report["accuracy"]
    assert section["low"] < report["accuracy"] < section["high"]
    children = next(row for row in section["groups"] if row["group"] == "0-12")
    assert children["low"] < children["accuracy"] < children["high"]
    assert children["count"] == (table["age"] < 13).sum()
    # A bigger group has a narrower interval than a smaller one.
    adults = next(row for row in section["groups"] if row["group"] == "20-39")
    assert (section["high"] - section["low"]) < (adults["high"] - adults["low"])
    assert section["model"]["decisions"]["epochs_run"] == 9 and section["model"]["head_weight"] == 0.6


def test_the_card_has_every_part_and_the_numbers_of_the_reports():
    table = predictions()
    report, section = gender_section(table)
    run = {"profile": "default", "note": None, "run_id": "abc", "run_name": "__default__ · default · local"}
    run |= {"date": "2026-12-07 05:00 UTC", "git_commit": "0123abc"}
    card = write_model_card(
        DATA, {"test": {"computed": 100, "reused": 0}}, {"image": {"size": 128}}, run, CARD, section
    )
    for heading in CARD_SECTIONS:
        assert heading in card, heading
    assert f"{report['accuracy']:.3f} ({section['low']:.3f}–{section['high']:.3f})" in card
    assert "git commit `0123abc`" in card and "`__default__ · default · local`" in card
    children = next(row for row in section["groups"] if row["group"] == "0-12")
    assert re.search(rf"\*\*Children\*\*: `gender` accuracy for ages 0-12 is {children['accuracy']:.3f}", card)
    # The head worse than the network on Asian faces: said, with the numbers of the comparison.
    said = "on Asian test faces (200) the `gender` embedding head scores accuracy 0.800 alone against the "
    assert said + "network's 0.900, the mix (`--mode accurate`) 0.850: the embedding is weaker there" in card
    assert "White test faces" not in card  # the head is not worse there
    assert "Not measured by the run that wrote this card" in card
    assert "non-commercial" in card.lower() and "surveillance" in card.lower()


def test_where_the_head_gains_everywhere_the_card_names_its_smallest_gain():
    table = predictions()
    _, section = gender_section(table)
    modes = [
        {**row, "accuracy": 0.95} if (row["variant"], row["group"]) == ("head", "Asian") else row
        for row in section["modes"]
    ]
    run = {"profile": "default", "run_id": None, "date": None, "git_commit": None}
    card = write_model_card(DATA, {}, {}, run, CARD, {**section, "modes": modes})
    said = "the `gender` embedding head gains least on White test faces (200): accuracy 0.930 alone against "
    assert said + "the network's 0.930, the mix (`--mode accurate`) 0.930." in card


def test_the_card_of_a_run_with_another_folder_and_a_quick_profile():
    table = predictions()
    _, section = gender_section(table)
    other = predictions(300, seed=5)
    groups = breakdown(other, GENDER, EVALUATION)
    report = evaluate(other, groups, {}, GENDER, EVALUATION)
    folder = summarise_folder_for_card(
        report,
        groups,
        other,
        comparison(other),
        {"rejected": 2},
        GENDER,
        {"raw_dir": "/data/aaf_dev"},
        EVALUATION,
        CARD,
    )
    run = {"profile": "quick", "note": "a first look", "run_id": None, "run_name": None, "date": None}
    card = write_model_card({**DATA, "max_images": 500}, {}, {}, run | {"git_commit": None}, CARD, section, folder)
    assert card.startswith("# Model card: the `gender` network\n\n> **quick**: a first look")
    assert "`ingestion.max_images: 500`" in card
    assert "The saved networks on `aaf_dev`" in card
    assert f"{report['accuracy']:.3f} ({folder['low']:.3f}–{folder['high']:.3f})" in card
    assert "on `aaf_dev`" in card and "**Another population**: `gender` accuracy" in card
    assert "`gender` by age band:\n\n| group |" in card
    # The head's weakest race group, and the head against the network on the other folder.
    assert "on `aaf_dev` the head alone scores 0.900 against the network's 0.900." in card


def test_describe_run_outside_mlflow_names_the_profile():
    details = describe_run({"profile": "quick", "note": "a first look"}, gender={"architecture": "default_cnn"})
    assert (details["profile"], details["note"], details["run_id"]) == ("quick", "a first look", None)
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", details["date"])
    seed = {"architecture": "seed_cnn"}
    assert describe_run({}, gender=seed, age=seed)["profile"] == "seed"  # named after the architectures


def test_an_age_section_has_the_mae_interval_and_the_range_coverage():
    table = predictions().drop(columns=["y_pred_uncalibrated", "gender_uncertain"])
    rng = np.random.default_rng(3)
    table = table.assign(y_true=table["age"].astype(float), y_pred=table["age"] + rng.normal(0, 5, len(table)))
    table = table.assign(age_low=table["y_pred"] - 6, age_high=table["y_pred"] + 6)
    groups = breakdown(table, AGE, EVALUATION)
    report = evaluate(table, groups, {"level": 0.8}, AGE, EVALUATION)
    model = {"architecture": "default_cnn", "loss": "distribution"}
    args = (DECISIONS, {}, {}, AGE, model, EVALUATION, CARD)
    section = summarise_for_card(report, groups, table, None, *args)
    assert section["headline"] == "mae" and section["low"] < report["mae"] < section["high"]
    assert section["scores"]["range_coverage"] == report["range_coverage"]
    assert section == summarise_for_card(report, groups, table, None, *args)  # the same intervals every time
    run = {"profile": "default", "run_id": None, "date": None, "git_commit": None}
    card = write_model_card(DATA, {}, {}, run, CARD, section)
    assert f"{report['mae']:.2f} ({section['low']:.2f}–{section['high']:.2f})" in card
    assert f"the age range holds the true age for {report['range_coverage'] * 100:.1f} % of faces" in card
    assert "meant to hold the true age of 80 % of faces" in card


def test_the_cards_headlines_are_the_figures_it_prints_and_make_the_readme_row():
    table = predictions()
    _, section = gender_section(table)
    run = {"profile": "default", "note": None, "git_commit": "0123456789abcdef", "date": "2026-12-07 08:00 UTC"}
    card = write_model_card(DATA, {}, {}, run | {"run_id": None, "run_name": None}, CARD, section)
    headlines = card_headlines(run, section)
    gender = headlines["sections"][0]
    assert (gender["task"], gender["scope"], gender["headline"]) == ("gender", "test", "accuracy")
    assert json.loads(json.dumps(headlines)) == headlines  # written as JSON
    sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "bench"))
    from reference_table import table_row  # noqa: PLC0415

    row = table_row(headlines, 41.6, "x86_64, 2 cores", "make run")
    printed = f"{gender['value']:.3f} ({gender['low']:.3f}–{gender['high']:.3f})"
    assert printed in card and printed in row  # the README's figure is the card's
    assert row.startswith("| default | `make run` | 42 | ") and row.endswith("| – | x86_64, 2 cores | 0123456 |")
