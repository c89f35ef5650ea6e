"""The served model (face_model): logged, registered, loaded in process and behind mlflow models serve."""

import base64
import io
import os
import signal
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import requests
from click.testing import CliRunner
from small_models import ANSWER_COLUMNS, CALIBRATION, CROP, PHOTO, SETTINGS, SIZE

from face_pipeline.commands.console import cli
from face_pipeline.inference.loading import load_calibration, load_inference_settings, load_keras_model
from face_pipeline.inference.packaging import log_face_model, pinned_requirements, register_models
from face_pipeline.inference.predictor import FacePredictor
from face_pipeline.ops.processes import free_port


@pytest.fixture(scope="module")
def face_model_uri(saved_models, tmp_path_factory) -> str:
    store = tmp_path_factory.mktemp("mlflow")
    mlflow.set_tracking_uri(f"sqlite:///{store / 'mlflow.db'}")
    mlflow.set_experiment("face_pipeline_tests")
    with mlflow.start_run():
        gender, age = (load_keras_model(saved_models[task]) for task in ("gender", "age"))
        # As kedro-mlflow does in training (conf/base/catalog.yml).
        mlflow.keras.log_model(gender, name="gender_model", pip_requirements=pinned_requirements())
        mlflow.keras.log_model(age, name="age_model", pip_requirements=pinned_requirements())
        mlflow.log_dict(SETTINGS, "inference_settings.json")
        for task in ("gender", "age"):  # as the catalog's <task>.calibration does
            mlflow.log_dict(CALIBRATION[task], f"{task}_calibration.json")
        uri = log_face_model(
            SETTINGS,
            gender_model=gender,
            age_model=age,
            gender_calibration=CALIBRATION["gender"],
            age_calibration=CALIBRATION["age"],
        )
        names = {"gender": "face_gender", "age": "face_age", "face": "face_model"}
        assert register_models(uri, {"register": False, "names": names}) == {}
        assert register_models(uri, {"register": True, "names": names}) == {
            "face_gender": 1,
            "face_age": 1,
            "face_model": 1,
        }
    return uri


def test_requirements_are_pinned_to_the_installed_versions():
    wanted = (("no-such-distribution", "keras"), ("numpy", "keras"), ("no-such-distribution",))
    assert pinned_requirements(wanted) == [f"keras=={metadata.version('keras')}", f"numpy=={metadata.version('numpy')}"]
    assert pinned_requirements()[1:] == [f"keras=={metadata.version('keras')}", f"numpy=={metadata.version('numpy')}"]


def test_settings_load_from_the_run(face_model_uri):
    run_id = (
        face_model_uri.split("/")[1] if face_model_uri.startswith("runs:/") else mlflow.last_active_run().info.run_id
    )
    assert load_inference_settings(f"runs:/{run_id}") == SETTINGS


def test_registered_models_load_by_name(face_model_uri):
    assert load_keras_model("models:/face_age/1").input_shape == (None, SIZE, SIZE, 1)
    assert "face_model" in {m.name for m in mlflow.search_registered_models()}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_served_model_in_process(face_model_uri):
    model = mlflow.pyfunc.load_model(face_model_uri)
    result = model.predict(pd.DataFrame({"id": ["full", "crop"], "image": [b64(PHOTO), b64(CROP)]}))
    assert result["id"].tolist() == ["full", "crop"]
    assert result["status"].tolist() == ["ok", "ok"]
    assert result["age"].notna().all()
    assert result[ANSWER_COLUMNS].notna().all().all()
    assert (result["age_low"] <= result["age_high"]).all()
    for bad, message in [("%%%", "not valid base64"), (b64(b"hello"), "not an image"), ("", "empty")]:
        with pytest.raises(mlflow.exceptions.MlflowException, match=message):
            model.predict(pd.DataFrame({"image": [bad]}))


