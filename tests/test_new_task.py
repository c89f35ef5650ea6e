"""A new task is its parameter file plus one ``Task``: built, trained, evaluated, packaged and
predicted here, by the pipelines, the command and the served model alike.

The toy task "adult" (age 18 or more, from the manifest's age column) exists only in this test.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner
from conftest import copy_project, run_in_process, use_small_networks
from fake_faces import encode, face_like, write_utkface_folder

from face_pipeline.commands.console import cli
from face_pipeline.imaging.decoding import ImageSpec
from face_pipeline.imaging.detection import DetectionSettings
from face_pipeline.inference.predictor import FACE_COLUMNS, OUTCOME_COLUMNS, FacePredictor
from face_pipeline.scoring.answers import served_output
from face_pipeline.scoring.scores import gender_scores
from face_pipeline.tasks import GENDER, TASKS, Task, gender_metrics, register, unregister


def adult_head(features, loss=None):
    import keras  # noqa: PLC0415

    return keras.layers.Dense(1, activation="sigmoid", dtype="float32", name="adult")(features)


ADULT = Task(
    name="adult",
    head=adult_head,
    losses={"binary_crossentropy": lambda: "binary_crossentropy"},
    metrics=gender_metrics,
    scores=gender_scores,
    headline="accuracy",
    higher_is_better=True,
    columns=lambda outputs, calibration: {"adult": served_output(outputs) >= 0.5},
    label=lambda labels: labels["age"] >= 18,
)


@pytest.fixture
def adult_task():
    register(ADULT)
    yield ADULT
    unregister("adult")
    assert set(TASKS) == {"gender", "age"}


def test_a_third_task_trains_evaluates_and_predicts(adult_task, tmp_path, monkeypatch):
    project = copy_project(tmp_path / "project")
    faces = tmp_path / "faces"
    write_utkface_folder(faces, 48, size=64)
    use_small_networks(project, epochs=1)
    # The task's parameter file: the gender one's layout, a tiny network, one epoch.
    params = yaml.safe_load((project / "conf/base/parameters_train_gender.yml").read_text())["gender"]
    params["task"]["target"] = "adult"
    params["model"]["default_cnn"].update(stem_filters=4, filters=[8], downsample=1)
    params["training"].update(epochs=1, time_budget_minutes=None, backup_dir=str(tmp_path / "backup"))
    (project / "conf/local/parameters_train_adult.yml").write_text(yaml.safe_dump({"adult": params}))
    run_in_process(project, "__default__", monkeypatch, env={"FACE_DATA_DIR": str(faces)})

    metrics = json.loads((project / "data/08_reporting/adult_metrics.json").read_text())
    assert metrics["task"] == "adult" and 0 <= metrics["accuracy"] <= 1
    predictions = pd.read_parquet(project / "data/07_model_output/adult_test_predictions.parquet")
    np.testing.assert_array_equal(predictions["y_true"], (predictions["age"] >= 18).astype(float))
    assert (project / "data/08_reporting/adult_confusion_matrix.png").exists() is False  # gender's plots only
    assert (project / "data/08_reporting/adult_worst_faces.png").exists()
    decisions = json.loads((project / "data/08_reporting/adult_training_decisions.json").read_text())
    assert decisions["epochs_run"] == 1
    # A task without a calibration of its own saves an empty one, and predicts as its network does.
    assert json.loads((project / "data/06_models/adult_calibration.json").read_text()) == {}
    assert "`adult`" in (project / "data/08_reporting/model_card.md").read_text()

    import keras  # noqa: PLC0415

    model = keras.saving.load_model(next((project / "data/06_models/adult_model.keras").rglob("*.keras")))
    # Predicts on photos like the built-in tasks: its own column in the prediction table.
    photos = [(f"face{index}.png", encode(face_like(index, 64), "PNG")) for index in range(3)]
    predictor = FacePredictor({"adult": model}, ImageSpec(), DetectionSettings(mode="never"))
    table = predictor.predict(photos)
    assert list(table.columns) == [*FACE_COLUMNS, "adult", *OUTCOME_COLUMNS]
    assert table["status"].tolist() == ["ok"] * 3 and set(table["adult"]) <= {True, False}
    assert GENDER.name in TASKS  # the built-in tasks are untouched

    # The predict pipeline, the command and the packaged model: every registered task's network,
    # the toy task's among them, with no line of theirs naming a task.
    folder = tmp_path / "photos"
    folder.mkdir()
    for name, data in photos:
        (folder / name).write_bytes(data)
    never = {"detection": {"mode": "never"}}
    run_in_process(project, "predict", monkeypatch, params={"predict": {"input_path": str(folder), **never}})
    by_pipeline = pd.read_parquet(project / "data/07_model_output/predictions.parquet")
    assert {"gender", "age", "adult"} <= set(by_pipeline.columns) and len(by_pipeline) == 3
    settings = project / "data/06_models/inference_settings.json"
    json_settings = json.loads(settings.read_text())
    json_settings["detection"]["mode"] = "never"
    settings.write_text(json.dumps(json_settings))
    result = CliRunner().invoke(cli, ["predict", str(folder), "--format", "csv"])
    assert result.exit_code == 0, result.output
    assert "adult" in result.output.splitlines()[0].split(",")
    result = CliRunner().invoke(cli, ["predict", str(folder)])
    assert result.exit_code == 0 and "adult " in result.output  # the table names the task's answer
    result = CliRunner().invoke(cli, ["predict", str(folder), "--model", "adlt=x.keras"])
    assert result.exit_code != 0 and "no task named adlt" in result.output

    import base64  # noqa: PLC0415

    import mlflow  # noqa: PLC0415

    served = mlflow.pyfunc.load_model((project / "data/06_models/face_model_uri.txt").read_text().strip())
    request = pd.DataFrame(
        {"id": [name for name, _ in photos], "image": [base64.b64encode(d).decode() for _, d in photos]}
    )
    answer = served.predict(request)
    assert "adult" in answer.columns and served.metadata.get_model_info().signature is not None
