"""Prediction on new photos: the shared preprocessing, the command line and the served model."""

import base64
import io
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
import warnings
from importlib import metadata
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import requests
from click.testing import CliRunner
from fake_faces import encode
from PIL import Image
from skimage import data
from small_models import CALIBRATION, SETTINGS, SIZE, save_small_models

from face_pipeline.console import cli
from face_pipeline.faces import DetectionSettings, face_chip, find_faces
from face_pipeline.images import ImageSpec, convert_pixels, decode_face, face_input, load_image
from face_pipeline.predict import (
    PREDICTION_COLUMNS,
    FacePredictor,
    load_calibration,
    load_inference_settings,
    load_keras_model,
    predict_in_batches,
    prepare_photo,
)
from face_pipeline.serving import log_face_model, pinned_requirements, register_models

SPEC = ImageSpec(size=SIZE)
PHOTO = encode(Image.fromarray(data.astronaut()), quality=90)
ANSWER_COLUMNS = ["gender_uncertain", "age_low", "age_high"]
CROP = encode(Image.fromarray(data.astronaut()).crop((160, 50, 300, 190)), "PNG")


class Recorder:
    """A stand-in network that records its inputs and answers a fixed value."""

    def __init__(self, value: float):
        self.value, self.inputs = value, []

    def predict_on_batch(self, batch):
        self.inputs.append(np.array(batch))
        return np.full((len(batch), 1), self.value, dtype=np.float32)


def test_rows_for_faces_no_faces_and_bad_files():
    gender, age = Recorder(0.8), Recorder(41.26)
    predictor = FacePredictor({"gender": gender, "age": age}, SPEC, DetectionSettings(mode="auto"))
    noise = encode(Image.fromarray(np.random.default_rng(0).integers(0, 255, (600, 800, 3), dtype=np.uint8)))
    table = predictor.predict([("photo.jpg", PHOTO), ("crop.png", CROP), ("noise.jpg", noise), ("x.jpg", b"text")])
    assert list(table.columns) == PREDICTION_COLUMNS
    assert table["status"].tolist() == ["ok", "ok", "no face", "error"]
    ok = table[table["status"] == "ok"]
    assert ok["gender"].tolist() == ["female", "female"]
    assert ok["female_probability"].tolist() == [0.8, 0.8]
    assert ok["age"].tolist() == [41.3, 41.3]
    assert table.loc[3, "reason"].startswith("not an image")
    assert len(gender.inputs[0]) == 2  # both faces in one batch


def test_without_detection_a_photo_gets_exactly_the_training_preprocessing():
    gender = Recorder(0.5)
    FacePredictor({"gender": gender, "age": Recorder(30)}, SPEC, DetectionSettings(mode="never")).predict(
        [("crop.png", CROP)]
    )
    np.testing.assert_array_equal(gender.inputs[0][0], decode_face(CROP, SPEC))


def test_a_detected_face_is_aligned_then_gets_the_training_preprocessing():
    gender, settings = Recorder(0.5), DetectionSettings(mode="auto")
    table = FacePredictor({"gender": gender, "age": Recorder(30)}, SPEC, settings).predict([("photo.jpg", PHOTO)])
    rgb = load_image(PHOTO, ImageSpec(color_mode="rgb"))
    [face] = find_faces(rgb, settings)
    expected = face_input(convert_pixels(face_chip(rgb, face, settings), "grayscale"), SPEC)
    np.testing.assert_array_equal(gender.inputs[0][0], expected)
    assert table.loc[0, ["box_x", "box_y", "box_size"]].tolist() == [face.box.x, face.box.y, face.box.size]


def test_boxes_are_in_the_photos_own_pixels_when_it_is_decoded_smaller():
    large = encode(Image.fromarray(data.astronaut()).resize((2048, 2048)), quality=90)
    settings = DetectionSettings(mode="auto", max_side=512)  # decoded at 1/4 scale
    [small_row], _ = prepare_photo("photo.jpg", PHOTO, SPEC, settings)
    [large_row], _ = prepare_photo("large.jpg", large, SPEC, settings)
    for key in ("box_x", "box_y", "box_size"):
        assert abs(large_row[key] - 4 * small_row[key]) <= 8, key


@pytest.mark.parametrize("workers", [1, 2])
def test_streamed_chunks_cover_every_photo_in_order(workers):
    photos = [(f"{index}.jpg", PHOTO if index % 3 else b"broken") for index in range(7)]
    predictor = FacePredictor({"gender": Recorder(0.5), "age": Recorder(30)}, SPEC, workers=workers, chunk_size=2)
    chunks = list(predictor.predict_stream(photos))
    assert [len(chunk) for chunk in chunks] == [2, 2, 2, 1]
    table = pd.concat(chunks, ignore_index=True)
    assert table["file"].tolist() == [name for name, _ in photos]
    assert table["status"].tolist() == ["error" if index % 3 == 0 else "ok" for index in range(7)]


