"""Tiny untrained networks saved as training saves them, with a calibration and inference settings;
the photos and stand-in networks the prediction tests share."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from fake_faces import encode
from PIL import Image
from skimage import data

from face_pipeline.imaging.decoding import ImageSpec
from face_pipeline.inference.photos import inference_settings
from face_pipeline.modelling.builders import build_model, compile_model, inference_model

SIZE = 32
SETTINGS = inference_settings({"image": {"size": SIZE, "color_mode": "grayscale"}}, {"detection": {"mode": "auto"}})
# Saved with the networks: a temperature that halves every logit, and the 80 % range taken as the
# central 90 % of the age distribution under a predicted 40, 95 % from 40 on.
CALIBRATION = {
    "gender": {"method": "temperature", "temperature": 2.0, "uncertain_below": 0.75},
    "age": {"method": "distribution", "level": 0.8, "bands": [40.0], "distribution_levels": [0.9, 0.95]},
}


def save_small_models(folder: Path) -> dict[str, Path]:
    """Both networks in Kedro's versioned layout (two versions: the latest must win), each with its
    calibration beside it, and the inference settings; returns their paths by task and ``settings``."""
    paths = {}
    for task, loss in (("gender", None), ("age", "distribution")):
        options = {"stem_filters": 4, "filters": [4], "batch_norm": False, "loss": loss}
        model = build_model("default_cnn", (SIZE, SIZE, 1), task, **options)
        model = inference_model(compile_model(model, task, 1e-3, loss), task)  # saved like a trained model
        for version in ("2026-01-01T00.00.00.000Z", "2026-02-01T00.00.00.000Z"):
            path = folder / f"{task}_model.keras" / version / f"{task}_model.keras"
            path.parent.mkdir(parents=True)
            model.save(path)
        paths[task] = folder / f"{task}_model.keras"
        (folder / f"{task}_calibration.json").write_text(json.dumps(CALIBRATION[task]))
    paths["settings"] = folder / "inference_settings.json"
    paths["settings"].write_text(json.dumps(SETTINGS))
    return paths


# Photos and stand-ins the prediction tests share.
SPEC = ImageSpec(size=SIZE)
PHOTO = encode(Image.fromarray(data.astronaut()), quality=90)
ANSWER_COLUMNS = ["gender_uncertain", "age_low", "age_high"]
CROP = encode(Image.fromarray(data.astronaut()).crop((160, 50, 300, 190)), "PNG")


class Recorder:
    """A stand-in network that records its inputs and answers a fixed value (``width`` of them per input)."""

    def __init__(self, value: float, width: int = 1):
        self.value, self.width, self.inputs = value, width, []

    def predict_on_batch(self, batch):
        self.inputs.append(np.array(batch))
        return np.full((len(batch), self.width), self.value, dtype=np.float32)
