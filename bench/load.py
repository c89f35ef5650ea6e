"""The served model under load: concurrent clients against the real ``mlflow models serve``.

    .venv/bin/python bench/load.py [--clients 1 4 16] [--requests 400] [--workers 2]

Packages the latest trained networks (data/06_models, from `make run`) as the bundled face model
into a throwaway MLflow store, serves it on 127.0.0.1 with ``--env-manager local`` and sends, from
each number of clients in turn, a seeded mix of requests: one photo, a batch of 16, a photo without
a face, and bad payloads (not base64, not an image, no ``image`` column, broken JSON, too many rows,
a decompression bomb). Photos are real portraits from EVAL_DATA_DIR (default ../shared/data/aaf_dev).
Reports requests/s, faces/s, p50/p95/p99 latency, replies by status, the well-formed requests that
failed, the bad ones not refused with a 4xx, any reply carrying a traceback or a server path, and
the server's resident memory (all its processes) at the start and end of each round. Results go to
bench/out/load.json and are printed as Markdown. ``tests/test_served_load.py`` runs a short version.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import requests
from common import free_port
from PIL import Image

PROJECT_ROOT = Path(__file__).resolve().parents[1]
OUT = PROJECT_ROOT / "bench" / "out"
# What a reply must never show: a Python traceback or a file path of the server.
LEAK_MARKERS = ("Traceback (most recent call last)", 'File "/', "site-packages", str(PROJECT_ROOT))
BATCH = 16


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def group_rss_bytes(group: int) -> int:
    """Resident memory of every process in process group ``group`` (the server and its workers)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == group:  # fields after the name: state, ppid, pgrp, ...
                total += int(fields[21]) * os.sysconf("SC_PAGE_SIZE")  # rss, in pages
    return total


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    log: Path

    def rss_bytes(self) -> int:
        return group_rss_bytes(self.process.pid)

    def alive(self) -> bool:
        return self.process.poll() is None


