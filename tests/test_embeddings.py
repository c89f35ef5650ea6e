"""dlib's face embedding as a pipeline stage, its cache, the heads' mix and mode accurate."""

import numpy as np
import pandas as pd
import pytest
from fake_faces import encode
from PIL import Image
from skimage import data
from small_models import Recorder

from face_pipeline.embedding.descriptor import EMBEDDING_SIZE, DlibEmbedder, content_key, embedding_chip
from face_pipeline.imaging.decoding import ImageSpec
from face_pipeline.imaging.detection import DetectionSettings, face_chip, find_faces
from face_pipeline.inference.loading import EmbeddingHeads
from face_pipeline.inference.predictor import FacePredictor
from face_pipeline.labels import AGE_BINS
from face_pipeline.modelling.combination import combine_outputs, fit_combination
from face_pipeline.pipelines.embeddings import nodes
from face_pipeline.pipelines.embeddings.nodes import embed_images, embedding_failures, with_embeddings
from face_pipeline.tasks import get_task

ASTRONAUT = encode(Image.fromarray(data.astronaut()), quality=90)
LANDSCAPE = encode(Image.new("RGB", (480, 200), (120, 130, 140)))  # no face, and not shaped like a crop
DETECTION = DetectionSettings().to_params()


def labels_of(names):
    return pd.DataFrame({"image_id": names, "age": 30, "gender": 1, "race": 0})


def embed(files, cache=None):
    raw = {name: (lambda content=content: content) for name, content in files.items()}
    return embed_images(labels_of(list(files)), raw, cache or {}, {"workers": 1}, DETECTION, split="test")


def test_a_real_face_gives_a_unit_128_d_embedding_and_bad_images_are_reported():
    table, partition, summary = embed({"astronaut.jpg": ASTRONAUT, "plain.jpg": LANDSCAPE, "text.jpg": b"no image"})
    assert table["image_id"].tolist() == ["astronaut.jpg", "plain.jpg", "text.jpg"]
    assert table["status"].tolist() == ["ok", "no face", "error"]
    vectors = nodes.embedding_matrix(table)
    assert vectors.shape == (3, EMBEDDING_SIZE)
    assert np.linalg.norm(vectors[0]) == pytest.approx(1.0, abs=1e-5)
    assert np.isnan(vectors[1:]).all()  # kept, empty, never silently dropped
    assert summary == {**summary, "images": 3, "computed": 3, "reused": 0, "without_embedding": 2}
    failures = embedding_failures(table, splits=["test"])
    assert failures[["image_id", "status"]].values.tolist() == [["plain.jpg", "no face"], ["text.jpg", "error"]]
    [new] = partition.values()
    assert len(new) == 3


def test_the_cache_is_reused_by_content(monkeypatch):
    first, partition, _ = embed({"astronaut.jpg": ASTRONAUT})
    cache = {name: (lambda frame=frame: frame) for name, frame in partition.items()}

    def computed(*args, **kwargs):
        raise AssertionError("an embedding in the cache was computed again")

    monkeypatch.setattr(nodes, "embed_chunk", computed)
    # The same content under another name: found by its bytes, nothing computed, nothing new to save.
    again, new, summary = embed({"renamed.jpg": ASTRONAUT}, cache)
    assert (summary["reused"], summary["computed"], new) == (1, 0, {})
    np.testing.assert_array_equal(nodes.embedding_matrix(again), nodes.embedding_matrix(first))
    assert content_key(ASTRONAUT) == content_key(bytes(ASTRONAUT))


def test_the_embedding_sees_the_same_face_at_any_photo_size():
    """The chip is framed from the aligned face, so a smaller copy of the photo embeds nearly alike
    (dlib's threshold for "the same person" is a distance of 0.6 on its unnormalised descriptor)."""
    settings = DetectionSettings()
    vectors = []
    for size in (512, 300):
        rgb = np.asarray(Image.fromarray(data.astronaut()).resize((size, size)))
        [face] = find_faces(rgb, settings)
        vectors.append(
            DlibEmbedder().predict_on_batch(embedding_chip(face_chip(rgb, face, settings), settings.chip)[None])
        )
    assert float(np.linalg.norm(vectors[0] - vectors[1])) < 0.3


