"""Checks on the real image folder (FACE_DATA_DIR); slow, run with ``pytest -m slow``."""

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import kedro

from face_pipeline.datasets.array_files import ShardedArrayDataset
from face_pipeline.pipelines.ingestion.nodes import SPLITS

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not os.environ.get("FACE_DATA_DIR"), reason="set FACE_DATA_DIR to the UTKFace folder"),
]


def test_whole_utkface_folder_goes_through_both_pipelines(project):
    folder = Path(os.environ["FACE_DATA_DIR"]).resolve()
    files = [p for p in folder.rglob("*") if p.is_file()]
    env = {"FACE_DATA_DIR": str(folder)}
    kedro(project, "run", "--pipelines=ingestion", env=env)
    kedro(project, "run", "--pipelines=preprocessing", env=env)

    manifest = pd.read_parquet(project / "data/03_primary/face_manifest.parquet")
    rejected = pd.read_csv(project / "data/08_reporting/rejected_images.csv")
    assert len(manifest) + len(rejected) == len(files)  # every file accounted for
    ids = set(manifest["image_id"])
    for name in ("39_1_20170116174525125.jpg.chip.jpg", "55_0_0_20170116232725357jpg.chip.jpg"):
        if (folder / name).exists():
            assert name in ids
    arrays = [ShardedArrayDataset(filepath=str(project / f"data/05_model_input/{s}_images")).load() for s in SPLITS]
    assert sum(len(a) for a in arrays) == len(manifest)


def test_aligning_real_utkface_chips_gives_them_back():
    """Detection + alignment onto the measured chip geometry reproduces UTKFace's own chips."""
    from face_pipeline.imaging.decoding import ImageSpec, load_image  # noqa: PLC0415
    from face_pipeline.imaging.detection import DetectionSettings, face_chip, find_faces  # noqa: PLC0415

    folder = Path(os.environ["FACE_DATA_DIR"])
    files = sorted(folder.glob("*.jpg"))[::100][:200]
    settings = DetectionSettings(mode="always")
    differences = []
    for path in files:
        chip = load_image(path.read_bytes(), ImageSpec(color_mode="rgb"))
        faces = find_faces(chip, settings)
        if faces:
            realigned = face_chip(chip, faces[0], settings)
            differences.append(np.abs(realigned.astype(int) - chip)[20:180, 20:180].mean())
    assert len(differences) >= 0.98 * len(files)
    # A chip shifted by 5 px differs by about 14.
    assert np.median(differences) < 15
