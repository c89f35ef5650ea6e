"""Ingestion: find every file, check it, label it, drop nothing silently, split."""

from __future__ import annotations

import hashlib
import io
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from face_pipeline.datasets.folders import Refused, outside_folder
from face_pipeline.imaging.decoding import IMAGE_EXTENSIONS, ImageRejected, inspect_image, is_image_file
from face_pipeline.labels import GENDERS, RACES, SPLITS
from face_pipeline.ops.parallel import map_chunks
from face_pipeline.parameters import IngestionSettings

logger = logging.getLogger(__name__)


# AGE_GENDER_RACE_DATETIME.jpg.chip.jpg; a few real files lack RACE, one lacks the dot after DATETIME.
UTKFACE_NAME = re.compile(r"^(?P<age>\d+)_(?P<gender>\d+)_(?:(?P<race>\d+)_)?\d{8,}")
GENDER_WORDS = {"0": 0, "1": 1, "m": 0, "male": 0, "f": 1, "female": 1}

INSPECTION_COLUMNS = ["image_id", "sha1", "size_bytes", "width", "height", "mode", "format", "reason", "detail"]
MANIFEST_COLUMNS = ["image_id", "path", "age", "gender", "race", "split", "width", "height", "mode", "sha1"]
REJECTED_COLUMNS = ["path", "reason", "detail"]


def _inspect_chunk(items: Sequence[tuple[str, Callable[[], bytes]]], max_pixels: int) -> list[dict]:
    rows = []
    for image_id, load in items:
        row: dict[str, Any] = {"image_id": image_id}
        try:
            data = load()
        except Exception as exc:  # noqa: BLE001 - any storage error is reported, not fatal
            rows.append({**row, "reason": "unreadable file", "detail": f"{type(exc).__name__}: {exc}"})
            continue
        row["sha1"] = hashlib.sha1(data).hexdigest()
        row["size_bytes"] = len(data)
        try:
            info = inspect_image(data, max_pixels)
        except ImageRejected as exc:
            rows.append({**row, "reason": exc.reason, "detail": exc.detail})
            continue
        except Exception as exc:  # noqa: BLE001 - a decoder bug must not stop a long run
            rows.append({**row, "reason": "corrupt image", "detail": f"{type(exc).__name__}: {exc}"})
            continue
        rows.append({**row, "width": info.width, "height": info.height, "mode": info.mode, "format": info.format})
    return rows


def inspect_images(raw_images: dict[str, Callable[[], bytes]], params: Mapping[str, Any]) -> pd.DataFrame:
    """One row per file in the raw folder: checksum, size, mode, or why it is unusable.

    Files without an image extension are listed too (reason ``not an image
    extension``), except the label manifest itself.
    """
    settings = IngestionSettings.from_params(params)
    manifest_file = settings.labels.manifest_file if settings.labels.source == "manifest" else None
    raw_dir = str(settings.raw_dir)
    # Links are followed unless the folder is not trusted: then one out of it is reported, never read.
    outside = set()
    if settings.refuse_outside_links:
        outside = {pid for pid in raw_images if outside_folder(raw_dir, f"{raw_dir}/{pid}")}
    # What the listing did not follow (a folder link in a loop) reports itself.
    refused = {pid: load for pid, load in raw_images.items() if isinstance(load, Refused) and pid not in outside}
    listed = {pid: load for pid, load in raw_images.items() if pid not in outside and pid not in refused}
    images = sample_images(sorted((pid, load) for pid, load in listed.items() if is_image_file(pid)), settings)
    others = sorted(pid for pid in listed if not is_image_file(pid) and pid != manifest_file)
    rows: list[dict] = []
    for _, chunk_rows in map_chunks(
        _inspect_chunk,
        images,
        workers=settings.workers,
        chunk_size=settings.chunk_size,
        scheduler=settings.scheduler,
        description="Inspecting images",
        max_pixels=settings.max_pixels,
    ):
        rows.extend(chunk_rows)
    rows.extend(
        {
            "image_id": pid,
            "reason": "not an image extension",
            "detail": f"expected one of {', '.join(IMAGE_EXTENSIONS)}",
        }
        for pid in others
    )
    rows.extend(
        {
            "image_id": pid,
            "reason": "outside the image folder",
            "detail": f"a link to a file or folder outside {raw_dir}; not read",
        }
        for pid in sorted(outside)
    )
    rows.extend(
        {"image_id": pid, "reason": refusal.reason, "detail": refusal.detail} for pid, refusal in refused.items()
    )
    table = pd.DataFrame(rows, columns=INSPECTION_COLUMNS)
    return table.astype(
        {"width": "Int32", "height": "Int32", "size_bytes": "Int64", "reason": "string", "detail": "string"}
    )