def test_the_mix_weight_follows_the_better_answer_on_validation():
    rng = np.random.default_rng(0)
    targets = rng.integers(0, 2, 400).astype(float)
    informed = {"": np.clip(targets * 0.8 + 0.1 + rng.normal(0, 0.05, 400), 0.01, 0.99)}
    guessing = {"": rng.uniform(0.01, 0.99, 400)}
    settings = {"method": "temperature", "uncertain_below": 0.75}
    gender = get_task("gender")
    assert fit_combination(gender, guessing, informed, targets, settings)["head_weight"] >= 0.9
    assert fit_combination(gender, informed, guessing, targets, settings)["head_weight"] <= 0.1


def test_distributions_are_mixed_only_where_both_have_one():
    one = np.zeros((2, len(AGE_BINS)))
    one[:, 20] = 1
    other = np.zeros((2, len(AGE_BINS)))
    other[:, 40] = 1
    network = {"age": np.array([20.0, 20.0]), "age_distribution": one}
    mixed = combine_outputs(network, {"age": np.array([40.0, 40.0]), "age_distribution": other}, 0.25)
    np.testing.assert_allclose(mixed["age"], [25.0, 25.0])
    np.testing.assert_allclose(mixed["age_distribution"][0, [20, 40]], [0.75, 0.25])
    assert set(combine_outputs(network, {"age": np.array([40.0, 40.0])}, 0.5)) == {"age"}


def test_mode_accurate_mixes_each_network_with_its_head():
    embedder, gender_head = Recorder(0.1, EMBEDDING_SIZE), Recorder(0.9)
    combinations = {
        "gender": {"head_weight": 0.5, "calibration": {"temperature": 1.0, "uncertain_below": 0.75}},
        "age": {"head_weight": 0.25, "calibration": {}},
    }
    accurate = EmbeddingHeads(embedder, {"gender": gender_head, "age": Recorder(60.0)}, combinations)
    networks = {"gender": Recorder(0.3), "age": Recorder(20.0)}
    predictor = FacePredictor(networks, ImageSpec(size=32), DetectionSettings(), accurate=accurate)
    table = predictor.predict([("astronaut.jpg", ASTRONAUT), ("text.jpg", b"no image")])
    assert table["status"].tolist() == ["ok", "error"]
    assert table.loc[0, "female_probability"] == pytest.approx(0.6)
    assert table.loc[0, "age"] == pytest.approx(30.0)
    [chips] = embedder.inputs
    assert chips.shape == (1, 150, 150, 3)  # one face: dlib's chip of it
    np.testing.assert_array_equal(gender_head.inputs[0], np.full((1, EMBEDDING_SIZE), 0.1, np.float32))
    fast = FacePredictor(networks, ImageSpec(size=32), DetectionSettings()).predict([("a.jpg", ASTRONAUT)])
    assert fast.loc[0, "female_probability"] == pytest.approx(0.3)


def test_embeddings_must_be_row_aligned_with_labels():
    table, _, _ = embed({"astronaut.jpg": ASTRONAUT})
    with pytest.raises(ValueError, match="row-aligned"):
        with_embeddings(table, labels_of(["other.jpg"]))


def test_an_image_gone_since_ingestion_is_reported_not_fatal():
    def gone():
        raise FileNotFoundError("photo.jpg")

    raw = {"astronaut.jpg": lambda: ASTRONAUT, "photo.jpg": gone}
    table, partition, _ = embed_images(labels_of(list(raw)), raw, {}, {"workers": 1}, DETECTION, split="test")
    assert table["status"].tolist() == ["ok", "error"]
    assert "FileNotFoundError" in table.loc[1, "reason"]
    [new] = partition.values()
    assert len(new) == 1  # what could not be read is not cached
