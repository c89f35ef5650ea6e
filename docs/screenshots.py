"""Rebuilds the pictures in docs/images from the real tools, in headless Chromium (``make screenshots``).

    .venv/bin/python docs/screenshots.py [--only demo viz mlflow annotated] [--store sqlite:///mlflow.db]

- ``annotated``: scikit-image's astronaut (public domain) through ``face-pipeline predict
  --annotate`` with the trained models of ``data/06_models`` (after ``make run``), and the
  command's output beside it (``docs/images/astronaut_annotated.jpg``, ``astronaut_predict.txt``);
- ``demo``: ``face-pipeline demo`` with those models, the astronaut uploaded (``demo.png``);
- ``viz``: Kedro-Viz's static build of the ``__default__`` pipeline, its tour dismissed and the
  graph fitted to the frame, the ``gender`` and ``age`` training namespaces visible (``kedro_viz.png``);
- ``mlflow``: MLflow's run comparison of the newest finished ``seed`` and ``default`` runs of
  ``--store`` (``make bench-train`` logs both profiles to ``bench/out/mlflow.db``), its plot set
  to the architecture, the epochs run, both tasks' test metrics and the run's minutes, the run
  names below it (``mlflow_compare.png``).

Needs Debian's Chromium (``apt-get install chromium``) and Playwright (the ``dev`` extra); no
browser is downloaded. Only public-domain photos are shown: never UTKFace or All-Age-Faces faces.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import requests

from face_pipeline.ops.processes import free_port

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT / "docs" / "images"
BIN = Path(sys.executable).parent
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ENVIRONMENT = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}


@contextlib.contextmanager
def serving(command: list[str], url: str, timeout: float = 180) -> Iterator[str]:
    """``command`` started in its own process group until ``url`` answers; stopped by its pid afterwards."""
    server = subprocess.Popen(
        command, cwd=ROOT, env=ENVIRONMENT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(requests.ConnectionError):
                if requests.get(url, timeout=2).status_code < 500:
                    break
            if server.poll() is not None:
                raise RuntimeError(f"{command[0]} exited with {server.returncode}")
            time.sleep(0.5)
        else:
            raise RuntimeError(f"{url} did not answer")
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


@contextlib.contextmanager
def browser_page(width: int, height: int):
    from playwright.sync_api import sync_playwright  # noqa: PLC0415

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"],
        )
        try:
            yield browser.new_page(viewport={"width": width, "height": height}, device_scale_factor=1)
        finally:
            browser.close()


def astronaut(folder: Path) -> Path:
    from PIL import Image  # noqa: PLC0415
    from skimage import data  # noqa: PLC0415

    path = folder / "astronaut.jpg"
    Image.fromarray(data.astronaut()).save(path, quality=92)
    return path


def annotated() -> None:
    with tempfile.TemporaryDirectory() as folder:
        photo = astronaut(Path(folder))
        command = [str(BIN / "face-pipeline"), "predict", str(photo), "--annotate", str(Path(folder) / "out")]
        output = subprocess.run(command, cwd=ROOT, env=ENVIRONMENT, capture_output=True, text=True, check=True).stdout
        shutil.copy(Path(folder) / "out" / "astronaut.jpg", IMAGES / "astronaut_annotated.jpg")
    (IMAGES / "astronaut_predict.txt").write_text(f"$ face-pipeline predict astronaut.jpg --annotate out/\n{output}")
    print(output.strip())


def demo() -> None:
    port = free_port()
    command = [str(BIN / "face-pipeline"), "demo", "--port", str(port)]
    with tempfile.TemporaryDirectory() as folder, serving(command, f"http://127.0.0.1:{port}/") as url:
        photo = astronaut(Path(folder))
        with browser_page(1000, 1000) as page:
            page.goto(url)
            page.set_input_files("#files", [str(photo)])
            page.wait_for_selector('section[data-file="astronaut.jpg"] img', timeout=120_000)
            page.screenshot(path=str(IMAGES / "demo.png"), full_page=True)


# Kedro-Viz keeps its view in localStorage: no tour, no sidebar or minimap, tasks only (the
# datasets and parameters hidden), left to right, so the pipeline fills the frame.
VIZ_VIEW = {
    "node": {"disabled": {}},
    "nodeType": {"disabled": {"parameters": True, "task": False, "data": True}},
    "pipeline": {"active": "__default__"},
    "layer": {"visible": False},
    "tag": {"enabled": {}},
    "textLabels": True,
    "visible": {
        "code": False,
        "graph": True,
        "miniMap": False,
        "sidebar": False,
        "slicing": False,
        "traceback": False,
    },
    "theme": "light",
    "isPrettyName": False,
    "showFeatureHints": False,
    "showDatasetPreviews": True,
    "flags": {"sizewarning": True},
    "expandAllPipelines": False,
    "orientation": "horizontal",
    "featureHintStep": 0,
}


def viz() -> None:
    subprocess.run([str(BIN / "kedro"), "viz", "build"], cwd=ROOT, env=ENVIRONMENT, check=True, capture_output=True)
    port = free_port()
    command = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", "build"]
    with serving(command, f"http://127.0.0.1:{port}/") as url, browser_page(1600, 700) as page:
        page.add_init_script(f"localStorage.setItem('KedroViz', JSON.stringify({json.dumps(VIZ_VIEW)}))")
        page.goto(url)
        page.wait_for_selector(".pipeline-node", state="attached", timeout=60_000)
        page.wait_for_timeout(2000)
        page.screenshot(path=str(IMAGES / "kedro_viz.png"))


# What the MLflow comparison plots: how the profiles differ, then what they scored and took.
COMPARED_PARAMETERS = ("gender.model.architecture", "gender.decided.epochs_run", "age.decided.epochs_run")
COMPARED_METRICS = ("gender.test_accuracy", "age.test_mae", "run_minutes")


def mlflow_compare(store: str) -> None:
    import mlflow  # noqa: PLC0415

    mlflow.set_tracking_uri(store)
    finished = "attributes.status = 'FINISHED'"
    runs = []
    for profile in ("default", "seed"):
        found = mlflow.search_runs(
            experiment_names=["face_pipeline"],
            filter_string=f"{finished} and tags.profile = '{profile}' and tags.`mlflow.runName` LIKE '__default__%' "
            "and metrics.`gender.test_accuracy` >= 0",
            order_by=["start_time DESC"],
            max_results=1,
            output_format="list",
        )
        if not found:
            raise SystemExit(f"no finished {profile} run with test metrics in {store}: run make bench-train first")
        runs.append(found[0])
    port = free_port()
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", store, "--host", "127.0.0.1"]
    with serving([*command, "--port", str(port)], f"http://127.0.0.1:{port}/health") as _:
        ids = json.dumps([run.info.run_id for run in runs], separators=(",", ":"))
        url = f'http://127.0.0.1:{port}/#/compare-runs?runs={ids}&experiments=["{runs[0].info.experiment_id}"]'
        with browser_page(1400, 1000) as page:
            page.goto(url)
            page.get_by_text("Run details").first.wait_for(timeout=60_000)
            page.get_by_role("button", name="Close").click()  # the assistant pane
            # The parallel-coordinates plot on what tells the profiles apart and what they scored.
            page.get_by_role("button", name="Clear All").click()
            choosers = page.locator("input[type=search]")
            for index, names in enumerate((COMPARED_PARAMETERS, COMPARED_METRICS)):
                for name in names:
                    choosers.nth(index).click()
                    choosers.nth(index).fill(name)
                    # The option of exactly that name (older runs also hold ``parameters.<name>``).
                    page.locator(f'[class*="select-item-option"][title="{name}"]').click()
                    page.keyboard.press("Escape")
            page.wait_for_timeout(1500)
            page.screenshot(path=str(IMAGES / "mlflow_compare.png"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", default=["annotated", "demo", "viz", "mlflow"])
    parser.add_argument("--store", default=f"sqlite:///{ROOT / 'bench/out/mlflow.db'}")
    args = parser.parse_args()
    IMAGES.mkdir(parents=True, exist_ok=True)
    steps = {"annotated": annotated, "demo": demo, "viz": viz, "mlflow": lambda: mlflow_compare(args.store)}
    for name in args.only:
        steps[name]()
        print(f"{name}: done")


if __name__ == "__main__":
    main()
