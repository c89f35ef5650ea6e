"""One worker of a test cluster (or one process alone): train a tiny network with ``train_model`` on
generated images; save the served weights and the decisions under ``OUT/<worker index>``.

    python tests/distributed_worker.py OUT
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from face_pipeline.distribute import cluster_from_environment
from face_pipeline.pipelines.training import nodes

MODEL = {
    "architecture": "default_cnn",
    "loss": None,
    "augment": None,  # random augmentation and dropout would differ between replicas
    "mirror_average": False,
    "default_cnn": {
        "stem_filters": 4,
        "filters": [8],
        "convs_per_stage": 1,
        "batch_norm": False,  # per-replica statistics would differ from one process's
        "dense_units": 8,
        "dropout": 0.0,
    },
}
TRAINING = {"epochs": 2, "batch_size": 16, "learning_rate": 0.01, "seed": 3, "deterministic": True}


def data(count: int = 64, size: int = 32) -> tuple[np.ndarray, pd.DataFrame]:
    rng = np.random.default_rng(1)
    gender = rng.integers(0, 2, count)
    images = (rng.integers(0, 60, (count, size, size, 1)) + gender[:, None, None, None] * 150).astype(np.uint8)
    labels = pd.DataFrame({"image_id": [str(i) for i in range(count)], "gender": gender, "age": 20 + 40 * gender})
    return images, labels


def main(out: Path) -> None:
    images, labels = data()
    served, history, decisions = nodes.train_model(
        images[:48], labels[:48], images[48:], labels[48:], {"target": "gender"}, MODEL, TRAINING
    )
    folder = out / str(cluster_from_environment().index)
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "weights.npz", *served.get_weights())
    (folder / "run.json").write_text(json.dumps({"history": history, "decisions": decisions}, default=str))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
