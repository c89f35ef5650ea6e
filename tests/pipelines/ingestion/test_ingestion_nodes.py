import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fake_faces import corrupt_jpeg, encode, face_like, png_claiming_size, truncated_jpeg, write_utkface_folder

from face_pipeline.datasets.folders import ImageFolderDataset
from face_pipeline.imaging.decoding import ImageRejected
from face_pipeline.pipelines.ingestion.nodes import (
    MANIFEST_COLUMNS,
    age_band_labels,
    assign_splits,
    check_labels,
    inspect_images,
    label_images,
    parse_utkface_name,
    select_usable_images,
    summarise_data,
)


def params(folder: Path, **overrides) -> dict:
    base = {
        "raw_dir": str(folder),
        "labels": {"source": "filename", "manifest_file": "labels.csv"},
        "age_range": [0, 120],
        "max_pixels": 40_000_000,
        "workers": 1,
        "chunk_size": 8,
        "split": {"fractions": {"train": 0.8, "val": 0.1, "test": 0.1}, "seed": 42, "age_bands": [13, 20, 40, 60]},
    }
    return {**base, **overrides}


def raw_images(folder: Path) -> dict:
    """The folder exactly as the catalog's ``raw_images`` entry loads it."""
    return ImageFolderDataset(
        path=str(folder), dataset={"type": "text.TextDataset", "fs_args": {"open_args_load": {"mode": "rb"}}}
    ).load()


def ingest(folder: Path, **overrides) -> tuple[pd.DataFrame, pd.DataFrame]:
    parameters = params(folder, **overrides)
    raw = raw_images(folder)
    labelled = label_images(inspect_images(raw, parameters), raw, parameters)
    usable, rejected = select_usable_images(labelled, parameters)
    return assign_splits(usable, parameters), rejected


# ---- label parsing ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("25_1_3_20170119171538394.jpg.chip.jpg", {"age": 25, "gender": 1, "race": 3}),
        ("1_0_2_20161219140530307.jpg.chip.jpg", {"age": 1, "gender": 0, "race": 2}),
        ("sub/dir/116_1_0_20170120134921760.jpg.chip.jpg", {"age": 116, "gender": 1, "race": 0}),
        # The three real UTKFace files without a race field keep race = None.
        ("39_1_20170116174525125.jpg.chip.jpg", {"age": 39, "gender": 1, "race": None}),
        ("61_1_20170109142408075.jpg.chip.jpg", {"age": 61, "gender": 1, "race": None}),
        ("61_1_20170109150557335.jpg.chip.jpg", {"age": 61, "gender": 1, "race": None}),
        # The real file without a dot before "jpg.chip.jpg".
        ("55_0_0_20170116232725357jpg.chip.jpg", {"age": 55, "gender": 0, "race": 0}),
    ],
)
def test_utkface_names(name, expected):
    assert parse_utkface_name(name) == expected


@pytest.mark.parametrize("name", ["face.jpg", "25_female_0_20170119171538394.jpg", "25_1.jpg", "_1_0_2017011917.jpg"])
def test_malformed_names_are_rejected(name):
    with pytest.raises(ImageRejected, match="malformed file name"):
        parse_utkface_name(name)


@pytest.mark.parametrize(
    ("age", "gender", "race", "reason"),
    [
        (121, 0, 0, "age out of range"),
        (-1, 0, 0, "age out of range"),
        ("twelve", 0, 0, "age out of range"),
        (12.5, 0, 0, "age out of range"),
        (30, 2, 0, "invalid gender"),
        (30, "x", 0, "invalid gender"),
        (30, 1, 5, "invalid race"),
    ],
)
def test_invalid_labels(age, gender, race, reason):
    with pytest.raises(ImageRejected, match=reason):
        check_labels(age, gender, race, [0, 120])


@pytest.mark.parametrize(("gender", "value"), [("0", 0), (1, 1), ("Male", 0), ("F", 1), ("female", 1), (1.0, 1)])
def test_gender_spellings(gender, value):
    assert check_labels("30", gender, None, [0, 120]) == {"age": 30, "gender": value, "race": None}


# ---- the whole ingestion on a folder with every kind of bad file ------------------


@pytest.fixture
def messy_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "messy"
    write_utkface_folder(folder, 12)
    good = encode(face_like(99, 64))
    files = {
        "30_0_0_20170101000000001.jpg.chip.jpg": good,
        "30_0_0_20170101000000002.jpg.chip.jpg": good,  # same bytes, same labels
        "40_1_0_20170101000000003.jpg.chip.jpg": encode(face_like(98, 64)),
        "41_1_0_20170101000000004.jpg.chip.jpg": encode(face_like(98, 64)),  # same bytes, other age
        "20_0_0_20170101000000005.jpg.chip.jpg": b"",
        "21_0_0_20170101000000006.jpg.chip.jpg": truncated_jpeg(),
        "22_0_0_20170101000000007.jpg.chip.jpg": corrupt_jpeg(),
        "23_0_0_20170101000000008.JPG": b"this is text, not a picture",
        "24_0_0_20170101000000009.png": png_claiming_size(100_000, 100_000),
        "130_0_0_20170101000000010.jpg.chip.jpg": encode(face_like(97, 64)),
        "25_7_0_20170101000000011.jpg.chip.jpg": encode(face_like(96, 64)),
        "no_labels_here.jpg": encode(face_like(95, 64)),
        "39_1_20170116174525125.jpg.chip.jpg": encode(face_like(94, 64)),
        "notes.txt": b"not an image at all",
        "nested/33_1_2_20170101000000012.jpg.chip.jpg": encode(face_like(93, 64).convert("L")),
    }
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return folder


