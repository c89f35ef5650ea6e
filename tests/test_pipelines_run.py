"""The ingestion and preprocessing pipelines run through Kedro on a generated folder."""

import json

import numpy as np
import pandas as pd
from conftest import kedro
from fake_faces import encode, face_like, truncated_jpeg, write_utkface_folder


def test_ingestion_then_preprocessing(project, tmp_path):
    faces = tmp_path / "faces"
    labels = pd.DataFrame(write_utkface_folder(faces, 60, size=80))
    (faces / "7_0_0_20170101000000999.jpg.chip.jpg").write_bytes(truncated_jpeg())
    (faces / "not_a_utkface_name.png").write_bytes(encode(face_like(5, 50), "PNG"))
    env = {"FACE_DATA_DIR": str(faces)}

    kedro(project, "run", "--pipelines=ingestion", env=env)
    manifest = pd.read_parquet(project / "data/03_primary/face_manifest.parquet")
    rejected = pd.read_csv(project / "data/08_reporting/rejected_images.csv")
    summary = json.loads((project / "data/08_reporting/data_summary.json").read_text())
    assert sorted(manifest["image_id"]) == sorted(labels["image_id"])
    assert sorted(rejected["reason"]) == ["malformed file name", "truncated image"]
    assert summary["images"] == 60
    assert summary["rejected"] == 2

    kedro(project, "run", "--pipelines=preprocessing", env=env)
    model_input = project / "data/05_model_input"
    total = 0
    for split in ("train", "val", "test"):
        images = np.load(model_input / f"{split}_images.npy", mmap_mode="r")
        split_labels = pd.read_parquet(model_input / f"{split}_labels.parquet")
        assert images.shape == (len(split_labels), 128, 128, 1)
        assert images.dtype == np.uint8
        expected = manifest[manifest["split"] == split]
        assert split_labels["image_id"].tolist() == expected["image_id"].tolist()
        total += len(images)
    assert total == 60
    assert pd.read_csv(project / "data/08_reporting/preprocessing_failures.csv").empty