def sample_images(images: list[tuple[str, Any]], settings: IngestionSettings) -> list[tuple[str, Any]]:
    """At most ``max_images`` of ``images`` (``(id, load)`` pairs, sorted), chosen by a hash of each id
    and the split seed: the same folder always gives the same sample, and a larger sample holds a
    smaller one. The others are never read. All of them when ``max_images`` is None."""
    limit = settings.max_images
    if limit is None or len(images) <= limit:
        return images
    draw = stable_uniform(pd.Series([pid for pid, _ in images]), f"sample-{settings.split.seed}")
    kept = np.sort(np.argsort(draw, kind="stable")[: int(limit)])
    logger.warning(
        "A sample of %d of the %d image files (ingestion.max_images): the others are not read", len(kept), len(images)
    )
    return [images[index] for index in kept]


def parse_utkface_name(file_name: str) -> dict[str, Any]:
    """Labels from ``AGE_GENDER_RACE_DATETIME.jpg.chip.jpg``; race may be missing.

    Raises ``ImageRejected`` with reason ``malformed file name`` when the name
    does not follow the pattern.
    """
    base = file_name.rsplit("/", 1)[-1]
    match = UTKFACE_NAME.match(base)
    if not match:
        raise ImageRejected("malformed file name", f"{base!r} is not AGE_GENDER_RACE_DATETIME.jpg.chip.jpg")
    race = match["race"]
    return {"age": int(match["age"]), "gender": int(match["gender"]), "race": None if race is None else int(race)}


def _as_int(value: Any) -> int | None:
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return None
    try:
        number = float(str(value).strip())
    except ValueError:
        return None
    return int(number) if number.is_integer() else None


def check_labels(age: Any, gender: Any, race: Any, age_range: Sequence[int]) -> dict[str, Any]:
    """Validate one image's labels; raise ``ImageRejected`` naming the first bad field."""
    age_value = _as_int(age)
    if age_value is None or not age_range[0] <= age_value <= age_range[1]:
        raise ImageRejected("age out of range", f"age {age!r} is not a whole number in {age_range[0]}-{age_range[1]}")
    gender_value = GENDER_WORDS.get(str(gender).strip().lower().removesuffix(".0"))
    if gender_value is None:
        raise ImageRejected("invalid gender", f"gender {gender!r} is not 0/1 (male/female)")
    race_value = _as_int(race)
    if race is not None and not pd.isna(race) and (race_value is None or not 0 <= race_value < len(RACES)):
        raise ImageRejected("invalid race", f"race {race!r} is not 0-{len(RACES) - 1}")
    return {"age": age_value, "gender": gender_value, "race": race_value}


def _read_label_manifest(raw_images: dict[str, Callable[[], bytes]], manifest_file: str) -> pd.DataFrame:
    if manifest_file not in raw_images:
        raise FileNotFoundError(
            f"labels.source is 'manifest' but {manifest_file!r} is not in the image folder; "
            "add it there or set ingestion.labels.manifest_file"
        )
    data = io.BytesIO(raw_images[manifest_file]())
    table = pd.read_parquet(data) if manifest_file.lower().endswith(".parquet") else pd.read_csv(data, dtype=str)
    table.columns = [str(column).strip().lower() for column in table.columns]
    missing = {"file", "age", "gender"} - set(table.columns)
    if missing:
        raise ValueError(f"label manifest {manifest_file!r} lacks column(s) {sorted(missing)}")
    if "race" not in table.columns:
        table["race"] = None
    return table.drop_duplicates("file", keep="first").set_index("file")


