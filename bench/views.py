"""Validation scores of saved models when each face is predicted from several views and averaged.

    .venv/bin/python bench/views.py data/06_models/gender_model.keras/<version>/gender_model.keras gender
    .venv/bin/python bench/views.py data/06_models/age_model.keras/<version>/age_model.keras age [--zoom 0.08]

Needs the preprocessed arrays of a previous run (``kedro run --pipelines=preprocessing``) and
reads the validation split only. The views are the face, its mirror image, the face cropped by
``--zoom`` of its side on every edge and resized back (zoomed in), and the face padded by
the same amount with reflected borders, as the training augmentation fills them, and resized
back (zoomed out), each with its mirror image. Prints accuracy (gender) or MAE in years (age)
for each set of views; the saved models average the first two (``model.mirror_average``).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import keras

PROJECT_ROOT = Path(__file__).resolve().parents[1]
MODEL_INPUT = PROJECT_ROOT / "data" / "05_model_input"
VIEW_SETS = {
    "face": ["face"],
    "+ mirror (saved model)": ["face", "mirror"],
    "+ zoomed in, both": ["face", "mirror", "in", "in_mirror"],
    "+ zoomed out, both": ["face", "mirror", "out", "out_mirror"],
    "all six": ["face", "mirror", "in", "in_mirror", "out", "out_mirror"],
}


def zoomed(images: np.ndarray, margin: float) -> np.ndarray:
    """``images`` with ``margin`` of their side cut off (> 0) or reflected on (< 0) each edge, resized back."""
    import tensorflow as tf  # noqa: PLC0415 - several seconds: imported once arguments are parsed

    side = images.shape[1]
    pixels = round(abs(margin) * side)
    tensor = tf.convert_to_tensor(images, tf.float32)
    if margin > 0:
        tensor = tensor[:, pixels : side - pixels, pixels : side - pixels, :]
    else:
        tensor = tf.pad(tensor, [[0, 0], [pixels, pixels], [pixels, pixels], [0, 0]], mode="REFLECT")
    resized = tf.image.resize(tensor, (side, side), antialias=True)
    return np.clip(np.round(resized.numpy()), 0, 255).astype(images.dtype)


def single_view_network(model: keras.Model) -> keras.Model:
    """The network inside a mirror-averaging saved model (the model itself when it has none)."""
    import keras  # noqa: PLC0415 - imported once arguments are parsed

    nested = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    return nested[0] if nested else model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", type=Path, help="a saved .keras model")
    parser.add_argument("task", choices=["gender", "age"])
    parser.add_argument("--zoom", type=float, default=0.04, help="fraction of the side cropped or added per edge")
    args = parser.parse_args()
    import keras  # noqa: PLC0415 - several seconds: not for --help
    import pandas as pd  # noqa: PLC0415

    from face_pipeline.datasets.array_files import ShardedArrayDataset  # noqa: PLC0415

    images = np.asarray(ShardedArrayDataset(filepath=str(MODEL_INPUT / "val_images")).load())
    truth = pd.read_parquet(MODEL_INPUT / "val_labels.parquet")[args.task].to_numpy("float32")
    network = single_view_network(keras.models.load_model(args.model))
    views = {"face": images, "in": zoomed(images, args.zoom), "out": zoomed(images, -args.zoom)}
    for name in ("face", "in", "out"):
        views[f"{name}_mirror" if name != "face" else "mirror"] = views[name][:, :, ::-1]
    predictions = {name: network.predict(view, batch_size=256, verbose=0).reshape(-1) for name, view in views.items()}

    print(f"{args.model} on {len(truth)} validation faces ({'accuracy' if args.task == 'gender' else 'MAE, years'}):")
    for label, names in VIEW_SETS.items():
        mean = np.mean([predictions[name] for name in names], axis=0)
        score = np.mean((mean > 0.5) == (truth > 0.5)) if args.task == "gender" else np.mean(np.abs(mean - truth))
        print(f"  {label:<24} {score:.4f}")


if __name__ == "__main__":
    main()
