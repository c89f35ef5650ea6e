"""Train both models with each profile on a real image folder and compare them.

    FACE_DATA_DIR=../shared/data/utkface .venv/bin/python bench/train.py [--profiles default seed]

Each profile is one full ``kedro run`` (ingestion, preprocessing, gender and age training,
test metrics), exactly what ``make run`` does; any other profile is a Kedro configuration
environment (``seed`` runs with ``--env=seed``; a ``conf/<name>/`` folder of overrides is
another). A variant of a profile runs one pipeline with changed parameters, e.g. the Huber
loss for age:

    ... bench/train.py --profiles default --pipelines train_age --params age.model.loss=huber

Runs are logged to bench/out/mlflow.db, and the figures below are read back from MLflow: wall
time of the whole run, epochs, training images/s (training images x epochs / time spent in
epochs, validation included) and the test metrics. Printed as Markdown and saved to
bench/out/train.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from common import kedro_command, run_kedro

if TYPE_CHECKING:
    import mlflow

PROJECT_ROOT = Path(__file__).resolve().parents[1]
OUT = PROJECT_ROOT / "bench" / "out"
TASK_METRICS = {
    "gender": ("test_accuracy", "test_roc_auc", "test_f1", "test_gap_race"),
    "age": ("test_mae", "test_rmse", "test_cs_at_5", "test_gap_race"),
}


def run_profile(profile: str, tracking_uri: str, log: Path, pipelines: str | None, params: str | None) -> float:
    command = ["run"]
    if profile != "default":
        command.append(f"--env={profile}")
    if pipelines:
        command.append(f"--pipelines={pipelines}")
    if params:
        command.append(f"--params={params}")
    started = time.perf_counter()
    with log.open("w") as output:
        env = {"MLFLOW_TRACKING_URI": tracking_uri}
        result = run_kedro(PROJECT_ROOT, *command, env=env, stdout=output, stderr=subprocess.STDOUT)
    if result.returncode:
        sys.exit(f"{' '.join(kedro_command(*command))} failed; see {log}")
    return time.perf_counter() - started


def summarise(run, client: mlflow.MlflowClient, train_images: int) -> dict:
    row = {}
    for task, metrics in TASK_METRICS.items():
        if f"{task}.{metrics[0]}" not in run.data.metrics:
            continue  # this run did not train the task
        seconds = [m.value for m in client.get_metric_history(run.info.run_id, f"{task}.epoch_seconds")]
        row[f"{task}_epochs"] = len(seconds)
        row[f"{task}_train_minutes"] = sum(seconds) / 60
        row[f"{task}_images_per_s"] = train_images * len(seconds) / sum(seconds) if seconds else float("nan")
        for name in metrics:
            row[f"{task}_{name}"] = run.data.metrics.get(f"{task}.{name}")
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profiles", nargs="+", default=["default", "seed"])
    parser.add_argument("--pipelines", help="run only these pipelines (kedro run --pipelines)")
    parser.add_argument("--params", help="parameter overrides (kedro run --params), e.g. age.model.loss=huber")
    args = parser.parse_args()
    if not os.environ.get("FACE_DATA_DIR"):
        sys.exit("Set FACE_DATA_DIR to a folder of labelled faces, e.g. FACE_DATA_DIR=../shared/data/utkface")
    import mlflow  # noqa: PLC0415 - a few seconds: not for --help
    import pandas as pd  # noqa: PLC0415

    OUT.mkdir(parents=True, exist_ok=True)
    tracking_uri = f"sqlite:///{OUT / 'mlflow.db'}"
    mlflow.set_tracking_uri(tracking_uri)
    client = mlflow.MlflowClient()

    saved = OUT / "train.json"
    results = {}
    for profile in args.profiles:
        label = f"{profile} {args.params}" if args.params else profile
        print(f"kedro run ({label}) ...", flush=True)
        log = OUT / f"train_{label.replace(' ', '_').replace('=', '-')}.log"
        wall = run_profile(profile, tracking_uri, log, args.pipelines, args.params)
        run = mlflow.search_runs(
            experiment_names=["face_pipeline"], order_by=["start_time DESC"], output_format="list"
        )[0]
        train_images = len(pd.read_parquet(PROJECT_ROOT / "data/05_model_input/train_labels.parquet"))
        results[label] = {
            "wall_minutes": wall / 60,
            "run_id": run.info.run_id,
            **summarise(run, client, train_images),
        }
        print(json.dumps(results[label], indent=2), flush=True)
    # Earlier results of other profiles are kept, so separate invocations add up to one table.
    earlier = json.loads(saved.read_text()) if saved.exists() else {}
    saved.write_text(json.dumps({**earlier, **results}, indent=2))

    columns = list(results)
    rows = [
        ("whole `kedro run`, minutes", "wall_minutes", "{:.1f}"),
        ("gender: epochs", "gender_epochs", "{}"),
        ("gender: training images/s", "gender_images_per_s", "{:.0f}"),
        ("gender: test accuracy", "gender_test_accuracy", "{:.4f}"),
        ("gender: test ROC AUC", "gender_test_roc_auc", "{:.4f}"),
        ("gender: largest accuracy gap between races", "gender_test_gap_race", "{:.4f}"),
        ("age: epochs", "age_epochs", "{}"),
        ("age: training images/s", "age_images_per_s", "{:.0f}"),
        ("age: test MAE (years)", "age_test_mae", "{:.2f}"),
        ("age: test RMSE (years)", "age_test_rmse", "{:.2f}"),
        ("age: test share within 5 years", "age_test_cs_at_5", "{:.3f}"),
        ("age: largest MAE gap between races (years)", "age_test_gap_race", "{:.2f}"),
    ]
    print("\n| | " + " | ".join(columns) + " |\n|---|" + "---:|" * len(columns))
    for title, key, fmt in rows:
        cells = [fmt.format(results[c][key]) if key in results[c] else "-" for c in columns]
        print(f"| {title} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