def test_every_bad_file_is_reported_and_the_rest_is_kept(messy_folder):
    manifest, rejected = ingest(messy_folder)
    reasons = dict(zip(rejected["path"].str.rsplit("/", n=1).str[-1], rejected["reason"], strict=True))
    assert reasons == {
        "30_0_0_20170101000000002.jpg.chip.jpg": "duplicate",
        "40_1_0_20170101000000003.jpg.chip.jpg": "duplicate with conflicting labels",
        "41_1_0_20170101000000004.jpg.chip.jpg": "duplicate with conflicting labels",
        "20_0_0_20170101000000005.jpg.chip.jpg": "empty file",
        "21_0_0_20170101000000006.jpg.chip.jpg": "truncated image",
        "22_0_0_20170101000000007.jpg.chip.jpg": reasons["22_0_0_20170101000000007.jpg.chip.jpg"],
        "23_0_0_20170101000000008.JPG": "not an image",
        "24_0_0_20170101000000009.png": "too many pixels",
        "130_0_0_20170101000000010.jpg.chip.jpg": "age out of range",
        "25_7_0_20170101000000011.jpg.chip.jpg": "invalid gender",
        "no_labels_here.jpg": "malformed file name",
        "notes.txt": "not an image extension",
    }
    assert reasons["22_0_0_20170101000000007.jpg.chip.jpg"] in {"corrupt image", "truncated image"}
    duplicate = rejected[rejected["reason"] == "duplicate"]
    assert duplicate["detail"].item() == "same bytes as 30_0_0_20170101000000001.jpg.chip.jpg"

    # 12 generated + first duplicate + race-less file + nested grayscale file
    assert len(manifest) == 15
    assert list(manifest.columns) == MANIFEST_COLUMNS
    assert manifest["image_id"].is_unique
    assert manifest["sha1"].is_unique
    assert set(manifest["split"]) <= {"train", "val", "test"}
    no_race = manifest.set_index("image_id").loc["39_1_20170116174525125.jpg.chip.jpg"]
    assert pd.isna(no_race["race"])
    assert no_race["age"] == 39
    nested = manifest.set_index("image_id").loc["nested/33_1_2_20170101000000012.jpg.chip.jpg"]
    assert (nested["mode"], nested["width"], nested["race"]) == ("L", 64, 2)
    assert nested["path"] == f"{messy_folder}/nested/33_1_2_20170101000000012.jpg.chip.jpg"


def test_worker_processes_give_the_same_result(messy_folder):
    single, _ = ingest(messy_folder)
    pooled, _ = ingest(messy_folder, workers=2, chunk_size=3)
    pd.testing.assert_frame_equal(single, pooled)


def test_no_usable_image_names_the_folder(tmp_path):
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "1_0_0_20170101000000001.jpg").write_bytes(b"")
    (folder / "readme.txt").write_text("nothing here")
    with pytest.raises(ValueError, match=f"No usable image in {folder}"):
        ingest(folder)


def test_labels_from_a_csv_manifest(tmp_path):
    folder = tmp_path / "other_dataset"
    folder.mkdir()
    for index, name in enumerate(["a.jpg", "b.png", "c.jpg", "d.jpg"]):
        (folder / name).write_bytes(encode(face_like(index, 48), "PNG" if name.endswith("png") else "JPEG"))
    (folder / "labels.csv").write_text(
        "file,age,gender,race\na.jpg,31,female,\nb.png,8,0,4\nc.jpg,200,1,0\nghost.jpg,20,1,0\n"
    )
    manifest, rejected = ingest(folder, labels={"source": "manifest", "manifest_file": "labels.csv"})
    labels = manifest.set_index("image_id")[["age", "gender", "race"]]
    assert labels.loc["a.jpg"].tolist()[:2] == [31, 1]
    assert pd.isna(labels.loc["a.jpg", "race"])
    assert labels.loc["b.png"].tolist() == [8, 0, 4]
    reasons = dict(zip(rejected["path"].str.rsplit("/", n=1).str[-1], rejected["reason"], strict=True))
    assert reasons == {
        "c.jpg": "age out of range",
        "d.jpg": "no label in manifest",
        "ghost.jpg": "file listed in manifest is missing",
    }


def test_manifest_source_without_the_file_says_what_to_do(utkface_folder):
    with pytest.raises(FileNotFoundError, match=r"labels\.csv"):
        ingest(utkface_folder, labels={"source": "manifest", "manifest_file": "labels.csv"})


