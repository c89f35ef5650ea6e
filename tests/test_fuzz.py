"""Seeded fuzzing of ingestion and `face-pipeline predict` with hostile photos, names and links.

Nothing may crash or hang, each bad input must be reported with its reason, and with links out
of the folder refused (``refuse_outside_links``, for folders not trusted) no file outside it may be
read (an audit hook records every file opened). The served model
gets the same photos in tests/test_served_load.py.
"""

import json

import pandas as pd
import pytest
from click.testing import CliRunner
from fuzz_inputs import hostile_folder, reads_outside, time_limit

from face_pipeline.commands.console import cli
from face_pipeline.datasets.folders import ImageFolderDataset
from face_pipeline.inference.photos import inference_settings
from face_pipeline.modelling.builders import build_model
from face_pipeline.pipelines.ingestion.nodes import inspect_images, label_images, select_usable_images

SEEDS = [0, 1]
PHOTOS_PER_SEED = 60
OUTSIDE_REASONS = {"outside the image folder", "outside the folder"}
LINKS_OUT = {"link_out.jpg", "sub/relative_out.jpg"}


def ingestion_params(folder) -> dict:
    return {
        "raw_dir": str(folder),
        "labels": {"source": "manifest", "manifest_file": "labels.csv"},
        "age_range": [0, 120],
        "max_pixels": 40_000_000,
        "workers": 1,
        "chunk_size": 16,
        "refuse_outside_links": True,
        "split": {"fractions": {"train": 0.8, "val": 0.1, "test": 0.1}},
    }


@pytest.mark.parametrize("seed", SEEDS)
def test_ingestion_reports_every_hostile_file_and_reads_nothing_outside_the_folder(tmp_path, seed):
    kinds = hostile_folder(tmp_path, PHOTOS_PER_SEED, seed)
    folder = tmp_path / "photos"
    # Every file labelled, and rows naming files outside the folder in every way a path can.
    strangers = ["../outside/secret.jpg", str(tmp_path / "outside" / "secret.jpg"), "sub/../../outside/secret.jpg"]
    labels = pd.DataFrame({"file": [*kinds, *strangers], "age": 30, "gender": "female"})
    labels.to_csv(folder / "labels.csv", index=False)
    params = ingestion_params(folder)
    stop = reads_outside(folder, tmp_path)
    with time_limit(120):
        raw = ImageFolderDataset(
            path=str(folder),
            dataset={"type": "text.TextDataset", "fs_args": {"open_args_load": {"mode": "rb"}}},
            refuse_outside_links=True,
        ).load()
        usable, rejected = select_usable_images(label_images(inspect_images(raw, params), raw, params), params)
    assert stop() == []
    reasons = dict(zip(rejected["path"].str.removeprefix(f"{folder}/"), rejected["reason"], strict=True))
    for name in [*LINKS_OUT, "dir_out"]:
        assert reasons[name] == "outside the image folder"
    assert reasons["dir_loop"] == "link loop"
    for stranger in strangers:
        assert reasons[stranger] == "file listed in manifest is missing"
    accounted = set(usable["image_id"]) | set(reasons)
    assert set(kinds) <= accounted
    assert rejected["reason"].notna().all() and (rejected["reason"] != "").all()
    for name, kind in kinds.items():  # what must never pass as a usable image
        if kind in ("empty file", "absurd PNG size", "zero PNG size", "link loop", "dangling link"):
            assert name in reasons, (name, kind)


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    for task in ("gender", "age"):
        build_model("default_cnn", (32, 32, 1), task, stem_filters=4, filters=[4], batch_norm=False).save(
            folder / f"{task}.keras"
        )
    settings = inference_settings({"image": {"size": 32, "color_mode": "grayscale"}}, {"detection": {"mode": "auto"}})
    (folder / "settings.json").write_text(json.dumps(settings))
    return ["--model", f"gender={folder / 'gender.keras'}", "--model", f"age={folder / 'age.keras'}",
            "--settings", str(folder / "settings.json")]  # fmt: skip


@pytest.mark.parametrize("seed", SEEDS)
def test_predict_command_gives_each_hostile_photo_a_row_and_reads_nothing_outside(tmp_path, tiny_models, seed):
    kinds = hostile_folder(tmp_path, PHOTOS_PER_SEED, seed)
    folder = tmp_path / "photos"
    stop = reads_outside(folder, tmp_path)
    with time_limit(180):
        result = CliRunner().invoke(
            cli, ["predict", str(folder), *tiny_models, "--format", "json", "--refuse-outside-links"]
        )
    assert stop() == []
    assert result.exit_code == 0, result.output[-3000:]
    text = result.stdout  # the JSON table starts a line of its own; a log line may come before it
    rows = pd.DataFrame(json.loads(text[text.index("[\n") :]))
    rows["name"] = rows["file"].str.removeprefix(f"{folder}/")
    assert set(kinds) <= set(rows["name"])
    bad = rows[rows["status"] == "error"]
    assert bad["reason"].str.len().gt(0).all()
    assert not bad["reason"].str.contains("Traceback").any()
    for name in [*LINKS_OUT, "dir_out"]:
        assert rows.loc[rows["name"] == name, "reason"].str.startswith("outside the folder").all()
    assert rows.loc[rows["name"] == "dir_loop", "reason"].str.startswith("link loop").all()
    for name, kind in kinds.items():
        if kind in ("empty file", "absurd PNG size", "link loop", "dangling link"):
            assert (rows.loc[rows["name"] == name, "status"] == "error").all(), (name, kind)


def test_odd_names_work_as_command_line_arguments(tmp_path, tiny_models, monkeypatch):
    kinds = hostile_folder(tmp_path, 12, seed=3)
    names = [name for name, kind in kinds.items() if kind.startswith("valid")]
    assert names
    monkeypatch.chdir(tmp_path / "photos")  # relative names, a leading dash among them, after `--`
    with time_limit(120):
        result = CliRunner().invoke(cli, ["predict", *tiny_models, "--format", "csv", "--", *names])
    assert result.exit_code == 0, result.output[-2000:]