def label_images(
    image_inspection: pd.DataFrame, raw_images: dict[str, Callable[[], bytes]], params: Mapping[str, Any]
) -> pd.DataFrame:
    """Add ``age``, ``gender``, ``race`` from file names or a CSV/Parquet manifest.

    Rows whose labels are missing or invalid get a rejection ``reason``.
    """
    settings = IngestionSettings.from_params(params)
    source = settings.labels.source
    manifest_file = settings.labels.manifest_file
    raw_dir = str(settings.raw_dir)
    refuse = settings.refuse_outside_links
    if source == "manifest" and refuse and outside_folder(raw_dir, f"{raw_dir}/{manifest_file}"):
        raise ValueError(
            f"label manifest {manifest_file!r} links to a file outside {raw_dir}, and links out of "
            "the folder are refused (refuse_outside_links); copy it in"
        )
    manifest = _read_label_manifest(raw_images, manifest_file) if source == "manifest" else None
    labelled = image_inspection.copy()
    ages, genders, races = [], [], []
    for index, row in labelled.iterrows():
        labels = {"age": None, "gender": None, "race": None}
        if pd.isna(row["reason"]):
            try:
                if manifest is None:
                    raw = parse_utkface_name(row["image_id"])
                elif row["image_id"] in manifest.index:
                    raw = manifest.loc[row["image_id"]].to_dict()
                else:
                    raise ImageRejected("no label in manifest", f"{settings.labels.manifest_file} has no row")
                labels = check_labels(raw["age"], raw["gender"], raw.get("race"), settings.age_range)
            except ImageRejected as exc:
                labelled.loc[index, ["reason", "detail"]] = [exc.reason, exc.detail]
        ages.append(labels["age"])
        genders.append(labels["gender"])
        races.append(labels["race"])
    labelled["age"] = pd.array(ages, dtype="Int16")
    labelled["gender"] = pd.array(genders, dtype="Int8")
    labelled["race"] = pd.array(races, dtype="Int8")
    if manifest is not None:
        missing_files = sorted(set(manifest.index) - set(labelled["image_id"]))
        extra = pd.DataFrame({"image_id": missing_files, "reason": "file listed in manifest is missing", "detail": ""})
        labelled = pd.concat([labelled, extra.astype({"reason": "string"})], ignore_index=True)
    return labelled


