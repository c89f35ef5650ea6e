"""Our networks on faces aligned by dlib (the way UTKFace's chips were made) against our own path.

    FACE_DATA_DIR=../shared/data/utkface EVAL_DATA_DIR=../shared/data/aaf_dev \\
        .venv/bin/python bench/dlib_alignment.py [--images 2000]

The same samples as bench/predict.py (the project's UTKFace test split, a seeded sample of the
photos). dlib's HOG detector, its 5-point landmarks and ``get_face_chip`` (200 px, padding 0.19,
which reproduces UTKFace's chips most closely) run in a throwaway virtual environment under
bench/out (dlib-bin, face-recognition-models: never project dependencies); the chips then go
through the project's ``face_input`` and the saved networks, and the same images through
``FacePredictor`` (BlazeFace, alignment onto the measured geometry). Prints detection rate,
gender accuracy and age MAE of both, and dlib's time per image (one thread).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

PROJECT_ROOT = Path(__file__).resolve().parents[1]
OUT = PROJECT_ROOT / "bench" / "out"
DLIB_REQUIREMENTS = ["dlib-bin==20.0.1.post1", "face-recognition-models==0.3.0", "opencv-python-headless", "numpy"]
sys.path.insert(0, str(Path(__file__).parent))
from peer import ensure_venv  # noqa: E402 - sibling scripts, not a package


def make_chips(listing: Path, out: Path) -> None:
    """In the dlib venv: one 200 px RGB chip per file (zeros where no face is found)."""
    import cv2  # noqa: PLC0415
    import dlib  # noqa: PLC0415
    import face_recognition_models  # noqa: PLC0415

    detector = dlib.get_frontal_face_detector()
    # The 5-point model: the 68-point one in the same package was trained on data for non-commercial use.
    landmarks = dlib.shape_predictor(face_recognition_models.pose_predictor_five_point_model_location())
    files = listing.read_text().splitlines()
    chips, found = np.zeros((len(files), 200, 200, 3), np.uint8), np.zeros(len(files), bool)
    started = time.perf_counter()
    for index, path in enumerate(files):
        rgb = cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB)
        faces = detector(rgb, 0)
        if faces:
            largest = max(faces, key=lambda face: face.area())
            chips[index] = dlib.get_face_chip(rgb, landmarks(rgb, largest), size=200, padding=0.19)
            found[index] = True
    seconds = time.perf_counter() - started
    np.savez(out, chips=chips, found=found, ms_per_image=1000 * seconds / len(files))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--make-chips", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.make_chips:
        make_chips(*args.make_chips)
        return
    # Imported here: the dlib venv runs this file too, without the project's packages.
    from predict import first_faces, photo_sample, scores, utkface_sample  # noqa: PLC0415

    from face_pipeline.imaging.decoding import ImageSpec, convert_pixels, face_input  # noqa: PLC0415
    from face_pipeline.inference.batching import predict_in_batches  # noqa: PLC0415
    from face_pipeline.inference.loading import load_inference_settings, load_keras_model  # noqa: PLC0415
    from face_pipeline.inference.predictor import FacePredictor  # noqa: PLC0415

    OUT.mkdir(parents=True, exist_ok=True)
    python = ensure_venv(OUT / "dlib-venv", DLIB_REQUIREMENTS)
    models = {task: load_keras_model(PROJECT_ROOT / f"data/06_models/{task}_model.keras") for task in ("gender", "age")}
    settings = load_inference_settings(PROJECT_ROOT / "data/06_models/inference_settings.json")
    spec = ImageSpec.from_params(settings["image"])
    samples = {
        "UTKFace test chips": utkface_sample(Path(os.environ["FACE_DATA_DIR"]), args.images),
        "photos": photo_sample(Path(os.environ["EVAL_DATA_DIR"]), args.images),
    }
    print("| images | path | found | gender accuracy | age MAE |\n|---|---|---:|---:|---:|")
    for name, sample in samples.items():
        listing, chips_file = OUT / "dlib_files.txt", OUT / "dlib_chips.npz"
        listing.write_text("\n".join(sample["path"]))
        subprocess.run([str(python), __file__, "--make-chips", str(listing), str(chips_file)], check=True)
        made = np.load(chips_file)
        paths = sample["path"][made["found"]]
        inputs = np.stack(
            [face_input(convert_pixels(chip, spec.color_mode), spec) for chip in made["chips"][made["found"]]]
        )
        female, age = (predict_in_batches(model, inputs, 64) for model in models.values())
        dlib_rows = [
            {"file": path, "found": True, "female_probability": p, "age": a}
            for path, p, a in zip(paths, female, age, strict=True)
        ]
        table = FacePredictor.from_settings(models, settings).predict([(p, Path(p).read_bytes) for p in sample["path"]])
        our_rows = first_faces(table)
        dlib_label = f"dlib 5-point chip ({float(made['ms_per_image']):.0f} ms/image)"
        for label, rows in ((dlib_label, dlib_rows), ("ours (BlazeFace, aligned)", our_rows)):
            result = scores(sample, rows)
            print(
                f"| {name} ({len(sample)}) | {label} | {result['found']:.3f} | {result['gender_accuracy']:.4f} "
                f"| {result['age_mae']:.3f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
