"""dlib's face descriptors: dlib itself against the same ResNet in Keras (face_pipeline.embedding.network).

    FACE_DATA_DIR=../shared/data/utkface .venv/bin/python bench/embedding_speed.py [--faces 200]

Needs dlib (dlib-bin) and face-recognition-models in the running environment (not project
dependencies). On ``--faces`` photos of the folder (a seeded sample, sorted names), chips are
made as dlib's Python examples make them: HOG detector (no upsampling; the box (20, 20)-(180, 180)
where it finds no face), 5-point landmarks, ``get_face_chip`` 150 px, padding 0.25. Then:

- the largest difference between the Keras and dlib descriptors over the first ``--compare``
  faces;
- dlib's ``compute_face_descriptor`` per chip, one process on one thread, and a pool of
  ``os.cpu_count()`` processes;
- the Keras network batched (``--batch-sizes``), TensorFlow on one thread and on all cores, each
  setting in its own process so that the thread settings apply (``--xla`` adds jit_compile runs);
- the time to detect, and to find the landmarks and cut the chip.

Times are the best of ``--repeats`` passes over all chips, in ms per face, with the cores that
pass kept busy (its process's CPU time over wall time; a pool's children are not counted): below
the thread count, other work on the machine took the rest. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

FALLBACK_BOX = (20, 20, 180, 180)  # left, top, right, bottom: the face on a UTKFace chip
CHIP_SIZE, CHIP_PADDING = 150, 0.25


def photo_paths(folder: Path, count: int) -> list[Path]:
    files = sorted(path for path in folder.iterdir() if path.suffix.lower() in {".jpg", ".jpeg", ".png"})
    if not files:
        raise SystemExit(f"no photos in {folder}")
    return sorted(random.Random(0).sample(files, min(count, len(files))))


def make_chips(paths: list[Path]) -> tuple[np.ndarray, dict]:
    """150 px dlib chips, and the time per face of detection and of landmarks + chip."""
    import cv2  # noqa: PLC0415
    import dlib  # noqa: PLC0415
    import face_recognition_models  # noqa: PLC0415

    detector = dlib.get_frontal_face_detector()
    landmarks = dlib.shape_predictor(face_recognition_models.pose_predictor_five_point_model_location())
    chips, detected, detect_seconds, chip_seconds = [], 0, 0.0, 0.0
    for path in paths:
        rgb = np.ascontiguousarray(cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB))
        started = time.perf_counter()
        faces = detector(rgb, 0)
        detect_seconds += time.perf_counter() - started
        detected += bool(faces)
        face = max(faces, key=lambda box: box.area()) if faces else dlib.rectangle(*FALLBACK_BOX)
        started = time.perf_counter()
        chips.append(dlib.get_face_chip(rgb, landmarks(rgb, face), size=CHIP_SIZE, padding=CHIP_PADDING))
        chip_seconds += time.perf_counter() - started
    timing = {
        "detected": detected,
        "detect_ms": 1000 * detect_seconds / len(paths),
        "chip_ms": 1000 * chip_seconds / len(paths),
    }
    return np.stack(chips), timing


_pool_network = None


def _load_dlib_network() -> None:
    global _pool_network  # noqa: PLW0603 - one network per pool process
    import dlib  # noqa: PLC0415
    import face_recognition_models  # noqa: PLC0415

    _pool_network = dlib.face_recognition_model_v1(face_recognition_models.face_recognition_model_location())


def _dlib_descriptor(chip: np.ndarray) -> np.ndarray:
    return np.array(_pool_network.compute_face_descriptor(chip), np.float32)


def _best(best: float, started: float, cpu: float, cores: float | None) -> tuple[float, float | None]:
    """The shorter of two passes, with the cores it kept busy (CPU seconds over seconds)."""
    seconds = time.perf_counter() - started
    if seconds < best:
        return seconds, (time.process_time() - cpu) / seconds
    return best, cores


def dlib_worker(chips_file: Path, processes: int, repeats: int, out: Path) -> None:
    """In its own process: dlib's descriptors of every chip, and the best time per face."""
    chips = list(np.load(chips_file))
    best, cores = float("inf"), None
    if processes == 1:
        _load_dlib_network()
        for _ in range(repeats):
            started, cpu = time.perf_counter(), time.process_time()
            descriptors = [_dlib_descriptor(chip) for chip in chips]
            best, cores = _best(best, started, cpu, cores)
    else:
        from multiprocessing import get_context  # noqa: PLC0415

        with get_context("spawn").Pool(processes, initializer=_load_dlib_network) as pool:
            pool.map(_dlib_descriptor, chips[:processes])  # every process loaded and warm
            for _ in range(repeats):
                started = time.perf_counter()
                descriptors = pool.map(_dlib_descriptor, chips, chunksize=4)
                best = min(best, time.perf_counter() - started)
    np.save(out, np.stack(descriptors))
    out.with_suffix(".json").write_text(json.dumps({"ms": 1000 * best / len(chips), "cores": cores}))


