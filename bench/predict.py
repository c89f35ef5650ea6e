"""Prediction speed: batch throughput for face crops and for full photos, served-model latency.

    FACE_DATA_DIR=../shared/data/utkface MLFLOW_TRACKING_URI=sqlite:///mlflow.db \\
        .venv/bin/python bench/predict.py [--images 1000] [--requests 50]

Uses the latest saved models (data/06_models) and the face_model logged by the last `kedro run`
(data/06_models/face_model_uri.txt). "Full photos" are real UTKFace faces pasted at a random
place and size into 640x480 backgrounds, so detection has to find them. Results are printed as
Markdown and saved to bench/out/predict.json.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import requests
from PIL import Image

from face_pipeline.faces import DetectionSettings
from face_pipeline.images import ImageSpec, is_image_file
from face_pipeline.predict import FacePredictor, load_keras_model

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def full_photo(face: bytes, rng: np.random.Generator) -> bytes:
    """A 640x480 photo with ``face`` somewhere in it, 150-300 px wide."""
    background = np.linspace(40, 200, 640, dtype=np.float32)[None, :, None] * np.ones((480, 1, 3), np.float32)
    background += rng.normal(0, 12, background.shape)
    canvas = Image.fromarray(np.clip(background, 0, 255).astype(np.uint8))
    side = int(rng.integers(150, 300))
    portrait = Image.open(io.BytesIO(face)).convert("RGB").resize((side, side))
    canvas.paste(portrait, (int(rng.integers(0, 640 - side)), int(rng.integers(0, 480 - side))))
    buffer = io.BytesIO()
    canvas.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def throughput(predictor: FacePredictor, photos: list[tuple[str, bytes]]) -> tuple[float, float]:
    predictor.predict(photos[:32])  # warm up
    started = time.perf_counter()
    table = predictor.predict(photos)
    elapsed = time.perf_counter() - started
    found = int((table["status"] == "ok").sum())
    return found / elapsed, found / len(photos)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def served_latency(model_uri: str, photos: list[bytes], count: int) -> dict[str, float]:
    port = free_port()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri, "--env-manager", "local"]
    server = subprocess.Popen(
        [*command, "-h", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(180):
            try:
                if requests.get(f"{url}/ping", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                time.sleep(1)
        timings = []
        for index in range(count + 3):
            payload = {
                "dataframe_split": {
                    "columns": ["image"],
                    "data": [[base64.b64encode(photos[index % len(photos)]).decode()]],
                }
            }
            started = time.perf_counter()
            response = requests.post(f"{url}/invocations", json=payload, timeout=60)
            response.raise_for_status()
            if index >= 3:  # the first requests warm the model up
                timings.append((time.perf_counter() - started) * 1000)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    return {"p50_ms": float(np.percentile(timings, 50)), "p95_ms": float(np.percentile(timings, 95))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=50)
    args = parser.parse_args()
    folder = Path(os.environ.get("FACE_DATA_DIR", ""))
    if not folder.is_dir():
        sys.exit("Set FACE_DATA_DIR to a folder of face images, e.g. FACE_DATA_DIR=../shared/data/utkface")
    rng = np.random.default_rng(0)
    files = sorted(p for p in folder.rglob("*") if is_image_file(p.name))
    chosen = [files[i] for i in rng.choice(len(files), min(args.images, len(files)), replace=False)]
    crops = [(p.name, p.read_bytes()) for p in chosen]
    photos = [(name, full_photo(data, rng)) for name, data in crops]

    models = [load_keras_model(PROJECT_ROOT / f"data/06_models/{task}_model.keras") for task in ("gender", "age")]
    size, _, channels = models[0].input_shape[1:]
    spec = ImageSpec(size=size, color_mode="grayscale" if channels == 1 else "rgb")
    results = {"images": len(crops)}
    for label, items, mode in (("crops", crops, "auto"), ("full_photos", photos, "auto")):
        rate, found = throughput(FacePredictor(*models, spec=spec, detection=DetectionSettings(mode=mode)), items)
        results[f"{label}_faces_per_s"], results[f"{label}_share_found"] = rate, found

    uri_file = PROJECT_ROOT / "data/06_models/face_model_uri.txt"
    if uri_file.exists():
        results["served"] = served_latency(uri_file.read_text().strip(), [data for _, data in photos], args.requests)

    out = PROJECT_ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "predict.json").write_text(json.dumps(results, indent=2))
    print(f"\n{len(crops)} UTKFace images, {os.cpu_count()} cores\n")
    print("| what | figure |\n|---|---:|")
    print(f"| batch, face crops (detector runs, whole image used) | {results['crops_faces_per_s']:.0f} faces/s |")
    print(
        f"| batch, 640x480 photos with one face | {results['full_photos_faces_per_s']:.0f} faces/s "
        f"({results['full_photos_share_found']:.0%} of faces found) |"
    )
    if "served" in results:
        served = results["served"]
        print(
            f"| served model, one photo per request, p50 / p95 | {served['p50_ms']:.0f} / {served['p95_ms']:.0f} ms |"
        )


if __name__ == "__main__":
    main()