def select_usable_images(labelled_images: pd.DataFrame, params: Mapping[str, Any]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split inspected files into usable images and a rejection report.

    Exact duplicates (same bytes) keep the first file by name and reject the
    others naming it; when the copies disagree on age or gender no copy can be
    trusted and all are rejected. Fails only when no usable image is left.
    """
    settings = IngestionSettings.from_params(params)
    table = labelled_images.sort_values("image_id", kind="stable").reset_index(drop=True)
    ok = table["reason"].isna()
    copies = table[ok].groupby("sha1")
    first_id = copies["image_id"].transform("first")
    conflicting = copies[["age", "gender"]].transform("nunique").max(axis=1) > 1
    repeated = table[ok].duplicated("sha1", keep="first")
    table.loc[conflicting[conflicting].index, ["reason", "detail"]] = [
        "duplicate with conflicting labels",
        "same bytes, different age or gender: every copy is dropped",
    ]
    plain_repeats = repeated & ~conflicting
    table.loc[plain_repeats[plain_repeats].index, "reason"] = "duplicate"
    table.loc[plain_repeats[plain_repeats].index, "detail"] = "same bytes as " + first_id[plain_repeats]

    raw_dir = str(settings.raw_dir).rstrip("/")
    table["path"] = raw_dir + "/" + table["image_id"]
    usable = table[table["reason"].isna()].drop(columns=["reason", "detail"]).reset_index(drop=True)
    rejected = table[table["reason"].notna()][REJECTED_COLUMNS].reset_index(drop=True)
    rejected["detail"] = rejected["detail"].fillna("")

    counts = rejected["reason"].value_counts()
    logger.info("Usable images: %d of %d files in %s", len(usable), len(table), raw_dir)
    for reason, count in counts.items():
        logger.warning("Rejected %d file(s): %s (see rejected_images)", count, reason)
    if usable.empty:
        raise ValueError(
            f"No usable image in {raw_dir}: {len(table)} file(s) found, all rejected "
            f"({', '.join(f'{r}: {c}' for r, c in counts.items()) or 'none'})"
        )
    return usable, rejected


def age_band_labels(edges: Sequence[int]) -> list[str]:
    """``[13, 20, 40, 60]`` -> ``['0-12', '13-19', '20-39', '40-59', '60+']``."""
    lows = [0, *edges]
    return [f"{low}-{high - 1}" for low, high in zip(lows, edges, strict=False)] + [f"{lows[-1]}+"]


def age_bands(ages: pd.Series, edges: Sequence[int]) -> pd.Series:
    return pd.cut(ages.astype(float), bins=[-np.inf, *edges, np.inf], right=False, labels=age_band_labels(edges))


def stable_uniform(keys: pd.Series, seed: int | str) -> np.ndarray:
    """A number in [0, 1) per key that depends on nothing but the key and seed."""
    return np.array(
        [int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:8], "big") / 2**64 for key in keys]
    )


def assign_splits(usable_images: pd.DataFrame, params: Mapping[str, Any]) -> pd.DataFrame:
    """Deterministic train/val/test assignment, stratified by gender and age band.

    Each image gets a number in [0, 1) from a hash of its id and the seed.
    Within a stratum (gender x age band), images are ordered by that number and
    the first 80% (say) go to train, the next 10% to val, the rest to test, so
    every stratum is split in the configured fractions (within one image).

    Because the order inside a stratum never changes, adding or removing
    images only moves the few images that sit at a stratum's split boundary;
    every other image keeps its split.
    """
    settings = IngestionSettings.from_params(params)
    split_params = settings.split
    fractions = split_params.fractions
    if set(fractions) != set(SPLITS) or not np.isclose(sum(fractions.values()), 1.0):
        raise ValueError(f"split.fractions needs train/val/test summing to 1, got {fractions}")
    bounds = np.cumsum([fractions[name] for name in SPLITS])

    draw = pd.Series(stable_uniform(usable_images["image_id"], split_params.seed), index=usable_images.index)
    strata = [usable_images["gender"], age_bands(usable_images["age"], split_params.age_bands)]
    rank = draw.groupby(strata, observed=True).rank(method="first")
    size = draw.groupby(strata, observed=True).transform("size")
    position = (rank - 0.5) / size  # the image's quantile inside its stratum
    split_index = np.minimum(np.searchsorted(bounds, position.to_numpy(), side="right"), len(SPLITS) - 1)
    manifest = usable_images.assign(split=pd.Categorical.from_codes(split_index, categories=list(SPLITS)))
    return manifest[MANIFEST_COLUMNS].reset_index(drop=True)


def _counts(values: pd.Series) -> dict[str, int]:
    return {str(key): int(count) for key, count in values.value_counts(sort=False).sort_index().items()}


def summarise_data(face_manifest: pd.DataFrame, rejected_images: pd.DataFrame, params: Mapping[str, Any]) -> dict:
    """Counts per split, gender balance, age histogram, race counts, rejections."""
    settings = IngestionSettings.from_params(params)
    edges = settings.split.age_bands
    bands = age_bands(face_manifest["age"], edges)
    race_names = face_manifest["race"].map(dict(enumerate(RACES)), na_action="ignore").fillna("unknown")

    def describe(rows: pd.DataFrame) -> dict:
        return {
            "images": len(rows),
            "female_share": round(float(rows["gender"].mean()), 4) if len(rows) else None,
            "age_mean": round(float(rows["age"].mean()), 2) if len(rows) else None,
            "age_bands": _counts(bands[rows.index]),
        }

    decades = (face_manifest["age"] // 10 * 10).astype(int)
    return {
        "images": len(face_manifest),
        "rejected": len(rejected_images),
        "max_images": settings.max_images,
        "rejected_by_reason": _counts(rejected_images["reason"]),
        "splits": {name: describe(face_manifest[face_manifest["split"] == name]) for name in SPLITS},
        "gender": _counts(face_manifest["gender"].map(dict(enumerate(GENDERS)))),
        "age_histogram": {f"{d}-{d + 9}": int(n) for d, n in decades.value_counts().sort_index().items()},
        "race": _counts(race_names),
        "test_share_by_stratum": (
            face_manifest.assign(
                stratum=face_manifest["gender"].map(dict(enumerate(GENDERS))) + " " + bands.astype(str)
            )
            .groupby("stratum")["split"]
            .apply(lambda s: round(float((s == "test").mean()), 4))
            .to_dict()
        ),
    }
