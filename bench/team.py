"""The team set-up's cost on one machine: Dask vs the local pool, the MLflow server vs SQLite.

    FACE_DATA_DIR=../shared/data/utkface .venv/bin/python bench/team.py [--repeat 2] [--train-images 600]

1. Preprocessing throughput (images/s, page cache warm, best of ``--repeat``) over the whole
   folder: the local pool of 2 processes vs a 2-worker Dask ``LocalCluster`` (1 thread each) on
   the same machine; the arrays must be identical.
2. Wall time of ``kedro run --pipelines=train_gender`` (ingestion, preprocessing, one epoch of a
   tiny network, evaluation) on the first ``--train-images`` files: tracking in SQLite, the same
   run tracking to the MLflow server (PostgreSQL + SeaweedFS, started here), and ``--env=team``
   (data on S3 too).

Prints a Markdown table; saves bench/out/team.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from common import machine, run_kedro

from face_pipeline.ops import stack as team_stack

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SCRATCH = PROJECT_ROOT / "bench" / "out" / "team_images"  # decoded shards, one folder per path
SMALL_NETWORK = {"model": {"default_cnn": {"stem_filters": 8, "filters": [8, 16]}}}


def best_seconds(func, repeat: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeat):
        started = time.perf_counter()
        result = func()
        best = min(best, time.perf_counter() - started)
    return best, result


def decoding_rates(repeat: int) -> dict:
    """Images/s of preprocess_split over every usable image, local pool vs Dask."""
    # Imported here: Kedro sets up its logging on import, which --help would print; Dask takes a second.
    from distributed import LocalCluster  # noqa: PLC0415
    from kedro.framework.session import KedroSession  # noqa: PLC0415
    from kedro.framework.startup import bootstrap_project  # noqa: PLC0415

    from face_pipeline.ops.parallel import close_dask_clients  # noqa: PLC0415
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
        raw, params = context.catalog.load("raw_images"), context.params
    for load in raw.values():  # warm the page cache
        load()
    ingestion = params["ingestion"]
    labelled = label_images(inspect_images(raw, ingestion), raw, ingestion)
    everything = assign_splits(select_usable_images(labelled, ingestion)[0], ingestion).assign(split="train")
    local_params = {**params["preprocessing"], "workers": 2}
    local_s, (local_images, _, _) = best_seconds(
        lambda: preprocess_split(everything, raw, local_params, "train", str(SCRATCH / "local")), repeat
    )
    with LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=None) as cluster:
        dask_params = {**local_params, "scheduler": cluster.scheduler_address}
        # connect, ship the code once
        preprocess_split(everything.head(512), raw, dask_params, "train", str(SCRATCH / "dask"))
        dask_s, (dask_images, _, _) = best_seconds(
            lambda: preprocess_split(everything, raw, dask_params, "train", str(SCRATCH / "dask")), repeat
        )
        close_dask_clients()
    same = np.array_equal(np.asarray(local_images), np.asarray(dask_images))
    assert same, "Dask and the local pool decoded different arrays"
    count = len(everything)
    return {
        "images": count,
        "local_pool_2_processes_images_per_s": count / local_s,
        "dask_2_workers_images_per_s": count / dask_s,
        "dask_overhead_percent": 100 * (dask_s / local_s - 1),
    }


def small_project(root: Path) -> Path:
    """This project's configuration with a tiny network trained for one epoch, in every environment."""
    root.mkdir(parents=True)
    for name in ("pyproject.toml", ".telemetry"):
        shutil.copy(PROJECT_ROOT / name, root)
    for env in ("base", "team"):
        shutil.copytree(PROJECT_ROOT / "conf" / env, root / "conf" / env)
    (root / "conf" / "local").mkdir()
    (root / "src").mkdir()
    small = {"gender": {**SMALL_NETWORK, "training": {"epochs": 1, "time_budget_minutes": None}}}
    for env in ("local", "team"):
        (root / "conf" / env / "parameters_train_gender.yml").write_text(yaml.safe_dump(small))
    return root


def timed_run(project: Path, env: dict[str, str], *args: str) -> float:
    started = time.perf_counter()
    result = run_kedro(project, "run", "--pipelines=train_gender", *args, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit((result.stdout + result.stderr)[-4000:])
    return elapsed


def run_times(images: int, scratch: Path) -> dict:
    faces = scratch / "faces"
    faces.mkdir()
    for path in sorted(Path(os.environ["FACE_DATA_DIR"]).iterdir())[:images]:
        shutil.copy(path, faces)
    data = {"FACE_DATA_DIR": str(faces), "KEDRO_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1"}
    sqlite = timed_run(small_project(scratch / "sqlite"), {**data, "MLFLOW_TRACKING_URI": "sqlite:///mlflow.db"})
    stack = team_stack.up(scratch / "stack", dask_workers=0)
    try:
        server = timed_run(small_project(scratch / "server"), {**data, **stack.env})
        team = timed_run(small_project(scratch / "team"), {**data, **stack.env}, "--env=team")
    finally:
        team_stack.down(scratch / "stack")
    return {
        "train_images_files": images,
        "kedro_run_sqlite_s": sqlite,
        "kedro_run_tracking_server_s": server,
        "kedro_run_env_team_s": team,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--train-images", type=int, default=600)
    args = parser.parse_args()
    if not os.environ.get("FACE_DATA_DIR"):
        sys.exit("Set FACE_DATA_DIR to a folder of labelled faces, e.g. FACE_DATA_DIR=../shared/data/utkface")
    results = {"machine": machine()}
    results.update(decoding_rates(args.repeat))
    with tempfile.TemporaryDirectory() as scratch:
        results.update(run_times(args.train_images, Path(scratch)))
    out = PROJECT_ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "team.json").write_text(json.dumps(results, indent=2))
    print("| measure | value |\n|---|---:|")
    for key, value in results.items():
        print(f"| {key} | {value:.1f} |" if isinstance(value, float) else f"| {key} | {value} |")


if __name__ == "__main__":
    main()
