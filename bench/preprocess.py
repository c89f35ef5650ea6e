"""Ingestion and preprocessing throughput on a real image folder, against a plain PIL loop.

    FACE_DATA_DIR=../shared/data/utkface .venv/bin/python bench/preprocess.py [--repeat 2]

Every figure is images per second over the whole folder, page cache warm (a first
untimed pass reads every file). Each measurement runs ``--repeat`` times; the best is
reported. Results are printed as a Markdown table and saved to bench/out/preprocess.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from common import machine
from PIL import Image

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SCRATCH = PROJECT_ROOT / "bench" / "out" / "preprocess_images"  # the decoded shards, rewritten each time


def baseline(paths: list[str], size: int) -> np.ndarray:
    """The straightforward loop the pipeline is measured against."""
    return np.array([np.asarray(Image.open(p).convert("L").resize((size, size))) for p in paths])


def best_rate(count: int, func, repeat: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeat):
        started = time.perf_counter()
        result = func()
        best = min(best, time.perf_counter() - started)
    return count / best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    if not os.environ.get("FACE_DATA_DIR"):
        sys.exit("Set FACE_DATA_DIR to a folder of labelled faces, e.g. FACE_DATA_DIR=../shared/data/utkface")
    # Imported here: Kedro sets up its logging on import, which --help would print.
    from kedro.framework.session import KedroSession  # noqa: PLC0415
    from kedro.framework.startup import bootstrap_project  # noqa: PLC0415

    from face_pipeline.pipelines.ingestion.nodes import (  # noqa: PLC0415
        assign_splits,
        inspect_images,
        label_images,
        select_usable_images,
    )
    from face_pipeline.pipelines.preprocessing.nodes import preprocess_split  # noqa: PLC0415

    bootstrap_project(PROJECT_ROOT)
    with KedroSession.create(project_path=PROJECT_ROOT) as session:
        context = session.load_context()
        catalog, params = context.catalog, context.params
    raw = catalog.load("raw_images")
    ingestion_params, preprocessing_params = params["ingestion"], params["preprocessing"]
    size = preprocessing_params["image"]["size"]
    for load in raw.values():  # warm the page cache so every contender reads from memory
        load()

    def ingest():
        labelled = label_images(inspect_images(raw, ingestion_params), raw, ingestion_params)
        usable, _ = select_usable_images(labelled, ingestion_params)
        return assign_splits(usable, ingestion_params)

    ingestion_rate, manifest = best_rate(len(raw), ingest, args.repeat)
    everything = manifest.assign(split="train")  # one split: all usable images in one array
    count = len(everything)

    results = {"files": len(raw), "usable_images": count, "ingestion_images_per_s": ingestion_rate}
    for workers in (1, 2):
        node_params = {**preprocessing_params, "workers": workers}
        rate, (images, _, _) = best_rate(
            count, lambda p=node_params: preprocess_split(everything, raw, p, "train", str(SCRATCH)), args.repeat
        )
        results[f"preprocessing_{workers}_worker_images_per_s"] = rate
    baseline_rate, reference = best_rate(count, lambda: baseline(everything["path"].tolist(), size), args.repeat)
    results["baseline_images_per_s"] = baseline_rate
    results["speedup_2_workers_vs_baseline"] = results["preprocessing_2_worker_images_per_s"] / baseline_rate
    # Same pictures, different resampling filters: the mean absolute difference stays small.
    results["mean_abs_pixel_difference_vs_baseline"] = float(
        np.abs(np.asarray(images)[..., 0].astype(np.int16) - reference.astype(np.int16)).mean()
    )
    results["machine"] = machine()

    out = PROJECT_ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "preprocess.json").write_text(json.dumps(results, indent=2))
    print(f"\n{count} usable of {len(raw)} files, {size}x{size} grayscale, {results['machine']}\n")
    print("| what | images/s | vs baseline |\n|---|---:|---:|")
    rows = [
        ("ingestion (read, hash, verify, label, split)", ingestion_rate),
        ("preprocessing, 1 worker", results["preprocessing_1_worker_images_per_s"]),
        ("preprocessing, 2 workers", results["preprocessing_2_worker_images_per_s"]),
        ("baseline: PIL open/convert/resize loop + np.array", baseline_rate),
    ]
    for name, rate in rows:
        print(f"| {name} | {rate:,.0f} | {rate / baseline_rate:.2f}x |")
    print(f"\nmean |pipeline - baseline| per pixel: {results['mean_abs_pixel_difference_vs_baseline']:.2f} (0-255)")


if __name__ == "__main__":
    main()
