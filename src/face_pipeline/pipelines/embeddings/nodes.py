"""Embeddings: dlib's face-recognition embedding of every labelled image, computed once per image content.

Each image is found and framed exactly as a photo is at prediction time (``predict.prepare_photo``
with the saved detection settings), then embedded (``face_pipeline.embedding.descriptor``). Embeddings are
cached by the image's content (``embedding.content_key``) in a partitioned dataset: a later run,
another split or another folder holding the same image computes nothing again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from face_pipeline.embedding.descriptor import (
    EMBEDDING_SIZE,
    METHOD,
    EmbeddingSettings,
    content_key,
    embedder,
)
from face_pipeline.imaging.decoding import ImageSpec
from face_pipeline.imaging.detection import DetectionSettings
from face_pipeline.inference.batching import network_outputs
from face_pipeline.inference.photos import prepare_photo
from face_pipeline.ops.parallel import map_chunks

logger = logging.getLogger(__name__)

VECTOR_COLUMNS = [f"e{index:03d}" for index in range(EMBEDDING_SIZE)]
STATUS_COLUMNS = ["status", "reason"]
FAILURE_COLUMNS = ["split", "image_id", "status", "reason"]
# The framing only needs a tiny network input: the chips for the embedding are what is kept.
_NO_INPUT = ImageSpec(size=8)


def _chips_of(
    items: Sequence[tuple[str, Callable[[], bytes]]], detection: DetectionSettings
) -> tuple[list[tuple[str, str]], list]:
    """Per image: its status and reason, and the embedding chip of its most confident face (or None)."""
    outcomes, chips = [], []
    for name, data in items:
        [row, *_], inputs = prepare_photo(name, data, _NO_INPUT, detection, embedding_chips=True)
        outcomes.append((row["status"], row.get("reason") or ""))
        chips.append(inputs[0][1] if inputs else None)
    return outcomes, chips


def embedded(chips: Sequence[np.ndarray | None], network: Any, batch_size: int) -> np.ndarray:
    """``(len(chips), 128)`` embeddings by ``network`` (``embedding.embedder``); NaN rows where a chip is None."""
    vectors = np.full((len(chips), EMBEDDING_SIZE), np.nan, np.float32)
    found = [index for index, chip in enumerate(chips) if chip is not None]
    if found:
        [vectors[found]] = network_outputs(network, np.stack([chips[index] for index in found]), batch_size).values()
    return vectors


def embed_chunk(
    items: Sequence[tuple[str, Callable[[], bytes]]], detection: DetectionSettings, backend: str, batch_size: int
) -> tuple[list[tuple[str, str]], np.ndarray | list]:
    """A chunk of images: statuses, and their embeddings (dlib, here) or their chips (Keras, batched later)."""
    outcomes, chips = _chips_of(items, detection)
    return outcomes, embedded(chips, embedder("dlib"), batch_size) if backend == "dlib" else chips


def cached_embeddings(cache: dict[str, Callable[[], pd.DataFrame]]) -> pd.DataFrame:
    """Every cached embedding of this ``METHOD`` by content key (the cache's partitions, loaded)."""
    parts = [load() for name, load in sorted(cache.items()) if name.startswith(f"{METHOD}/")]
    if not parts:
        return pd.DataFrame(columns=["key", *STATUS_COLUMNS, *VECTOR_COLUMNS]).set_index("key")
    return pd.concat(parts, ignore_index=True).drop_duplicates("key", keep="last").set_index("key")


def _compute(
    items: list[tuple[str, Callable[[], bytes]]],
    settings: EmbeddingSettings,
    detection: DetectionSettings,
    description: str,
) -> tuple[list[tuple[str, str]], np.ndarray]:
    """Statuses and embeddings (NaN rows where no face was found) for ``items``, over the cores."""
    outcomes: list[tuple[str, str]] = []
    vectors: list[np.ndarray] = []
    network = None if settings.backend == "dlib" else embedder(settings.backend)
    for _, (chunk_outcomes, result) in map_chunks(
        embed_chunk,
        items,
        workers=settings.workers,
        chunk_size=settings.chunk_size,
        scheduler=settings.scheduler,
        description=description,
        detection=detection,
        backend=settings.backend,
        batch_size=settings.batch_size,
    ):
        outcomes.extend(chunk_outcomes)
        # Chips came back from a Keras backend: it embeds them here, batched.
        vectors.append(result if network is None else embedded(result, network, settings.batch_size))
    return outcomes, np.concatenate(vectors) if vectors else np.empty((0, EMBEDDING_SIZE), np.float32)


def _key(image_id: str, raw_images: dict[str, Callable[[], bytes]]) -> str:
    """The image's content key, or ``unreadable:<reason>`` when it cannot be read now."""
    try:
        return content_key(raw_images[image_id]())
    except Exception as exc:  # noqa: BLE001 - one file gone since ingestion must not stop the run
        return f"unreadable:unreadable image: {type(exc).__name__}: {exc}"


def embed_images(
    labels: pd.DataFrame,
    raw_images: dict[str, Callable[[], bytes]],
    cache: dict[str, Callable[[], pd.DataFrame]],
    params: dict[str, Any],
    detection_params: dict[str, Any],
    split: str,
) -> tuple[pd.DataFrame, dict[str, pd.DataFrame], dict[str, Any]]:
    """The embedding of every image of ``labels`` (row-aligned: ``image_id``, status, reason, e000...).

    Images whose content is in ``cache`` are not decoded again; the others are embedded over the
    cores (or on Dask with ``scheduler``) and returned as a new cache partition. An image without
    a face, or unreadable, keeps its row with status and reason and empty values: it is reported
    (``embedding_failures``), and the heads train and answer without it.
    """
    settings = EmbeddingSettings.from_params(params)
    detection = DetectionSettings.from_params(detection_params)
    started = time.perf_counter()
    known = cached_embeddings(cache)
    # Each file is read to be hashed, then let go: memory does not grow with the folder.
    keys = {image_id: _key(image_id, raw_images) for image_id in dict.fromkeys(labels["image_id"])}
    unreadable = {key for key in keys.values() if key.startswith("unreadable:")}
    if unreadable:  # changed or gone since ingestion: a row saying so, no embedding
        rows = [(key, "error", key.removeprefix("unreadable:"), *[np.nan] * EMBEDDING_SIZE) for key in unreadable]
        known = pd.concat(
            [known, pd.DataFrame(rows, columns=["key", *STATUS_COLUMNS, *VECTOR_COLUMNS]).set_index("key")]
        )
    missing = [image_id for image_id in dict.fromkeys(labels["image_id"]) if keys[image_id] not in known.index]
    new = pd.DataFrame(columns=["key", *STATUS_COLUMNS, *VECTOR_COLUMNS])
    if missing:
        outcomes, vectors = _compute(
            [(image_id, raw_images[image_id]) for image_id in missing], settings, detection, f"Embedding {split} images"
        )
        new = pd.concat(
            [
                pd.DataFrame(
                    {
                        "key": [keys[i] for i in missing],
                        **dict(zip(STATUS_COLUMNS, zip(*outcomes, strict=True), strict=True)),
                    }
                ),
                pd.DataFrame(vectors, columns=VECTOR_COLUMNS),
            ],
            axis=1,
        ).drop_duplicates("key")
        known = pd.concat([known, new.set_index("key")])
    rows = known.loc[[keys[image_id] for image_id in labels["image_id"]]].reset_index(drop=True)
    table = pd.concat(
        [
            pd.DataFrame({"image_id": labels["image_id"].to_numpy()}),
            rows.astype(dict.fromkeys(VECTOR_COLUMNS, "float32")),
        ],
        axis=1,
    )
    failed = int((table["status"] != "ok").sum())
    if failed:
        logger.warning("%s: %d image(s) have no embedding (see embedding_failures)", split, failed)
    summary = {
        "images": len(labels),
        "reused": len(labels) - len(missing),
        "computed": len(missing),
        "without_embedding": failed,
        "seconds": round(time.perf_counter() - started, 1),
        "method": METHOD,
        "backend": settings.backend,
    }
    logger.info("%s embeddings: %s", split, summary)
    partition = {f"{METHOD}/{split}-{content_key(''.join(new['key']).encode())[:16]}": new} if len(new) else {}
    return table, partition, summary


def embedding_failures(*tables: pd.DataFrame, splits: Sequence[str]) -> pd.DataFrame:
    """The images of every split that have no embedding, with the reason."""
    failures = [
        table.loc[table["status"] != "ok", ["image_id", *STATUS_COLUMNS]].assign(split=split)
        for split, table in zip(splits, tables, strict=True)
    ]
    return (
        pd.concat(failures, ignore_index=True)[FAILURE_COLUMNS] if failures else pd.DataFrame(columns=FAILURE_COLUMNS)
    )


def embedding_summary(*summaries: dict[str, Any], splits: Sequence[str]) -> dict[str, Any]:
    """Per split: images, how many embeddings were reused from the cache and how many computed."""
    return dict(zip(splits, summaries, strict=True))


def embedding_matrix(table: pd.DataFrame) -> np.ndarray:
    """The ``(N, 128)`` float32 embeddings of an embeddings table (NaN rows for images without one)."""
    return table[VECTOR_COLUMNS].to_numpy(np.float32)


def with_embeddings(embeddings: pd.DataFrame, labels: pd.DataFrame) -> tuple[np.ndarray, pd.DataFrame, np.ndarray]:
    """The rows that have an embedding: their embeddings, labels, and the mask over all rows."""
    if len(embeddings) != len(labels) or not (embeddings["image_id"].to_numpy() == labels["image_id"].to_numpy()).all():
        raise ValueError("embeddings and labels are not row-aligned: run the embeddings pipeline again")
    usable = (embeddings["status"] == "ok").to_numpy()
    return embedding_matrix(embeddings)[usable], labels[usable].reset_index(drop=True), usable
