"""Runs that survive faults: the whole `kedro run` killed, starved of disk, or refused its MLflow store.

    .venv/bin/python bench/faults.py [--kills 4] [--seed 0] [--images 96]

In a throwaway copy of the project, on generated faces with tiny networks and
``training.deterministic: true``: an uninterrupted reference run, then runs killed (SIGKILL, the
whole process group) at seeded random points of preprocessing and training, each followed by a
plain rerun whose arrays, final weights and test metrics are compared with the reference's; two
runs at once in one project (then SQLite's integrity check); a full disk and a read-only folder for
the arrays (tmpfs; needs root); a missing, a locked and a foreign ``mlflow.db``; an unreachable
tracking server. Prints one Markdown row per case (the outcome and the first line that explains
it) and writes bench/out/faults.json. ``tests/test_faults.py`` runs a short version.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from common import free_port, start_kedro

PROJECT_ROOT = Path(__file__).resolve().parents[1]
OUT = PROJECT_ROOT / "bench" / "out"
sys.path.insert(0, str(PROJECT_ROOT / "tests"))
from conftest import copy_project, use_small_networks  # noqa: E402 - the test suite's project helpers
from fake_faces import write_utkface_folder  # noqa: E402

ARRAYS = ("train_images.npy", "val_images.npy", "test_images.npy")
# Where a run is killed: a line of its log, then a seeded delay of up to this many seconds.
KILL_POINTS = (
    ("Saving data to train_images", 0.0),
    ("Running node: preprocess_val", 0.3),
    ("gender.train_model", 3.0),
    ("age.train_model", 3.0),
    ("Saving data to gender.model", 0.0),
)


def kedro(project: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """``kedro *args`` in ``project``, logging to its own ``mlflow.db``, in a process group of its own."""
    environment = {"MLFLOW_TRACKING_URI": f"sqlite:///{project / 'mlflow.db'}", **(env or {})}
    return start_kedro(
        project, *args, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip


def finish(process: subprocess.Popen, timeout: float = 1800) -> tuple[int, str]:
    output, _ = process.communicate(timeout=timeout)
    return process.returncode, output


def kill_at(process: subprocess.Popen, marker: str, delay: float) -> bool:
    """SIGKILL the run's process group ``delay`` s after its log shows ``marker``; False if it ended first."""
    for line in process.stdout:
        if marker in line:
            time.sleep(delay)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=60)
            return process.returncode == -signal.SIGKILL
    process.wait(timeout=60)
    return False


EXCEPTION_LINE = re.compile(r"^[A-Z][A-Za-z]*(Error|Exception|Unavailable|InProgress): ")


def explanation(output: str) -> str:
    """What the run said went wrong: the last ``SomethingError: ...`` line of its log and the next."""
    lines = [line.strip() for line in output.splitlines() if not line.strip().startswith(("│", "╭", "╰"))]
    found = [i for i, line in enumerate(lines) if EXCEPTION_LINE.match(line)]
    if not found:
        return ""
    return " ".join(lines[found[-1] : found[-1] + 2])[:400]


def fingerprint(project: Path) -> dict[str, str]:
    """SHA-1 of each array, of each task's latest model weights and of its test metrics."""
    import keras  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415

    prints = {name: sha1((project / "data/05_model_input" / name).read_bytes()) for name in ARRAYS}
    for task in ("gender", "age"):
        folder = project / f"data/06_models/{task}_model.keras"
        latest = sorted(v / folder.name for v in folder.iterdir() if (v / folder.name).is_file())[-1]
        weights = keras.models.load_model(latest, compile=False).get_weights()
        prints[f"{task} weights"] = sha1(b"".join(np.ascontiguousarray(w).tobytes() for w in weights))
        prints[f"{task} test metrics"] = sha1((project / f"data/08_reporting/{task}_metrics.json").read_bytes())
    return prints


def sha1(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()[:12]


def new_project(root: Path, faces: Path) -> Path:
    project = copy_project(root)
    use_small_networks(project, epochs=2)
    for task in ("gender", "age"):
        path = project / f"conf/local/parameters_train_{task}.yml"
        params = yaml.safe_load(path.read_text())
        params[task]["training"]["deterministic"] = True
        path.write_text(yaml.safe_dump(params))
    (project / ".faces").symlink_to(faces)
    return project


def env_for(project: Path) -> dict[str, str]:
    return {"FACE_DATA_DIR": str(project / ".faces")}


@contextlib.contextmanager
def tmpfs(folder: Path, size: str, read_only: bool = False):
    folder.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], check=False)
    if mounted.returncode != 0:
        yield None
        return
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def integrity(database: Path) -> str:
    with contextlib.closing(sqlite3.connect(database)) as connection:
        return connection.execute("PRAGMA integrity_check").fetchone()[0]


