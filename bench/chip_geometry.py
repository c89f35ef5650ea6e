"""Where the face detector puts each landmark on the training chips: the chip geometry that
alignment maps every detected face onto (``UTKFACE_CHIP`` in ``face_pipeline/imaging/detection.py``).

    FACE_DATA_DIR=../shared/data/utkface .venv/bin/python bench/chip_geometry.py [--images 2000]

Prints the median position of each landmark over a seeded sample of chips, its spread, and how
closely aligning each chip onto that geometry gives back the chip itself (mean absolute pixel
difference inside the central 160x160; for scale, a 3 px shift of a chip costs about 9).
"""

from __future__ import annotations

import argparse
import os
import random
from pathlib import Path

import cv2
import numpy as np

from face_pipeline.imaging.alignment import ChipGeometry, align
from face_pipeline.imaging.decoding import ImageSpec, is_image_file, load_image
from face_pipeline.imaging.detection import UTKFACE_CHIP, DetectionSettings, detect

NAMES = tuple(UTKFACE_CHIP["landmarks"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    folder = Path(os.environ["FACE_DATA_DIR"])
    files = sorted(path for path in folder.iterdir() if is_image_file(path.name))
    sample = random.Random(args.seed).sample(files, min(args.images, len(files)))
    settings = DetectionSettings(mode="always")
    spec = ImageSpec(color_mode="rgb")
    chips, found = [], []
    for path in sample:
        chip = load_image(path.read_bytes(), spec)
        faces = detect(chip, settings)
        if faces:
            chips.append(chip)
            found.append(faces[0].landmarks)
    size = chips[0].shape[0]
    print(f"{len(found)} of {len(sample)} chips ({size} px): a face found")
    measured = {name: np.array([landmarks[name] for landmarks in found]) for name in NAMES}
    for name, points in measured.items():
        median, spread = np.median(points, axis=0), points.std(axis=0)
        print(f"  {name:10s} median ({median[0]:6.1f}, {median[1]:6.1f})  std ({spread[0]:4.1f}, {spread[1]:4.1f})")
    eyes = measured["eye_right"] - measured["eye_left"]
    angles = np.degrees(np.arctan2(eyes[:, 1], eyes[:, 0]))
    distance = np.median(np.hypot(*eyes.T))
    print(f"  eye line {np.median(angles):+.2f} deg (std {angles.std():.2f}), eye distance {distance:.1f}")
    for label, geometry in (
        ("measured", ChipGeometry(size, {name: tuple(np.median(p, axis=0)) for name, p in measured.items()})),
        ("in use (UTKFACE_CHIP)", ChipGeometry.from_params(UTKFACE_CHIP)),
    ):
        errors = [
            np.abs(align(chip, landmarks, geometry).astype(int) - chip)[20:180, 20:180].mean()
            for chip, landmarks in zip(chips, found, strict=True)
        ]
        median, mean = np.median(errors), np.mean(errors)
        print(f"chip given back by alignment, {label}: median difference {median:.2f}, mean {mean:.2f}")


if __name__ == "__main__":
    cv2.setNumThreads(1)
    main()
