"""Does a code change alter what training produces? Train with this checkout and with another commit, compare.

    .venv/bin/python bench/same_training.py --against bac22a2 [--images 1024 --epochs 2]

Both checkouts train each task's network as configured in ``conf/base`` (no time budget,
``deterministic: true``, float32, ``downsample`` fixed at 1.6) on the first ``--images`` rows of
``data/05_model_input/val_images`` (written by the preprocessing pipeline on the real
folder), validate on the next half as many, and predict the next 256. Identical predictions
mean the refactoring left training and the served model unchanged, in minutes rather than a
full ``make run``. The other commit is checked out with ``git worktree`` under bench/out/.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

PROJECT_ROOT = Path(__file__).resolve().parents[1]
OUT = PROJECT_ROOT / "bench" / "out" / "same_training"

TRAIN = """
import sys, numpy as np, pandas as pd, yaml
from face_pipeline.pipelines.training import nodes
task, images_count, epochs, out, sample = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
images = np.load(f"{sample}/images.npy", mmap_mode="r")  # plain arrays: any checkout reads them
labels = pd.read_parquet(f"{sample}/labels.parquet")
params = yaml.safe_load(open(f"conf/base/parameters_train_{task}.yml"))[task]
training = {**params["training"], "epochs": epochs, "time_budget_minutes": None, "deterministic": True,
            "batch_norm_recalibration": 512, "backup_dir": None, "precision": "float32"}
model = dict(params["model"])
model["default_cnn"] = {**model["default_cnn"], "downsample": 1.6}
train, val = slice(0, images_count), slice(images_count, images_count * 3 // 2)
test = slice(images_count * 3 // 2, images_count * 3 // 2 + 256)
served = nodes.train_model(images[train], labels[train], images[val], labels[val], params["task"], model, training)[0]
answer = served.predict(np.asarray(images[test]), verbose=0)
# Every output side by side (the age network also answers its distribution).
outputs = answer.values() if isinstance(answer, dict) else [answer]
np.save(out, np.concatenate([np.asarray(values).reshape(len(values), -1) for values in outputs], axis=1))
"""


def write_sample(rows: int) -> None:
    """The first ``rows`` validation faces as one plain ``.npy`` (and labels), which both checkouts read."""
    from face_pipeline.datasets.array_files import ShardedArrayDataset  # noqa: PLC0415

    images = ShardedArrayDataset(filepath=str(PROJECT_ROOT / "data/05_model_input/val_images")).load()
    np.save(OUT / "images.npy", np.asarray(images[:rows]))
    pd.read_parquet(PROJECT_ROOT / "data/05_model_input/val_labels.parquet")[:rows].to_parquet(OUT / "labels.parquet")


def train(source: Path, task: str, images: int, epochs: int, out: Path) -> np.ndarray:
    environment = {**os.environ, "PYTHONPATH": str(source / "src"), "TF_CPP_MIN_LOG_LEVEL": "2"}
    subprocess.run(
        [sys.executable, "-c", TRAIN, task, str(images), str(epochs), str(out), str(OUT)],
        cwd=PROJECT_ROOT,
        env=environment,
        check=True,
    )
    return np.load(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--against", required=True, help="the commit to compare with, e.g. the one before a change")
    parser.add_argument("--images", type=int, default=1024, help="training images")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--tasks", nargs="+", default=["gender", "age"])
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    write_sample(args.images * 3 // 2 + 256)
    other = OUT / "checkout"
    if other.exists():
        subprocess.run(["git", "worktree", "remove", "--force", str(other)], cwd=PROJECT_ROOT, check=True)
    subprocess.run(["git", "worktree", "add", "--detach", str(other), args.against], cwd=PROJECT_ROOT, check=True)
    try:
        print("| task | max abs difference of 256 predictions | identical |\n|---|---:|---|")
        for task in args.tasks:
            ours = train(PROJECT_ROOT, task, args.images, args.epochs, OUT / f"{task}_this.npy")
            theirs = train(other, task, args.images, args.epochs, OUT / f"{task}_{args.against}.npy")
            print(f"| {task} | {float(np.abs(ours - theirs).max()):.3g} | {np.array_equal(ours, theirs)} |")
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(other)], cwd=PROJECT_ROOT, check=False)


if __name__ == "__main__":
    main()
