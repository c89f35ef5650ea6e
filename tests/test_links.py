"""Folders of links: followed by default (curated subsets, DVC's and Hugging Face's caches), loops
reported without hanging, and links out of the folder refused where that is asked for."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import run_in_process
from fake_faces import write_utkface_folder
from fuzz_inputs import time_limit
from small_models import save_small_models

from face_pipeline.commands.console import cli
from face_pipeline.config import ConfigError
from face_pipeline.parameters import IngestionSettings

pytestmark = pytest.mark.integration


def linked_folder(root: Path, count: int = 12) -> tuple[Path, list[str]]:
    """``root/linked``: the photos of ``root/store`` as links, the Hugging Face way (a snapshot
    whose files link into a sibling ``blobs/``), through a link to a folder, and a folder link
    back to the folder itself (a loop). Returns the folder and the names that lead to a photo."""
    store = root / "store"
    labels = write_utkface_folder(store / "blobs", count)
    names = [row["image_id"] for row in labels]
    folder = root / "linked"
    (folder / "snapshot").mkdir(parents=True)
    half = count // 2
    for name in names[:half]:
        os.symlink(Path("..") / ".." / "store" / "blobs" / name, folder / "snapshot" / name)
    subset = store / "subset"
    subset.mkdir()
    for name in names[half:]:
        os.symlink(store / "blobs" / name, subset / name)
    os.symlink(subset, folder / "more")
    os.symlink(folder, folder / "snapshot" / "loop")
    return folder, [f"snapshot/{name}" for name in names[:half]] + [f"more/{name}" for name in names[half:]]


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> list[str]:
    paths = save_small_models(tmp_path_factory.mktemp("models"))
    return ["--model", f"gender={paths['gender']}", "--model", f"age={paths['age']}",
            "--settings", str(paths["settings"])]  # fmt: skip


def predict_rows(folder: Path, *options: str) -> pd.DataFrame:
    with time_limit(120):
        result = CliRunner().invoke(cli, ["predict", str(folder), "--format", "json", *options])
    text = result.stdout
    rows = pd.DataFrame(json.loads(text[text.index("[") :]))
    rows["name"] = rows["file"].str.removeprefix(f"{folder}/")
    return rows.drop_duplicates("name").set_index("name")


def test_predict_reads_photos_behind_links_and_reports_a_loop(tmp_path, models):
    folder, photos = linked_folder(tmp_path)
    rows = predict_rows(folder, *models)
    assert set(rows.index) == {*photos, "snapshot/loop"}
    assert (rows.loc[photos, "status"] != "error").all(), rows.loc[photos, "reason"].dropna().tolist()
    assert rows.loc["snapshot/loop", "status"] == "error"
    assert rows.loc["snapshot/loop", "reason"].startswith("link loop: ")


def test_predict_refuses_links_out_of_the_folder_when_asked(tmp_path, models):
    folder, photos = linked_folder(tmp_path)
    rows = predict_rows(folder, *models, "--refuse-outside-links")
    # The snapshot's links and the link to a folder elsewhere, each reported once, none read.
    refused = [name for name in photos if name.startswith("snapshot/")] + ["more"]
    assert set(rows.index) == {*refused, "snapshot/loop"}
    assert rows.loc[refused, "reason"].str.startswith("outside the folder: ").all()


def test_ingestion_reads_a_folder_of_links_and_reports_a_loop(project, tmp_path, monkeypatch):
    folder, photos = linked_folder(tmp_path, count=24)
    with time_limit(300):
        run_in_process(project, "ingestion", monkeypatch, env={"FACE_DATA_DIR": str(folder)})
    manifest = pd.read_parquet(project / "data/03_primary/face_manifest.parquet")
    rejected = pd.read_csv(project / "data/08_reporting/rejected_images.csv")
    assert sorted(manifest["image_id"]) == sorted(photos)
    assert rejected["reason"].tolist() == ["link loop"]
    assert rejected["path"].iloc[0].endswith("snapshot/loop")


def test_ingestion_refuses_links_out_of_the_folder_when_asked(project, tmp_path, monkeypatch):
    folder, photos = linked_folder(tmp_path)
    [own] = write_utkface_folder(folder, 1, seed=5)  # a file of the folder's own
    params = {"ingestion": {"refuse_outside_links": True}}
    with time_limit(300):
        run_in_process(project, "ingestion", monkeypatch, env={"FACE_DATA_DIR": str(folder)}, params=params)
    manifest = pd.read_parquet(project / "data/03_primary/face_manifest.parquet")
    rejected = pd.read_csv(project / "data/08_reporting/rejected_images.csv")
    assert manifest["image_id"].tolist() == [own["image_id"]]
    reasons = dict(zip(rejected["path"].str.removeprefix(f"{folder}/"), rejected["reason"], strict=True))
    refused = [name for name in photos if name.startswith("snapshot/")] + ["more"]
    assert reasons == {**dict.fromkeys(refused, "outside the image folder"), "snapshot/loop": "link loop"}


def test_the_setting_is_checked():
    params = {"raw_dir": "x", "labels": {}, "split": {"fractions": {"train": 1, "val": 0, "test": 0}}}
    assert IngestionSettings.from_params({**params, "refuse_outside_links": True}).refuse_outside_links
    with pytest.raises(ConfigError, match=r"ingestion\.refuse_outside_links must be true or false; got 'yes'"):
        IngestionSettings.from_params({**params, "refuse_outside_links": "yes"})