def killed_runs(work: Path, faces: Path, reference: dict[str, str], kills: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for index in range(kills):
        marker, longest = KILL_POINTS[index % len(KILL_POINTS)]
        delay = round(rng.uniform(0, longest), 2)
        project = new_project(work / f"killed{index}", faces)
        killed = kill_at(kedro(project, "run", env=env_for(project)), marker, delay)
        code, output = finish(kedro(project, "run", env=env_for(project)))
        same = code == 0 and fingerprint(project) == reference
        rows.append({
            "case": f"SIGKILL {delay} s after `{marker}`, then `kedro run`",
            "outcome": ("killed; " if killed else "ended before the kill; ")
            + ("rerun completed, arrays, weights and test metrics identical" if same else "DIFFERENT or failed"),
            "ok": killed and same,
            "detail": "" if code == 0 else explanation(output),
        })  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    return rows


def refused_clearly(results: list[tuple[int, str]]) -> bool:
    """One run finished and the other was refused at once because the first was training."""
    codes = sorted(code for code, _ in results)
    return codes[0] == 0 and codes[1] != 0 and any("TrainingInProgress" in output for _, output in results)


def concurrent_runs(work: Path, faces: Path) -> list[dict]:
    """Two runs at once in one project: first on a new MLflow store, then on the store they made."""
    project = new_project(work / "concurrent", faces)
    rows = []
    for store in ("new", "existing"):
        first, second = (kedro(project, "run", env=env_for(project)) for _ in range(2))
        results = [finish(first), finish(second)]
        check = integrity(project / "mlflow.db")
        codes = [code for code, _ in results]
        rows.append({
            "case": f"two whole `kedro run` at once, one project, {store} `mlflow.db`",
            "outcome": f"exit codes {codes}; SQLite integrity_check: {check}",
            "ok": check == "ok" and (codes == [0, 0] or refused_clearly(results)),
            "detail": "; ".join(explanation(output) for code, output in results if code != 0),
        })  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    return rows


def store_cases(work: Path, faces: Path) -> list[dict]:
    rows = []
    project = new_project(work / "store", faces)
    database = project / "mlflow.db"

    def run(case: str, expect_ok: bool, env: dict[str, str] | None = None) -> None:
        started = time.perf_counter()
        code, output = finish(
            kedro(project, "run", "--pipelines", "ingestion", env={**env_for(project), **(env or {})})
        )
        seconds = time.perf_counter() - started
        outcome = f"exit {code} after {seconds:.0f} s"
        detail = explanation(output) if code else ""
        rows.append({"case": case, "outcome": outcome, "ok": (code == 0) == expect_ok, "detail": detail})
        print(json.dumps(rows[-1]), flush=True)

    run("`mlflow.db` missing", True)
    holder = sqlite3.connect(database, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        run("`mlflow.db` locked by another process", False)
    finally:
        holder.rollback()
        holder.close()
    (project / "notes.db").write_text("not a database")
    run("tracking URI names a file that is not SQLite", False, {"MLFLOW_TRACKING_URI": "sqlite:///notes.db"})
    run("tracking server unreachable", False, {"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}"})
    return rows


def disk_cases(work: Path, faces: Path) -> list[dict]:
    rows = []
    for case, size, read_only in (("full disk (64 kB tmpfs) for the arrays", "64k", False),
                                  ("read-only folder (tmpfs) for the arrays", "1m", True)):  # fmt: skip
        project = new_project(work / case.split()[0], faces)
        arrays = project / "data/05_model_input"
        with tmpfs(arrays, size, read_only) as mounted:
            if mounted is None:
                rows.append({"case": case, "outcome": "skipped: mount not permitted", "ok": True, "detail": ""})
                continue
            code, output = finish(kedro(project, "run", "--pipelines", "preprocessing", env=env_for(project)))
            left = sorted(p.name for p in arrays.iterdir())
            whole = all(_loads(arrays / name) for name in left if name.endswith(".npy"))
        rows.append({
            "case": case,
            "outcome": f"exit {code}; files left: {left or 'none'}; every .npy left complete: {whole}",
            "ok": code != 0 and whole and not any(".partial-" in name for name in left),
            "detail": explanation(output),
        })  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    return rows


def _loads(path: Path) -> bool:
    import numpy as np  # noqa: PLC0415

    try:
        np.load(path)
    except (ValueError, OSError):
        return False
    return True


CASES = ("kills", "concurrent", "disks", "store")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=len(KILL_POINTS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES), help="which kinds of fault to run")
    args = parser.parse_args()
    os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "true")
    with tempfile.TemporaryDirectory(prefix="faults-") as folder:
        work = Path(folder)
        faces = work / "faces"
        write_utkface_folder(faces, args.images, size=64)
        rows: list[dict] = []
        if "kills" in args.cases:
            reference_project = new_project(work / "reference", faces)
            code, output = finish(kedro(reference_project, "run", env=env_for(reference_project)))
            assert code == 0, output[-3000:]
            reference = fingerprint(reference_project)
            again = new_project(work / "again", faces)
            assert finish(kedro(again, "run", env=env_for(again)))[0] == 0
            same = fingerprint(again) == reference
            rows.append({
                "case": "uninterrupted run, twice",
                "outcome": "identical" if same else "DIFFERENT (not deterministic)",
                "ok": same,
                "detail": "",
            })  # fmt: skip
            print(json.dumps(rows[-1]), flush=True)
            rows += killed_runs(work, faces, reference, args.kills, args.seed)
        if "concurrent" in args.cases:
            rows += concurrent_runs(work, faces)
        if "disks" in args.cases:
            rows += disk_cases(work, faces)
        if "store" in args.cases:
            rows += store_cases(work, faces)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"faults-{'-'.join(args.cases)}.json").write_text(json.dumps(rows, indent=2))
    print("\n| fault | outcome | as expected | message |\n|---|---|---|---|")
    for row in rows:
        detail = row["detail"].replace("|", "\\|")
        print(f"| {row['case']} | {row['outcome']} | {'yes' if row['ok'] else 'NO'} | {detail} |")


if __name__ == "__main__":
    main()
