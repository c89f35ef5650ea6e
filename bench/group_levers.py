"""Training levers for the groups the gender network gets wrong, measured on the validation split only.

    .venv/bin/python bench/group_levers.py [--levers none groups children] [--seeds 1 2] [--epochs 8]

Trains the gender network as configured in ``conf/base`` once per lever and seed
(``training.sample_weights``), for ``--epochs`` epochs each with no time budget (the same
schedule for every arm whatever else the machine runs; fewer epochs than a full run, so the arms
are comparable with each other, not with the default model), on the preprocessed arrays of the last
``kedro run --pipelines=preprocessing`` (``data/05_model_input``), and scores each on the
validation split: overall, children (0-12), adults, Asian women. The test split is never read.

Each lever is compared with ``none`` of the same seed on the same validation faces: the
difference's 95 % interval comes from a paired bootstrap over those faces (2,000 resamples), and
the spread between seeds shows the training noise besides. Results go to
``bench/out/group_levers.json`` (runs already there are reused).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

PROJECT_ROOT = Path(__file__).resolve().parents[1]
OUT = PROJECT_ROOT / "bench" / "out" / "group_levers.json"
GROUPS = {
    "all": lambda labels: np.ones(len(labels), dtype=bool),
    "children 0-12": lambda labels: labels["age"].to_numpy() <= 12,
    "adults 20+": lambda labels: labels["age"].to_numpy() >= 20,
    "Asian women": lambda labels: (
        (labels["race"].to_numpy(dtype=float, na_value=-1) == 2) & (labels["gender"].to_numpy() == 1)
    ),
}


def train_and_predict(lever: str, seed: int, epochs: int) -> list[float]:
    """The validation split's P(female) from a gender network trained with ``lever``."""
    from kedro.config import OmegaConfigLoader  # noqa: PLC0415

    from face_pipeline.datasets import ShardedArrayDataset  # noqa: PLC0415
    from face_pipeline.pipelines.training.nodes import train_model  # noqa: PLC0415
    from face_pipeline.predict import predict_in_batches  # noqa: PLC0415
    from face_pipeline.settings import CONFIG_LOADER_ARGS  # noqa: PLC0415

    params = OmegaConfigLoader(str(PROJECT_ROOT / "conf"), **CONFIG_LOADER_ARGS)["parameters"]["gender"]
    folder = PROJECT_ROOT / "data/05_model_input"
    arrays = {split: ShardedArrayDataset(filepath=str(folder / f"{split}_images")).load() for split in ("train", "val")}
    labels = {split: pd.read_parquet(folder / f"{split}_labels.parquet") for split in ("train", "val")}
    training = {
        **params["training"],
        "seed": seed,
        "sample_weights": lever,
        "epochs": epochs,
        "early_stopping_start_epoch": epochs // 2,
        "time_budget_minutes": None,
        "backup_dir": None,
    }
    model, _, _ = train_model(
        arrays["train"], labels["train"], arrays["val"], labels["val"], params["task"], params["model"], training
    )
    return predict_in_batches(model, arrays["val"]).astype(float).tolist()


def accuracy(labels: pd.DataFrame, probability: np.ndarray, members: np.ndarray) -> float:
    return float(((probability[members] >= 0.5) == (labels["gender"].to_numpy()[members] == 1)).mean())


def paired_interval(labels: pd.DataFrame, lever: np.ndarray, base: np.ndarray, members: np.ndarray) -> list[float]:
    """95 % bootstrap interval of the accuracy difference (lever - base) over the same faces."""
    truth = labels["gender"].to_numpy()[members] == 1
    difference = ((lever[members] >= 0.5) == truth).astype(float) - ((base[members] >= 0.5) == truth).astype(float)
    rng = np.random.default_rng(0)
    samples = rng.integers(0, len(difference), (2000, len(difference)))
    return [float(value) for value in np.percentile(difference[samples].mean(axis=1), [2.5, 97.5])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--levers", nargs="+", default=["none", "groups", "children"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--epochs", type=int, default=8, help="epochs of each training")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    runs = json.loads(OUT.read_text()) if OUT.exists() else {}
    for seed in args.seeds:
        for lever in args.levers:
            key = f"{lever}/{seed}/{args.epochs}"
            if key not in runs:
                runs[key] = train_and_predict(lever, seed, args.epochs)
                OUT.write_text(json.dumps(runs))
    labels = pd.read_parquet(PROJECT_ROOT / "data/05_model_input/val_labels.parquet")
    print(f"Validation split, {len(labels)} faces; gender accuracy, and the difference from `none` (95 % interval)\n")
    print("| lever | seed | " + " | ".join(GROUPS) + " |")
    print("|---|---:|" + "---:|" * len(GROUPS))
    for seed in args.seeds:
        base = np.asarray(runs[f"none/{seed}/{args.epochs}"])
        for lever in args.levers:
            probability = np.asarray(runs[f"{lever}/{seed}/{args.epochs}"])
            cells = []
            for select in GROUPS.values():
                members = select(labels)
                cell = f"{accuracy(labels, probability, members):.3f}"
                if lever != "none":
                    low, high = paired_interval(labels, probability, base, members)
                    cell += f" ({low:+.3f} to {high:+.3f})"
                cells.append(cell)
            print(f"| {lever} | {seed} | " + " | ".join(cells) + " |")
    if len(args.seeds) > 1:  # the training noise: the same recipe, another seed
        first, second = (np.asarray(runs[f"none/{seed}/{args.epochs}"]) for seed in args.seeds[:2])
        cells = []
        for select in GROUPS.values():
            low, high = paired_interval(labels, second, first, select(labels))
            difference = accuracy(labels, second, select(labels)) - accuracy(labels, first, select(labels))
            cells.append(f"{difference:+.3f} ({low:+.3f} to {high:+.3f})")
        print(f"| none, seed {args.seeds[1]} - seed {args.seeds[0]} | | " + " | ".join(cells) + " |")
    counts = ", ".join(f"{name} {int(select(labels).sum())}" for name, select in GROUPS.items())
    print(f"\nFaces per group: {counts}")


if __name__ == "__main__":
    main()