def test_batches_are_padded_to_a_few_fixed_shapes():
    """Keras traces its predict function once per batch shape: batches of any size take at most log2 shapes."""

    class Echo(Recorder):
        def predict_on_batch(self, batch):
            self.inputs.append(batch.shape[0])
            return batch.reshape(len(batch), -1)[:, :1].astype(np.float32)

    images = np.arange(11, dtype=np.uint8).reshape(11, 1, 1, 1)
    model = Echo(0)
    np.testing.assert_array_equal(predict_in_batches(model, images, batch_size=8), np.arange(11))
    assert model.inputs == [8, 4]  # 8, then 3 padded to 4
    model.inputs = []
    predict_in_batches(model, images[:1], batch_size=8)
    assert model.inputs == [1]


class ProcessId(Recorder):
    """A stand-in network that answers the id of the process it runs in."""

    def predict_on_batch(self, batch):
        return np.full((len(batch), 1), os.getpid(), dtype=np.float32)


def test_several_workers_each_run_their_own_copy_of_the_networks():
    photos = [(f"{index}.jpg", PHOTO) for index in range(12)]
    networks = {"gender": Recorder(0.5), "age": ProcessId(0)}
    # Fewer photos than worker_networks_from: the workers prepare them, the networks run here.
    assert set(FacePredictor(networks, SPEC, workers=2, chunk_size=2).predict(photos)["age"]) == {os.getpid()}
    predictor = FacePredictor(networks, SPEC, workers=2, chunk_size=2, worker_networks_from=len(photos))
    predictor.warm_up()  # otherwise the photos are predicted here until the workers have loaded their networks
    table = predictor.predict(photos)
    assert table["file"].tolist() == [name for name, _ in photos] and (table["status"] == "ok").all()
    assert set(table["age"]) - {os.getpid()}  # answered in the workers
    networks = Path(predictor._networks_file)
    assert networks.is_file()
    del predictor
    assert not networks.exists()  # the pickled networks go with their predictor


def test_loader_errors_become_rows():
    def unreadable():
        raise PermissionError("denied")

    table = FacePredictor({"gender": Recorder(0.5), "age": Recorder(30)}, SPEC).predict([("locked.jpg", unreadable)])
    assert table["status"].tolist() == ["error"]
    assert "PermissionError" in table.loc[0, "reason"]


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory) -> dict[str, Path]:
    return save_small_models(tmp_path_factory.mktemp("models"))


def test_versioned_folder_loads_the_latest_version(saved_models, tmp_path):
    assert load_keras_model(saved_models["gender"]).input_shape == (None, SIZE, SIZE, 1)
    with pytest.raises(FileNotFoundError, match="kedro run"):
        load_keras_model(tmp_path / "missing.keras")


def test_keras_networks_answer_alike_in_workers_and_in_this_process(saved_models):
    models = {task: load_keras_model(saved_models[task]) for task in ("gender", "age")}
    photos = [(f"{index}.png", encode(Image.new("L", (40, 40), 30 * index), "PNG")) for index in range(6)]
    tables = []
    for workers in (1, 2):
        predictor = FacePredictor(
            models, SPEC, DetectionSettings(mode="never"), workers=workers, chunk_size=2, worker_networks_from=0
        )
        predictor.warm_up()  # the workers load their networks
        tables.append(predictor.predict(photos))
    pd.testing.assert_frame_equal(*tables, atol=1e-5)
    assert tables[0]["female_probability"].nunique() > 1  # the photos got different answers


@pytest.mark.parametrize("output_format", ["table", "json", "csv"])
def test_command_line_prints_one_line_per_face(saved_models, tmp_path, output_format):
    (tmp_path / "photo.jpg").write_bytes(PHOTO)
    (tmp_path / "broken.jpg").write_bytes(b"")
    models = ["--gender-model", str(saved_models["gender"]), "--age-model", str(saved_models["age"])]
    models += ["--settings", str(saved_models["settings"])]
    result = CliRunner().invoke(cli, ["predict", str(tmp_path), *models, "--format", output_format])
    assert result.exit_code == 0, result.output
    if output_format == "table":
        lines = result.output.strip().splitlines()
        assert lines[0].startswith("broken.jpg  error: empty file")
        assert lines[1].startswith("photo.jpg  face 0 [")
        assert re.search(r" age \d+\.\d \(\d+-\d+\)$", lines[1])  # the age and its range
    elif output_format == "json":
        records = json.loads(result.output)
        assert [r["status"] for r in records] == ["error", "ok"]
        assert records[1]["age_low"] <= records[1]["age_high"] and records[1]["gender_uncertain"] in (True, False)
    else:
        table = pd.read_csv(io.StringIO(result.output))
        assert table["status"].tolist() == ["error", "ok"]
        assert table.loc[1, ANSWER_COLUMNS].notna().all()


def test_command_line_explains_a_missing_model(tmp_path):
    (tmp_path / "photo.jpg").write_bytes(PHOTO)
    result = CliRunner().invoke(cli, ["predict", str(tmp_path / "photo.jpg"), "--gender-model", "nope.keras"])
    assert result.exit_code != 0
    assert "No model at nope.keras" in result.output


