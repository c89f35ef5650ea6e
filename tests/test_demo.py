"""The demo page in a real browser: Debian's Chromium, driven by Playwright (no browser is downloaded).

`face-pipeline demo` runs as a user starts it, on 127.0.0.1, with small saved networks; the test
uploads the astronaut photo and a text file named `.jpg`, and keeps its screenshot in
`tests/out/demo.png` for a person to look at.
"""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from fake_faces import encode
from PIL import Image
from skimage import data
from small_models import save_small_models

from face_pipeline.ops.processes import free_port

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOT = Path(__file__).parent / "out" / "demo.png"
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Chromium is not installed (apt-get install chromium)"),
]


CONSOLE = "from face_pipeline.commands.console import main; main()"


@pytest.fixture(scope="module")
def demo_url(tmp_path_factory):
    models = save_small_models(tmp_path_factory.mktemp("models"))
    port = free_port()
    command = [
        sys.executable,
        "-c",
        CONSOLE,
        "demo",
        "--port",
        str(port),
    ]
    command += ["--model", f"gender={models['gender']}", "--model", f"age={models['age']}"]
    command += ["--settings", str(models["settings"])]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if requests.get(url, timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                if server.poll() is not None:
                    pytest.fail(f"demo exited: {server.stdout.read().decode()[-3000:]}")
                time.sleep(0.5)
        else:
            pytest.fail("the demo page did not answer")
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def test_the_page_answers_a_photo_and_names_a_bad_file(demo_url, tmp_path):
    from playwright.sync_api import sync_playwright  # noqa: PLC0415

    photo = tmp_path / "astronaut.jpg"
    photo.write_bytes(encode(Image.fromarray(data.astronaut()), quality=90))
    notes = tmp_path / "notes.jpg"
    notes.write_text("not a photo")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"],
        )
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 1100})
            page.goto(demo_url)
            page.set_input_files("#files", [str(photo), str(notes)])
            page.wait_for_selector('section[data-file="notes.jpg"] .error', timeout=60_000)
            answer = page.locator('section[data-file="astronaut.jpg"]')
            image = answer.locator("img")
            assert image.evaluate("img => img.complete && img.naturalWidth") == 512  # the photo's own size
            rows = answer.locator("tbody tr")
            assert rows.count() == 1  # one face
            cells = rows.first.locator("td").all_inner_texts()
            assert cells[1] in {"male", "female"} and 0 <= float(cells[2]) <= 1 and cells[3] in {"yes", "no"}
            low, high = (int(value) for value in cells[5].split("-"))
            assert low <= float(cells[4]) <= high
            message = page.locator('section[data-file="notes.jpg"] .error').inner_text()
            assert message.startswith("notes.jpg: not an image")
            SCREENSHOT.parent.mkdir(exist_ok=True)
            page.screenshot(path=str(SCREENSHOT), full_page=True)
        finally:
            browser.close()


def test_the_server_refuses_what_it_cannot_use_and_keeps_serving(demo_url):
    too_large = requests.post(f"{demo_url}predict", data=b"x" * (21 * 1024 * 1024), headers={"X-Filename": "big.jpg"})
    assert too_large.status_code == 413 and "larger than 20 MB" in too_large.json()["error"]
    empty = requests.post(f"{demo_url}predict", data=b"", headers={"X-Filename": "empty.jpg"})
    assert empty.status_code == 422 and empty.json()["error"] == "empty file"
    blank = encode(Image.new("RGB", (320, 240), (30, 30, 30)), "PNG")
    no_face = requests.post(f"{demo_url}predict", data=blank, headers={"X-Filename": "blank.png"}).json()
    assert no_face["faces"] == [] and no_face["note"] == "no face detected" and no_face["image"].startswith("data:")
    assert requests.get(demo_url).status_code == 200
    # Nothing on the page comes from elsewhere: no CDN, no fonts or scripts of other hosts.
    assert "http" not in requests.get(demo_url).text.replace("http://127.0.0.1", "")
