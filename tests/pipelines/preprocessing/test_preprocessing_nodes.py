from functools import partial

import numpy as np
import pandas as pd
import pytest
from fake_faces import encode, face_like, utkface_name
from PIL import Image
from skimage import data

from face_pipeline.datasets.array_files import NumpyDataset, ShardedArrayDataset
from face_pipeline.imaging.decoding import ImageSpec, decode_face
from face_pipeline.imaging.detection import DetectionSettings
from face_pipeline.inference.photos import prepare_photo
from face_pipeline.pipelines.preprocessing.nodes import (
    LABEL_COLUMNS,
    decode_split,
    preprocess_split,
    report_failures,
    split_labels,
)

PARAMS = {"image": {"size": 32, "color_mode": "grayscale"}, "workers": 1, "chunk_size": 4}


def flat_images(count: int) -> tuple[pd.DataFrame, dict]:
    """Images whose grey level is 2 x age, so each row's label can be checked against its pixels."""
    rows, loaders = [], {}
    for index in range(count):
        age = 10 + index * 3
        image_id = utkface_name(age, index % 2, index % 5, index)
        data = encode(face_like(index, 40, brightness=2 * age), "PNG")
        loaders[image_id] = partial(bytes, data)  # picklable, like the catalog's loaders
        rows.append(
            {"image_id": image_id, "path": f"/faces/{image_id}", "age": age, "gender": index % 2, "race": index % 5}
        )
    manifest = pd.DataFrame(rows).assign(split=["train", "train", "val"] * (count // 3) + ["train"] * (count % 3))
    return manifest, loaders


@pytest.mark.parametrize(("workers", "chunk_size"), [(1, 4), (2, 3)])
def test_arrays_are_uint8_and_rows_match_labels(workers, chunk_size, tmp_path):
    manifest, loaders = flat_images(20)
    params = {**PARAMS, "workers": workers, "chunk_size": chunk_size}
    images, labels, failures = preprocess_split(manifest, loaders, params, "train", str(tmp_path / "train"))
    assert images.shape == (14, 32, 32, 1)
    assert images.dtype == np.uint8
    assert list(labels.columns) == LABEL_COLUMNS
    assert labels["image_id"].tolist() == manifest[manifest["split"] == "train"]["image_id"].tolist()
    np.testing.assert_array_equal(np.asarray(images).mean(axis=(1, 2, 3)), 2 * labels["age"].to_numpy())
    assert failures.empty


def test_rgb_option_gives_three_channels(tmp_path):
    manifest, loaders = flat_images(6)
    rgb = {**PARAMS, "image": {"size": 24, "color_mode": "rgb"}}
    images, _, _ = preprocess_split(manifest, loaders, rgb, "val", str(tmp_path / "val"))
    assert images.shape == (2, 24, 24, 3)


def test_images_that_fail_now_are_reported_not_fatal(tmp_path):
    manifest, loaders = flat_images(9)
    train_ids = manifest[manifest["split"] == "train"]["image_id"].tolist()
    loaders[train_ids[1]] = lambda: b"garbage"

    def unreadable():
        raise PermissionError("denied")

    loaders[train_ids[3]] = unreadable
    images, labels, failures = preprocess_split(manifest, loaders, PARAMS, "train", str(tmp_path / "train"))
    assert len(images) == len(labels) == len(train_ids) - 2
    assert train_ids[1] not in set(labels["image_id"])
    np.testing.assert_array_equal(np.asarray(images).mean(axis=(1, 2, 3)), 2 * labels["age"].to_numpy())
    assert failures["reason"].tolist() == ["not an image", "unreadable image"]
    assert failures["path"].tolist() == [f"/faces/{train_ids[1]}", f"/faces/{train_ids[3]}"]
    assert "PermissionError" in failures["detail"].iloc[1]
    assert len(report_failures(failures, failures.iloc[:0])) == 2


def test_missing_raw_files_ask_for_a_new_ingestion():
    manifest, loaders = flat_images(3)
    del loaders[manifest["image_id"].iloc[0]]
    with pytest.raises(FileNotFoundError, match="ingestion"):
        decode_split(manifest, loaders, PARAMS, "train")


def test_numpy_dataset_round_trip_is_memory_mapped(tmp_path):
    dataset = NumpyDataset(filepath=str(tmp_path / "arrays" / "x.npy"))
    assert not dataset.exists()
    array = np.arange(2 * 4 * 4 * 1, dtype=np.uint8).reshape(2, 4, 4, 1)
    dataset.save(array)
    loaded = dataset.load()
    assert isinstance(loaded, np.memmap)
    np.testing.assert_array_equal(loaded, array)
    in_memory = NumpyDataset(filepath=str(tmp_path / "arrays" / "x.npy"), mmap_mode=None).load()
    assert not isinstance(in_memory, np.memmap)
    np.testing.assert_array_equal(in_memory, array)


def test_with_detection_photos_are_aligned_as_for_prediction_and_faceless_ones_reported(tmp_path):
    photo = encode(Image.fromarray(data.astronaut()), quality=90)
    noise = encode(Image.fromarray(np.random.default_rng(0).integers(0, 255, (600, 800, 3), dtype=np.uint8)))
    manifest = pd.DataFrame(
        [
            {"image_id": name, "path": f"/photos/{name}", "age": 40, "gender": 1, "race": 0, "split": "test"}
            for name in ("astronaut.jpg", "noise.jpg")
        ]
    )
    loaders = {"astronaut.jpg": partial(bytes, photo), "noise.jpg": partial(bytes, noise)}
    detection = {"mode": "auto"}
    with_detection = {**PARAMS, "detection": detection}
    images, labels, failures = preprocess_split(manifest, loaders, with_detection, "test", str(tmp_path / "test"))
    assert labels["image_id"].tolist() == ["astronaut.jpg"]
    _, [expected] = prepare_photo("", photo, ImageSpec(size=32), DetectionSettings.from_params(detection))
    np.testing.assert_array_equal(images[0], expected)
    assert failures.to_dict("records") == [
        {"path": "/photos/noise.jpg", "reason": "no face", "detail": "no face detected"}
    ]


def single_array(manifest: pd.DataFrame, loaders: dict, params: dict, split: str) -> np.ndarray:
    """The split as one in-memory array, every image decoded in order and failures left out."""
    spec = ImageSpec.from_params(params["image"])
    decoded = []
    for image_id in manifest[manifest["split"] == split]["image_id"]:
        try:
            decoded.append(decode_face(loaders[image_id](), spec))
        except Exception:  # noqa: BLE001 - left out, as preprocessing does
            continue
    return np.stack(decoded)


@pytest.mark.parametrize(("workers", "chunk_size", "shard_images"), [(1, 4, 5), (2, 3, 4), (1, 256, 4096)])
def test_sharded_preprocessing_gives_the_single_array(workers, chunk_size, shard_images, tmp_path):
    manifest, loaders = flat_images(30)
    train_ids = manifest[manifest["split"] == "train"]["image_id"].tolist()
    loaders[train_ids[4]] = partial(bytes, b"garbage")  # a failure inside a chunk, near a shard boundary
    params = {**PARAMS, "workers": workers, "chunk_size": chunk_size, "shard_images": shard_images}
    images, labels, failures = preprocess_split(manifest, loaders, params, "train", str(tmp_path / "train"))
    expected = single_array(manifest, loaders, params, "train")
    assert images.shape == expected.shape == (len(train_ids) - 1, 32, 32, 1)
    assert images.shard_count == -(-len(expected) // shard_images)
    np.testing.assert_array_equal(np.asarray(images), expected)
    assert labels["image_id"].tolist() == [image_id for image_id in train_ids if image_id != train_ids[4]]
    assert failures["path"].tolist() == [f"/faces/{train_ids[4]}"]
    shard_files = sorted(path.name for path in (tmp_path / "train").glob("shard-*.npy"))
    assert len(shard_files) == images.shard_count
    assert all(len(np.load(tmp_path / "train" / name, mmap_mode="r")) <= shard_images for name in shard_files)


def test_an_empty_split_is_saved_with_its_row_shape(tmp_path):
    manifest, loaders = flat_images(3)
    images, labels, failures = preprocess_split(manifest, loaders, PARAMS, "test", str(tmp_path / "test"))
    assert images.shape == (0, 32, 32, 1)
    assert labels.empty
    assert failures.empty


def test_labels_of_images_from_another_manifest_are_refused(tmp_path):
    manifest, loaders = flat_images(9)
    dataset = ShardedArrayDataset(filepath=str(tmp_path / "train"))
    dataset.save(decode_split(manifest, loaders, PARAMS, "train"))
    with pytest.raises(ValueError, match="another manifest"):
        split_labels(manifest.iloc[:-3], dataset.load(), "train")