def test_command_line_follows_the_saved_settings_unless_told(saved_models, tmp_path):
    (tmp_path / "photo.jpg").write_bytes(PHOTO)
    never = {**SETTINGS, "detection": {**SETTINGS["detection"], "mode": "never"}}
    (tmp_path / "never.json").write_text(json.dumps(never))
    models = ["--gender-model", str(saved_models["gender"]), "--age-model", str(saved_models["age"])]

    def box(*options):
        result = CliRunner().invoke(cli, ["predict", str(tmp_path / "photo.jpg"), *models, *options, "--format", "csv"])
        assert result.exit_code == 0, result.output
        return pd.read_csv(io.StringIO(result.output)).loc[0, ["box_x", "box_y", "box_size"]].tolist()

    whole = [0, 0, 512]  # the astronaut photo is 512x512
    assert box("--settings", str(tmp_path / "never.json")) == whole
    assert box("--settings", str(tmp_path / "never.json"), "--detect", "auto") != whole
    assert box("--settings", str(saved_models["settings"])) != whole
    missing = CliRunner().invoke(cli, ["predict", str(tmp_path / "photo.jpg"), *models, "--settings", "none.json"])
    assert "No inference settings at none.json" in missing.output


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
        uri = log_face_model(gender, age, SETTINGS, CALIBRATION["gender"], CALIBRATION["age"])
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


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


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


class StdoutLogs(logging.Handler):
    """Writes log records to whatever ``sys.stdout`` is at the time, as Kedro's rich handler does."""

    def emit(self, record):
        sys.stdout.write(self.format(record) + "\n")


def test_command_line_streams_csv_rows_chunk_by_chunk_with_one_header(saved_models, tmp_path):
    for index in range(130):  # more than one chunk of 128 photos
        (tmp_path / f"{index:03d}.png").write_bytes(encode(Image.new("L", (40, 40), index), "PNG"))
    models = ["--gender-model", str(saved_models["gender"]), "--age-model", str(saved_models["age"])]
    options = ["--settings", str(saved_models["settings"]), "--detect", "never", "--format", "csv"]
    # Logging set up by the host program (here: to stdout, at INFO) must not mix into the rows.
    handler, root = StdoutLogs(), logging.getLogger()
    previous_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        result = CliRunner().invoke(cli, ["predict", str(tmp_path), *models, *options])
    finally:
        root.removeHandler(handler)
        root.setLevel(previous_level)
    assert result.exit_code == 0, result.output
    assert result.output.count("file,face,") == 1
    table = pd.read_csv(io.StringIO(result.output))
    assert len(table) == 130 and (table["status"] == "ok").all()


def test_keras_networks_run_folded_unless_folding_changes_their_answers(monkeypatch):
    import keras  # noqa: PLC0415

    from face_pipeline import models  # noqa: PLC0415
    from face_pipeline.predict import fast_inference_model  # noqa: PLC0415

    network = models.inference_model(models.default_cnn((16, 16, 1), "gender", filters=[4]), "gender")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        folded = fast_inference_model(network)
    assert not [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    assert folded is not network
    assert not [layer for layer in folded.layers if isinstance(layer, keras.layers.BatchNormalization)]
    predictor = FacePredictor({"gender": network, "age": Recorder(30)}, SPEC)
    assert predictor.models["gender"] is not network and isinstance(predictor.models["age"], Recorder)
    # A fold that answered differently would be refused: the network runs as it was saved.
    wrong = models.inference_model(models.default_cnn((16, 16, 1), "gender", filters=[4], dropout=0.1), "gender")
    wrong.layers[-1].bias.assign([5.0])
    monkeypatch.setattr(models, "fold_batch_norm", lambda model: wrong)
    assert fast_inference_model(network) is network


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
    models_options = ["--gender-model", str(saved_models["gender"]), "--age-model", str(saved_models["age"])]
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


def test_command_line_annotates_every_readable_photo(saved_models, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "photo.jpg").write_bytes(PHOTO)
    (photos / "blank.png").write_bytes(encode(Image.new("RGB", (640, 480), (20, 20, 20)), "PNG"))
    (photos / "notes.jpg").write_bytes(b"this is text, not a photo")
    out = tmp_path / "out"
    models = ["--gender-model", str(saved_models["gender"]), "--age-model", str(saved_models["age"])]
    options = [*models, "--settings", str(saved_models["settings"]), "--annotate", str(out)]
    result = CliRunner().invoke(cli, ["predict", str(photos), *options])
    assert result.exit_code == 0, result.output
    assert sorted(path.name for path in out.iterdir()) == ["blank.png", "photo.jpg"]
    with Image.open(out / "photo.jpg") as picture:
        assert picture.size == (512, 512) and picture.format == "JPEG"
    with Image.open(out / "blank.png") as picture:  # no face: copied, with a note
        assert picture.size == (640, 480) and np.asarray(picture.convert("L"))[:20, :80].max() > 200
    assert "notes.jpg: not annotated (not an image" in result.output  # named, and the others go on