def test_mlflow_models_serve_end_to_end(face_model_uri):
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "models", "serve", "-m", face_model_uri, "--env-manager", "local",
         "-h", "127.0.0.1", "-p", str(port)],
        # As in an activated .venv: mlflow starts `uvicorn` from PATH.
        env={
            **os.environ,
            "MLFLOW_TRACKING_URI": mlflow.get_tracking_uri(),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        },
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{url}/ping", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                time.sleep(1)
        else:
            pytest.fail("mlflow models serve did not start")

        def post(images):
            payload = {"dataframe_split": {"columns": ["image"], "data": [[i] for i in images]}}
            return requests.post(f"{url}/invocations", json=payload, timeout=60)

        good = post([b64(PHOTO), b64(CROP)])
        assert good.status_code == 200, good.text
        rows = good.json()["predictions"]
        assert [row["status"] for row in rows] == ["ok", "ok"]
        assert all(row[column] is not None for row in rows for column in ANSWER_COLUMNS)
        bad = post(["not base64 at all!"])
        assert 400 <= bad.status_code < 500
        assert "not valid base64" in bad.json()["message"]
        assert post([b64(CROP)]).status_code == 200  # still serving
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def test_every_surface_answers_with_the_saved_calibration(saved_models, face_model_uri, tmp_path):
    """The predictor, the command line and the served model give the same calibrated answers,
    read from the calibration saved beside the model or in its MLflow run."""
    models = {task: load_keras_model(saved_models[task]) for task in ("gender", "age")}
    calibration = {task: load_calibration(saved_models[task]) for task in ("gender", "age")}
    assert calibration == CALIBRATION
    photos = [("photo.jpg", PHOTO), ("crop.png", CROP)]
    raw = FacePredictor.from_settings(models, SETTINGS).predict(photos)
    calibrated = FacePredictor.from_settings(models, SETTINGS, calibration=calibration).predict(photos)
    assert raw[ANSWER_COLUMNS[1:]].isna().all().all()  # no range without a calibration
    # T = 2 halves the logit: the probability moves towards 0.5, on the same side.
    logit = np.log(raw["female_probability"] / (1 - raw["female_probability"]))
    np.testing.assert_allclose(calibrated["female_probability"], 1 / (1 + np.exp(-logit / 2)), atol=2e-4)
    assert (calibrated["gender"] == raw["gender"]).all()
    assert (calibrated["age_low"] <= calibrated["age"]).all() and (calibrated["age"] <= calibrated["age_high"]).all()
    uncertain = np.maximum(calibrated["female_probability"], 1 - calibrated["female_probability"]) < 0.75
    assert calibrated["gender_uncertain"].tolist() == uncertain.tolist()

    for name, data_bytes in photos:
        (tmp_path / name).write_bytes(data_bytes)
    models_options = ["--model", f"gender={saved_models['gender']}", "--model", f"age={saved_models['age']}"]
    options = [*models_options, "--settings", str(saved_models["settings"]), "--format", "csv"]
    result = CliRunner().invoke(cli, ["predict", str(tmp_path / "photo.jpg"), str(tmp_path / "crop.png"), *options])
    assert result.exit_code == 0, result.output
    from_cli = pd.read_csv(io.StringIO(result.output))
    columns = ["female_probability", "age", "age_low", "age_high"]
    np.testing.assert_allclose(from_cli[columns], calibrated[columns].astype(float), atol=1e-4)

    run_id = mlflow.last_active_run().info.run_id
    assert load_calibration(f"runs:/{run_id}/age_model") == CALIBRATION["age"]
    served = mlflow.pyfunc.load_model(face_model_uri)
    answers = served.predict(pd.DataFrame({"id": [name for name, _ in photos], "image": [b64(p) for _, p in photos]}))
    np.testing.assert_allclose(answers[columns], calibrated[columns].astype(float), atol=1e-4)
    signature = served.metadata.get_output_schema().input_names()
    assert set(ANSWER_COLUMNS) <= set(signature)
