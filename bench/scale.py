"""Peak memory of preprocessing and of a training epoch at 20k and at 200k images.

    FACE_DATA_DIR=../shared/data/utkface .venv/bin/python bench/scale.py [--copies 10]

Every usable image of the folder is one split ("train"), first as it is (~20k images), then
``--copies`` times over (each copy a new row reading the same file: ~200k images). For each size
two stages run, each in a fresh Python process, and report their own peak memory:

- ``preprocess``: ``decode_split`` saved by ``ShardedArrayDataset`` into bench/out/scale/<size>/,
  decoding in that process (``workers: 1``, so the figure holds all of preprocessing's memory);
- ``epoch``: one epoch of a small network (the images shrunk 8x, one convolution, one dense
  layer) over the saved shards, fed by the training pipeline's ``make_dataset`` (shuffled rows
  gathered from the memory-mapped shards).

Peak memory is the process's VmHWM (peak resident set, /proc/self/status) and the largest
anonymous resident memory (RssAnon, sampled every 20 ms: the resident set without pages of
mapped files, which the kernel can drop at will). The ratio 200k / 20k should stay near 1.
Printed as Markdown and saved to bench/out/scale.json. Ingestion runs once, untimed, first.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from common import kedro_environment, machine

PROJECT_ROOT = Path(__file__).resolve().parents[1]
OUT = PROJECT_ROOT / "bench" / "out" / "scale"
BATCH_SIZE = 256


def memory_status() -> dict[str, int]:
    """This process's memory figures from /proc/self/status, in kB."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if value.strip().endswith("kB"):
            fields[name] = int(value.split()[0])
    return fields


class PeakAnonymousMemory:
    """The largest RssAnon seen while the block runs, sampled on a thread."""

    def __init__(self, interval_s: float = 0.02) -> None:
        self.interval_s, self.peak_kb = interval_s, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak_kb = max(self.peak_kb, memory_status()["RssAnon"])
            time.sleep(self.interval_s)

    def __enter__(self) -> PeakAnonymousMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_kb = max(self.peak_kb, memory_status()["RssAnon"])


def load_project() -> tuple[dict, dict]:
    """The raw images' loaders and the parameters, as ``kedro run`` sees them."""
    from kedro.framework.session import KedroSession  # noqa: PLC0415 - only in the stage processes
    from kedro.framework.startup import bootstrap_project  # noqa: PLC0415

    bootstrap_project(PROJECT_ROOT)
    with KedroSession.create(project_path=PROJECT_ROOT) as session:
        context = session.load_context()
        return context.catalog.load("raw_images"), context.params


def ingest() -> None:
    """The usable images' manifest, every one in the split "train" (not measured)."""
    from face_pipeline.pipelines.ingestion.nodes import (  # noqa: PLC0415
        assign_splits,
        inspect_images,
        label_images,
        select_usable_images,
    )

    raw, params = load_project()
    ingestion = params["ingestion"]
    labelled = label_images(inspect_images(raw, ingestion), raw, ingestion)
    manifest = assign_splits(select_usable_images(labelled, ingestion)[0], ingestion).assign(split="train")
    manifest.to_parquet(OUT / "manifest.parquet")


def repeated(manifest, raw: dict, copies: int):
    """``copies`` rows per image, each with its own id, all reading the image's file."""
    import pandas as pd  # noqa: PLC0415

    rows = pd.concat([manifest.assign(image_id=f"{copy}/" + manifest["image_id"]) for copy in range(copies)])
    loaders = {f"{copy}/{image_id}": raw[image_id] for copy in range(copies) for image_id in manifest["image_id"]}
    return rows.reset_index(drop=True), loaders


def preprocess(copies: int) -> dict:
    import pandas as pd  # noqa: PLC0415

    from face_pipeline.datasets.array_files import ShardedArrayDataset  # noqa: PLC0415
    from face_pipeline.pipelines.preprocessing.nodes import decode_split  # noqa: PLC0415

    raw, params = load_project()
    manifest, loaders = repeated(pd.read_parquet(OUT / "manifest.parquet"), raw, copies)
    started = time.perf_counter()
    with PeakAnonymousMemory() as anonymous:
        dataset = ShardedArrayDataset(filepath=str(OUT / f"x{copies}"))
        dataset.save(decode_split(manifest, loaders, {**params["preprocessing"], "workers": 1}, "train"))
        images = dataset.load()
    return {
        "images": len(images),
        "shards": images.shard_count,
        "seconds": time.perf_counter() - started,
        "peak_anon_kb": anonymous.peak_kb,
    }