@contextlib.contextmanager
def serve(model_uri: str, workers: int = 1, env: dict[str, str] | None = None, log: Path | None = None):
    """``mlflow models serve`` of ``model_uri`` on 127.0.0.1, stopped (its whole process group) on exit."""
    port = free_port()
    keep_log = log is not None
    log = log or Path(tempfile.mkstemp(prefix="served-", suffix=".log")[1])
    command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri, "--env-manager", "local"]
    command += ["-h", "127.0.0.1", "-p", str(port), "-w", str(workers)]
    environment = {
        **os.environ,
        # As in an activated .venv: mlflow starts `uvicorn` from PATH.
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        **(env or {}),
    }
    with log.open("wb") as output:
        process = subprocess.Popen(
            command, env=environment, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
    server = Server(f"http://127.0.0.1:{port}", process, log)
    try:
        wait_until_ready(server)
        yield server
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
        if not keep_log:
            log.unlink(missing_ok=True)


def wait_until_ready(server: Server, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not server.alive():
            raise RuntimeError(f"mlflow models serve exited: {server.log.read_text()[-3000:]}")
        with contextlib.suppress(requests.ConnectionError):
            if requests.get(f"{server.url}/ping", timeout=2).status_code == 200:
                return
        time.sleep(0.5)
    raise RuntimeError(f"mlflow models serve did not answer within {timeout:.0f} s")


@dataclass(frozen=True)
class Request:
    """One request of the mix: its kind, whether it is well-formed, its body and content type."""

    kind: str
    well_formed: bool
    body: bytes
    content_type: str = "application/json"


def table_body(images: list[str], column: str = "image") -> bytes:
    return json.dumps({"dataframe_split": {"columns": [column], "data": [[image] for image in images]}}).encode()


def png_bomb(side: int = 30_000) -> bytes:
    """A PNG of ``side`` x ``side`` one-colour pixels: a few hundred kB that would decode to ~1 GB."""
    import zlib  # noqa: PLC0415

    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    header = side.to_bytes(4, "big") * 2 + bytes([8, 0, 0, 0, 0])  # 8-bit grayscale
    compressor = zlib.compressobj(9)
    row = b"\0" + b"\0" * side
    pixels = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def blank_photo(seed: int) -> bytes:
    """A photo without a face: smooth noise."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
    image = Image.fromarray(small).resize((320, 240), Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def request_mix(photos: list[bytes], seed: int, max_rows: int = 256) -> list[Request]:
    """The kinds of request a client sends, in the proportions it sends them (well-formed first)."""
    rng = random.Random(seed)
    encoded = [b64(photo) for photo in photos]
    one = [Request("one photo", True, table_body([rng.choice(encoded)])) for _ in range(6)]
    batch = [Request(f"batch of {BATCH}", True, table_body(rng.choices(encoded, k=BATCH))) for _ in range(2)]
    no_face = [Request("no face", True, table_body([b64(blank_photo(seed))]))]
    bad = [
        Request("bad: not base64", False, table_body(["this is not base64!"])),
        Request("bad: not an image", False, table_body([b64(b"GIF89a but not really")])),
        Request("bad: no image column", False, table_body([encoded[0]], column="picture")),
        Request(
            "bad: broken JSON", False, b'{"dataframe_split": {"columns": ["image"], "data": [[', "application/json"
        ),
        Request("bad: too many rows", False, table_body([encoded[0][:8]] * (max_rows + 1))),
        Request("bad: decompression bomb", False, table_body([b64(png_bomb())])),
        Request("bad: wrong table shape", False, b'{"dataframe_split": {"columns": ["image"], "data": 7}}'),
    ]
    return one * 3 + batch + no_face + bad


@dataclass
class Reply:
    kind: str
    well_formed: bool
    status: int
    seconds: float
    faces: int
    message: str


def send(session: requests.Session, url: str, request: Request, timeout: float = 120) -> Reply:
    started = time.perf_counter()
    try:
        response = session.post(
            f"{url}/invocations", data=request.body, headers={"Content-Type": request.content_type}, timeout=timeout
        )
        status, text = response.status_code, response.text
    except requests.RequestException as exc:  # no reply at all counts as a failure of its own
        status, text = 0, f"{type(exc).__name__}: {exc}"
    seconds = time.perf_counter() - started
    faces = 0
    if status == 200:
        faces = sum(row.get("status") == "ok" for row in json.loads(text)["predictions"])
    return Reply(request.kind, request.well_formed, status, seconds, faces, text if status != 200 else "")


@dataclass
class Round:
    clients: int
    seconds: float
    replies: list[Reply] = field(default_factory=list)
    rss_start: int = 0
    rss_end: int = 0

    def summary(self) -> dict:
        latencies = np.array([reply.seconds for reply in self.replies if reply.well_formed]) * 1000
        good_failures = Counter(r.status for r in self.replies if r.well_formed and r.status != 200)
        bad_not_refused = Counter(r.kind for r in self.replies if not r.well_formed and not 400 <= r.status < 500)
        return {
            "clients": self.clients,
            "requests": len(self.replies),
            "requests_per_s": round(len(self.replies) / self.seconds, 2),
            "faces_per_s": round(sum(r.faces for r in self.replies) / self.seconds, 2),
            "p50_ms": round(float(np.percentile(latencies, 50)), 1),
            "p95_ms": round(float(np.percentile(latencies, 95)), 1),
            "p99_ms": round(float(np.percentile(latencies, 99)), 1),
            "by_status": dict(sorted(Counter(str(r.status) for r in self.replies).items())),
            "well_formed_failed": dict(good_failures),
            "bad_not_refused_with_4xx": dict(bad_not_refused),
            "bad_without_message": sum(not r.well_formed and not r.message.strip() for r in self.replies),
            "replies_leaking_internals": sum(any(m in r.message for m in LEAK_MARKERS) for r in self.replies),
            "rss_start_mb": round(self.rss_start / 2**20),
            "rss_end_mb": round(self.rss_end / 2**20),
        }


def run_round(server: Server, mix: list[Request], clients: int, requests_total: int, seed: int) -> Round:
    """``requests_total`` requests drawn from ``mix`` (seeded), sent by ``clients`` threads at once."""
    rng = random.Random(seed)
    queue = iter([rng.choice(mix) for _ in range(requests_total)])
    lock = threading.Lock()
    result = Round(clients, 0.0, rss_start=server.rss_bytes())

    def client() -> None:
        with requests.Session() as session:
            while True:
                with lock:
                    request = next(queue, None)
                if request is None:
                    return
                reply = send(session, server.url, request)
                with lock:
                    result.replies.append(reply)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    result.seconds = time.perf_counter() - started
    result.rss_end = server.rss_bytes()
    return result


def package_trained_model(models: Path, store: Path) -> str:
    """Log the trained networks in ``models`` as the bundled face model into a new store; its URI."""
    import keras  # noqa: PLC0415
    import mlflow  # noqa: PLC0415

    from face_pipeline.inference.packaging import log_face_model  # noqa: PLC0415

    mlflow.set_tracking_uri(f"sqlite:///{store / 'mlflow.db'}")
    mlflow.set_experiment("load_bench")
    settings = json.loads((models / "inference_settings.json").read_text())
    with mlflow.start_run():
        gender, age = (keras.models.load_model(models / f"{task}_model.keras") for task in ("gender", "age"))
        return log_face_model(settings, gender_model=gender, age_model=age)


def latest_model_file(path: Path) -> Path:
    """A Kedro versioned model folder's latest file, or ``path`` itself when it is a file."""
    if path.is_file():
        return path
    return sorted(version / path.name for version in path.iterdir() if (version / path.name).is_file())[-1]


def sample_photos(folder: Path, count: int, seed: int) -> list[bytes]:
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    return [path.read_bytes() for path in random.Random(seed).sample(files, min(count, len(files)))]


def markdown(rounds: list[dict]) -> str:
    lines = [
        "| clients | requests | req/s | faces/s | p50 ms | p95 ms | p99 ms | replies by status | well-formed failed "
        "| bad not 4xx | leaks | RSS start → end MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rounds:
        statuses = ", ".join(f"{status}: {count}" for status, count in r["by_status"].items())
        lines.append(
            f"| {r['clients']} | {r['requests']} | {r['requests_per_s']} | {r['faces_per_s']} | {r['p50_ms']} "
            f"| {r['p95_ms']} | {r['p99_ms']} | {statuses} | {sum(r['well_formed_failed'].values())} "
            f"| {sum(r['bad_not_refused_with_4xx'].values())} | {r['replies_leaking_internals']} "
            f"| {r['rss_start_mb']} → {r['rss_end_mb']} |"
        )
    return "\n".join(lines)


def oversized_body(server: Server, megabytes: int, mix: list[Request]) -> dict:
    """A body of ``megabytes`` MB (one huge base64 string) while another client sends one-photo requests."""
    body = b'{"dataframe_split": {"columns": ["image"], "data": [["' + b"A" * (megabytes * 2**20) + b'"]]}}'
    others: list[Reply] = []
    done = threading.Event()

    def other_client() -> None:
        one = next(request for request in mix if request.kind == "one photo")
        with requests.Session() as session:
            while not done.is_set():
                others.append(send(session, server.url, one))

    neighbour = threading.Thread(target=other_client)
    neighbour.start()
    started = time.perf_counter()
    response = requests.post(
        f"{server.url}/invocations", data=body, headers={"Content-Type": "application/json"}, timeout=120
    )
    seconds = time.perf_counter() - started
    done.set()
    neighbour.join()
    return {
        "body_mb": megabytes,
        "status": response.status_code,
        "seconds": round(seconds, 2),
        "message": response.json().get("message", "")[:160],
        "rss_mb_after": round(server.rss_bytes() / 2**20),
        "others_meanwhile": dict(Counter(str(reply.status) for reply in others)),
    }


def thumbnail(photo: bytes, side: int = 96) -> bytes:
    image = Image.open(io.BytesIO(photo)).convert("RGB")
    image.thumbnail((side, side))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def many_rows(server: Server, photo: bytes, rows: int) -> dict:
    """One request of ``rows`` copies of a small photo."""
    started = time.perf_counter()
    response = requests.post(
        f"{server.url}/invocations",
        data=table_body([b64(photo)] * rows),
        headers={"Content-Type": "application/json"},
        timeout=120,
    )
    return {
        "rows": rows,
        "status": response.status_code,
        "seconds": round(time.perf_counter() - started, 2),
        "message": response.json().get("message", "")[-120:],
        "rss_mb_after": round(server.rss_bytes() / 2**20),
    }


def models_folder(folder: Path) -> Path:
    """``folder`` holding links to the latest trained networks and their settings."""
    models = PROJECT_ROOT / "data" / "06_models"
    folder.mkdir()
    for task in ("gender", "age"):
        (folder / f"{task}_model.keras").symlink_to(latest_model_file(models / f"{task}_model.keras"))
    (folder / "inference_settings.json").symlink_to(models / "inference_settings.json")
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--requests", type=int, default=400, help="requests per round")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="server worker processes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--photos", default=os.environ.get("EVAL_DATA_DIR", PROJECT_ROOT.parent / "shared/data/aaf_dev")
    )
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    photos = sample_photos(Path(args.photos), 64, args.seed)
    mix = request_mix(photos, args.seed)
    report: dict = {"rounds": [], "oversized": []}
    with tempfile.TemporaryDirectory() as store:
        model_uri = package_trained_model(models_folder(Path(store) / "models"), Path(store))
        env = {"MLFLOW_TRACKING_URI": f"sqlite:///{Path(store) / 'mlflow.db'}"}
        for workers in args.workers:
            with serve(model_uri, workers, env) as server:
                run_round(server, mix, 2, 20, args.seed)  # warm-up: every worker traces its functions
                for clients in args.clients:
                    summary = run_round(server, mix, clients, args.requests, args.seed + clients).summary()
                    report["rounds"].append({"workers": workers, **summary})
                    print(json.dumps(report["rounds"][-1]), flush=True)
                if workers == args.workers[-1]:
                    report["oversized"] = [oversized_body(server, mb, mix) for mb in (100, 300)]
                    report["many_rows"] = many_rows(server, thumbnail(photos[0]), 3000)
                    report["alive_after"] = server.alive() and requests.get(f"{server.url}/ping").ok
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "load.json").write_text(json.dumps(report, indent=2))
    for workers in args.workers:
        print(f"\nServer workers: {workers}\n")
        print(markdown([r for r in report["rounds"] if r["workers"] == workers]))
    print("\nOversized bodies:", json.dumps(report["oversized"], indent=2))
    print("Many rows:", json.dumps(report["many_rows"], indent=2))


if __name__ == "__main__":
    main()
