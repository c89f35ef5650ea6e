"""Training images/s in one process against N local workers (MultiWorkerMirroredStrategy), same machine.

    .venv/bin/python bench/workers.py [--workers 2] [--images 2048] [--epochs 2]

Trains the default gender network (conf/base, downsample 1.6, no time budget) on the first
``--images`` rows of ``data/05_model_input/val_images/`` (written by the preprocessing
pipeline on the real folder), once alone and once on ``--workers`` local workers on 127.0.0.1
(inside ``unshare --net`` where available). Throughput is the images of the last epoch over its
seconds, validation included; on one machine the workers share its cores, so this measures the
overhead of the gradient exchange, not a speed-up. Printed as Markdown, saved to
bench/out/workers.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from face_pipeline.ops.distribute import loopback_only

PROJECT_ROOT = Path(__file__).resolve().parents[1]
OUT = PROJECT_ROOT / "bench" / "out" / "workers"

TRAIN = """
import json, sys
import numpy as np, pandas as pd, yaml
from face_pipeline.datasets.folders import ShardedArrayDataset
from face_pipeline.ops.distribute import cluster_from_environment
from face_pipeline.pipelines.training import nodes
count, epochs, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
images = ShardedArrayDataset(filepath="data/05_model_input/val_images").load()
labels = pd.read_parquet("data/05_model_input/val_labels.parquet")
params = yaml.safe_load(open("conf/base/parameters_train_gender.yml"))["gender"]
training = {**params["training"], "epochs": epochs, "time_budget_minutes": None, "backup_dir": None,
            "early_stopping_patience": 0, "batch_norm_recalibration": 0}
model = dict(params["model"])
model["default_cnn"] = {**model["default_cnn"], "downsample": 1.6}
validation = slice(count, count + count // 8)
_, history, decisions = nodes.train_model(
    images[:count], labels[:count], images[validation], labels[validation], params["task"], model, training
)
if cluster_from_environment().is_chief:
    json.dump({"epoch_seconds": history["epoch_seconds"], "decisions": decisions}, open(out, "w"), default=str)
"""


def train(workers: int, images: int, epochs: int) -> dict:
    out = OUT / f"{workers}_workers.json"
    command = [sys.executable, "-c", TRAIN, str(images), str(epochs), str(out)]
    if workers > 1:
        command = loopback_only([sys.executable, "-m", "face_pipeline.ops.distribute", str(workers), *command])
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    subprocess.run(command, cwd=PROJECT_ROOT, env=environment, check=True)
    result = json.loads(out.read_text())
    seconds = result["epoch_seconds"][-1]
    return {"workers": workers, "epoch_seconds": seconds, "images_per_second": images * 9 / 8 / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--images", type=int, default=2048, help="training images (validation: an eighth more)")
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    rows = [train(1, args.images, args.epochs), train(args.workers, args.images, args.epochs)]
    (OUT / "workers.json").write_text(json.dumps(rows, indent=2))
    print("| workers | seconds per epoch | images/s | vs one process |\n|---:|---:|---:|---:|")
    for row in rows:
        ratio = row["images_per_second"] / rows[0]["images_per_second"]
        print(f"| {row['workers']} | {row['epoch_seconds']:.1f} | {row['images_per_second']:.0f} | {ratio:.2f}x |")


if __name__ == "__main__":
    main()