def small_network(input_shape: tuple[int, ...]):
    import keras  # noqa: PLC0415

    inputs = keras.Input(input_shape, dtype="uint8")
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.AveragePooling2D(8)(x)
    x = keras.layers.Conv2D(8, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(x))
    model.compile(optimizer="adam", loss="binary_crossentropy")
    return model


def epoch(copies: int) -> dict:
    import numpy as np  # noqa: PLC0415

    from face_pipeline.datasets.array_files import ShardedArrayDataset  # noqa: PLC0415
    from face_pipeline.pipelines.training.data import make_dataset  # noqa: PLC0415

    images = ShardedArrayDataset(filepath=str(OUT / f"x{copies}")).load()
    targets = (np.arange(len(images)) % 2).astype(np.float32)  # memory, not accuracy, is measured
    model = small_network(images.shape[1:])
    started = time.perf_counter()
    with PeakAnonymousMemory() as anonymous:
        model.fit(make_dataset(images, targets, BATCH_SIZE, shuffle=True, seed=0), epochs=1, verbose=0)
    seconds = time.perf_counter() - started
    return {
        "images": len(images),
        "seconds": seconds,
        "images_per_s": len(images) / seconds,
        "peak_anon_kb": anonymous.peak_kb,
    }


STAGES = {"preprocess": preprocess, "epoch": epoch}


def run_stage(stage: str, copies: int) -> dict:
    """``stage`` in a fresh Python process; its own figures plus its peak resident set."""
    command = [sys.executable, __file__, "--stage", stage, "--copies", str(copies)]
    env = kedro_environment({"TF_CPP_MIN_LOG_LEVEL": "2"})
    result = subprocess.run(command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, check=False)
    if result.returncode:
        sys.exit(f"{stage} x{copies} failed:\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--copies", type=int, default=10, help="the larger size: the folder this many times")
    parser.add_argument("--stage", choices=sorted(STAGES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage:  # inside a stage's own process
        figures = STAGES[args.stage](args.copies)
        print(json.dumps({**figures, "vmhwm_kb": memory_status()["VmHWM"]}))
        return
    if not os.environ.get("FACE_DATA_DIR"):
        sys.exit("Set FACE_DATA_DIR to a folder of labelled faces, e.g. FACE_DATA_DIR=../shared/data/utkface")

    OUT.mkdir(parents=True, exist_ok=True)
    ingest()
    results: dict = {"machine": machine()}
    for copies in (1, args.copies):
        for stage in STAGES:
            results[f"{stage}_x{copies}"] = run_stage(stage, copies)
            print(stage, copies, results[f"{stage}_x{copies}"], flush=True)
    for copies in (1, args.copies):
        shutil.rmtree(OUT / f"x{copies}")  # 16 KB per image
    (OUT.parent / "scale.json").write_text(json.dumps(results, indent=2))

    print("\n| stage | images | peak resident (VmHWM) | peak anonymous (RssAnon) | seconds |\n|---|---|---|---|---|")
    for stage in STAGES:
        for copies in (1, args.copies):
            row = results[f"{stage}_x{copies}"]
            print(
                f"| {stage} | {row['images']:,} | {row['vmhwm_kb'] / 1024:.0f} MB "
                f"| {row['peak_anon_kb'] / 1024:.0f} MB | {row['seconds']:.0f} |"
            )
        small, large = results[f"{stage}_x1"], results[f"{stage}_x{args.copies}"]
        print(
            f"| {stage}: ratio x{args.copies} / x1 | {large['images'] / small['images']:.1f} "
            f"| {large['vmhwm_kb'] / small['vmhwm_kb']:.2f} | {large['peak_anon_kb'] / small['peak_anon_kb']:.2f} | |"
        )


if __name__ == "__main__":
    main()
