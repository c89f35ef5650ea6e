"""One worker of a test cluster (or one process alone): train a tiny network with ``train_model`` on
generated images; save the served weights and the decisions under ``OUT/<worker index>``.

    python tests/distributed_worker.py OUT [BACKUP_DIR [KILL_WORKER_IN_EPOCH]]

With ``BACKUP_DIR`` the run keeps its last finished epoch there (and resumes from it); with
``KILL_WORKER_IN_EPOCH`` (``worker:epoch``, 1-based) that worker is killed (SIGKILL) half-way
through that epoch.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from face_pipeline.ops.distribute import cluster_from_environment
from face_pipeline.pipelines.training import nodes, run

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
TRAINING = {
    "epochs": int(os.environ.get("EPOCHS", "2")),
    "batch_size": 16,
    "learning_rate": 0.01,
    "seed": 3,
    "deterministic": True,
}


def data(count: int = 64, size: int = 32) -> tuple[np.ndarray, pd.DataFrame]:
    rng = np.random.default_rng(1)
    gender = rng.integers(0, 2, count)
    images = (rng.integers(0, 60, (count, size, size, 1)) + gender[:, None, None, None] * 150).astype(np.uint8)
    labels = pd.DataFrame({"image_id": [str(i) for i in range(count)], "gender": gender, "age": 20 + 40 * gender})
    return images, labels


def kill_in_epoch(worker: int, epoch: int) -> None:
    """SIGKILL this process in the middle of ``epoch`` if it is ``worker``."""
    if cluster_from_environment().index != worker:
        return

    class Killer(keras.callbacks.Callback):
        def on_epoch_begin(self, index, logs=None):
            self.epoch = index + 1

        def on_train_batch_end(self, batch, logs=None):
            if self.epoch == epoch and batch == 1:
                os.kill(os.getpid(), signal.SIGKILL)

    original = run.training_callbacks
    run.training_callbacks = lambda *args, **kwargs: [*original(*args, **kwargs), Killer()]


def main(out: Path, backup: str | None = None, kill: str | None = None) -> None:
    images, labels = data()
    training = {**TRAINING, "backup_dir": backup} if backup else TRAINING
    if kill:
        kill_in_epoch(*map(int, kill.split(":")))
    served, history, decisions = nodes.train_model(
        images[:48], labels[:48], images[48:], labels[48:], {"target": "gender"}, MODEL, training
    )
    folder = out / str(cluster_from_environment().index)
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "weights.npz", *served.get_weights())
    (folder / "run.json").write_text(json.dumps({"history": history, "decisions": decisions}, default=str))


if __name__ == "__main__":
    main(Path(sys.argv[1]), *sys.argv[2:])