# ---- splitting ---------------------------------------------------------------------


def synthetic_images(count: int, seed: int = 0, prefix: str = "img") -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "image_id": [f"{prefix}{i:06d}.jpg" for i in range(count)],
            "path": "",
            "age": rng.integers(1, 100, count),
            "gender": rng.integers(0, 2, count),
            "race": pd.array([None] * count, dtype="Int8"),
            "width": 200,
            "height": 200,
            "mode": "RGB",
            "sha1": [f"{i:040x}" for i in range(count)],
        }
    )


SPLIT_PARAMS = params(Path("unused"))


def test_split_is_deterministic_and_depends_on_the_seed():
    images = synthetic_images(500)
    first = assign_splits(images, SPLIT_PARAMS)["split"]
    assert first.equals(assign_splits(images, SPLIT_PARAMS)["split"])
    other_seed = {**SPLIT_PARAMS, "split": {**SPLIT_PARAMS["split"], "seed": 7}}
    assert (assign_splits(images, other_seed)["split"] != first).sum() > 50


def test_split_is_stable_when_images_are_added_or_removed():
    images = synthetic_images(4000)
    before = assign_splits(images, SPLIT_PARAMS).set_index("image_id")["split"]
    fewer = assign_splits(images.sample(frac=0.5, random_state=1), SPLIT_PARAMS).set_index("image_id")["split"]
    more = assign_splits(pd.concat([images, synthetic_images(1600, 1, "new")]), SPLIT_PARAMS)
    more = more.set_index("image_id")["split"][before.index]
    for after, old in ((fewer, before[fewer.index]), (more, before)):
        moved = after != old
        assert moved.mean() < 0.03
        # Only boundary images move, and only into the neighbouring split: never train <-> test.
        assert not (moved & ((after == "train") & (old == "test") | (after == "test") & (old == "train"))).any()


def test_split_fractions_hold_exactly_in_every_gender_and_age_stratum():
    manifest = assign_splits(synthetic_images(5000), SPLIT_PARAMS)
    bands = pd.cut(manifest["age"], [0, 13, 20, 40, 60, 200], right=False)
    for _, stratum in manifest.groupby([manifest["gender"], bands], observed=True):
        counts = stratum["split"].value_counts()
        for split, expected in SPLIT_PARAMS["split"]["fractions"].items():
            assert abs(counts[split] - expected * len(stratum)) <= 1, (split, counts.to_dict())


def test_split_fractions_are_validated():
    bad = {**SPLIT_PARAMS, "split": {**SPLIT_PARAMS["split"], "fractions": {"train": 0.9, "test": 0.2}}}
    with pytest.raises(ValueError, match="fractions"):
        assign_splits(synthetic_images(10), bad)


# ---- summary -------------------------------------------------------------------------


def test_age_band_labels():
    assert age_band_labels([13, 20, 40, 60]) == ["0-12", "13-19", "20-39", "40-59", "60+"]


def test_summary_counts_add_up(messy_folder):
    manifest, rejected = ingest(messy_folder)
    summary = summarise_data(manifest, rejected, params(messy_folder))
    assert summary["images"] == len(manifest) == sum(s["images"] for s in summary["splits"].values())
    assert summary["rejected"] == len(rejected) == sum(summary["rejected_by_reason"].values())
    assert sum(summary["gender"].values()) == len(manifest)
    assert sum(summary["age_histogram"].values()) == len(manifest)
    assert summary["race"]["unknown"] == 1
    assert sum(summary["race"].values()) == len(manifest)
    json.dumps(summary)  # plain types only, so JSONDataset can save it


def test_max_images_reads_a_fixed_sample_of_the_folder(tmp_path):
    folder = tmp_path / "faces"
    write_utkface_folder(folder, 30)
    (folder / "notes.txt").write_text("not an image")  # reported whatever the sample
    read = []

    def counting(raw: dict) -> dict:
        def wrap(pid, load):
            return lambda: read.append(pid) or load()

        return {pid: wrap(pid, load) for pid, load in raw.items()}

    inspected = inspect_images(counting(raw_images(folder)), params(folder, max_images=10))
    images = inspected[inspected["reason"].isna()]["image_id"].tolist()
    assert len(images) == 10 and sorted(read) == sorted(images)  # the others are never read
    assert "notes.txt" in set(inspected["image_id"])
    again = inspect_images(raw_images(folder), params(folder, max_images=10))
    assert again["image_id"].tolist() == inspected["image_id"].tolist()
    larger = inspect_images(raw_images(folder), params(folder, max_images=20))
    assert set(images) < set(larger["image_id"])  # a larger sample holds the smaller one
    assert len(inspect_images(raw_images(folder), params(folder, max_images=100))) == 31
    manifest, rejected = ingest(folder, max_images=10)
    summary = summarise_data(manifest, rejected, params(folder, max_images=10))
    assert summary["images"] == 10 and summary["max_images"] == 10
