"""FacePredictor: the shared preprocessing, detection and alignment, batching, workers and folding."""

import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fake_faces import encode
from PIL import Image
from skimage import data
from small_models import CROP, PHOTO, SIZE, SPEC, Recorder

from face_pipeline.imaging.decoding import ImageSpec, convert_pixels, decode_face, face_input, load_image
from face_pipeline.imaging.detection import DetectionSettings, face_chip, find_faces
from face_pipeline.inference.batching import predict_in_batches
from face_pipeline.inference.loading import load_keras_model
from face_pipeline.inference.photos import prepare_photo
from face_pipeline.inference.predictor import FACE_COLUMNS, OUTCOME_COLUMNS, FacePredictor, task_columns


def test_rows_for_faces_no_faces_and_bad_files():
    gender, age = Recorder(0.8), Recorder(41.26)
    predictor = FacePredictor({"gender": gender, "age": age}, SPEC, DetectionSettings(mode="auto"))
    noise = encode(Image.fromarray(np.random.default_rng(0).integers(0, 255, (600, 800, 3), dtype=np.uint8)))
    table = predictor.predict([("photo.jpg", PHOTO), ("crop.png", CROP), ("noise.jpg", noise), ("x.jpg", b"text")])
    assert list(table.columns) == [*FACE_COLUMNS, *task_columns(["gender", "age"]), *OUTCOME_COLUMNS]
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


def test_keras_networks_run_folded_unless_folding_changes_their_answers(monkeypatch):
    import keras  # noqa: PLC0415

    from face_pipeline.inference.batching import fast_inference_model  # noqa: PLC0415
    from face_pipeline.modelling import builders as models  # noqa: PLC0415
    from face_pipeline.modelling import folding  # noqa: PLC0415

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
    monkeypatch.setattr(folding, "fold_batch_norm", lambda model: wrong)
    assert fast_inference_model(network) is network