def keras_worker(chips_file: Path, threads: int, batch: int, xla: bool, repeats: int, out: Path) -> None:
    """In its own process: the Keras network's descriptors, TensorFlow on ``threads`` threads (0: all)."""
    import tensorflow as tf  # noqa: PLC0415

    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    from face_pipeline.embedding.network import build_embedding_network  # noqa: PLC0415

    chips = np.load(chips_file).astype(np.float32)
    model = build_embedding_network()
    forward = tf.function(lambda x: model(x, training=False), jit_compile=xla, reduce_retracing=True)
    batches = [chips[start : start + batch] for start in range(0, len(chips), batch)]
    for size in {len(item) for item in batches}:  # trace (and compile) every batch shape first
        forward(tf.constant(batches[0][:size]))
    best, cores = float("inf"), None
    for _ in range(repeats):
        started, cpu = time.perf_counter(), time.process_time()
        descriptors = [forward(tf.constant(item)).numpy() for item in batches]
        best, cores = _best(best, started, cpu, cores)
    np.save(out, np.concatenate(descriptors))
    out.with_suffix(".json").write_text(json.dumps({"ms": 1000 * best / len(chips), "cores": cores}))


def run_worker(arguments: list[str], out: Path) -> tuple[np.ndarray, float, float | None]:
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    subprocess.run([sys.executable, __file__, "--worker", *arguments, str(out)], env=environment, check=True)
    timing = json.loads(out.with_suffix(".json").read_text())
    return np.load(out), timing["ms"], timing["cores"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faces", type=int, default=200, help="photos to run (default 200)")
    parser.add_argument("--data-dir", type=Path, default=os.environ.get("FACE_DATA_DIR"), help="$FACE_DATA_DIR")
    parser.add_argument("--compare", type=int, default=100, help="faces on which the descriptors are compared")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--repeats", type=int, default=3, help="passes per setting; the best counts")
    parser.add_argument("--xla", action="store_true", help="also time the Keras network with jit_compile")
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        kind, *rest = args.worker
        if kind == "dlib":
            dlib_worker(Path(rest[0]), int(rest[1]), int(rest[2]), Path(rest[3]))
        else:
            keras_worker(Path(rest[0]), int(rest[1]), int(rest[2]), rest[3] == "1", int(rest[4]), Path(rest[5]))
        return
    if args.data_dir is None:
        parser.error("give --data-dir or set FACE_DATA_DIR")

    load = os.getloadavg()[0]  # other work on the machine skews the all-cores figures
    chips, chip_timing = make_chips(photo_paths(args.data_dir, args.faces))
    faces, cores = len(chips), os.cpu_count() or 1
    # One-time conversion into the cache, outside the timed workers.
    run = [sys.executable, "-c", "from face_pipeline.embedding.network import build_embedding_network as b; b()"]
    subprocess.run(run, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}, check=True)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        chips_file = Path(folder) / "chips.npy"
        np.save(chips_file, chips)
        arguments = ["dlib", str(chips_file), "1", str(args.repeats)]
        reference, ms, busy = run_worker(arguments, Path(folder) / "dlib1.npy")
        rows.append(("dlib compute_face_descriptor", "1 process, 1 chip a call", ms, busy))
        arguments = ["dlib", str(chips_file), str(cores), str(args.repeats)]
        _, ms, busy = run_worker(arguments, Path(folder) / "dlibN.npy")
        rows.append(("dlib compute_face_descriptor", f"pool of {cores} processes", ms, busy))
        largest = 0.0
        for xla in [False, True] if args.xla else [False]:
            for threads in (1, 0):
                for batch in args.batch_sizes:
                    name = f"keras_{threads}_{batch}_{int(xla)}.npy"
                    arguments = ["keras", str(chips_file), str(threads), str(batch), str(int(xla)), str(args.repeats)]
                    descriptors, ms, busy = run_worker(arguments, Path(folder) / name)
                    compared = slice(0, args.compare)
                    largest = max(largest, float(np.abs(descriptors[compared] - reference[compared]).max()))
                    setting = f"batch {batch}, {'1 thread' if threads else f'{cores} cores'}{', XLA' if xla else ''}"
                    rows.append(("Keras network", setting, ms, busy))
    detected = f"{chip_timing['detected']}/{faces} found, 1 thread"
    rows.append(("HOG detector (no upsampling)", detected, chip_timing["detect_ms"], None))
    rows.append(("5-point landmarks + get_face_chip", "1 thread", chip_timing["chip_ms"], None))
    compared = min(args.compare, faces)
    print(f"\n{faces} faces from {args.data_dir}; largest |Keras - dlib| over {compared}: {largest:.2e}")
    print(f"load average at the start {load:.2f}, at the end {os.getloadavg()[0]:.2f} ({cores} cores)\n")
    print("| step | setting | ms per face | cores busy |\n|---|---|---:|---:|")
    for step, setting, ms, busy in rows:
        print(f"| {step} | {setting} | {ms:.2f} | {'' if busy is None else f'{busy:.2f}'} |")


if __name__ == "__main__":
    main()
