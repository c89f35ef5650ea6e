"""The face-pipeline predict command: one line per face, formats, settings, annotation."""

import io
import json
import logging
import re
import sys

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from fake_faces import encode
from PIL import Image
from small_models import ANSWER_COLUMNS, PHOTO, SETTINGS

from face_pipeline.commands.console import cli


@pytest.mark.parametrize("output_format", ["table", "json", "csv"])
def test_command_line_prints_one_line_per_face(saved_models, tmp_path, output_format):
    (tmp_path / "photo.jpg").write_bytes(PHOTO)
    (tmp_path / "broken.jpg").write_bytes(b"")
    models = ["--model", f"gender={saved_models['gender']}", "--model", f"age={saved_models['age']}"]
    models += ["--settings", str(saved_models["settings"])]
    result = CliRunner().invoke(cli, ["predict", str(tmp_path), *models, "--format", output_format])
    assert result.exit_code == 0, result.output
    if output_format == "table":
        lines = result.output.strip().splitlines()
        assert lines[0].startswith("broken.jpg  error: empty file")
        assert lines[1].startswith("photo.jpg  face 0 [")
        assert re.search(r" age \d+\.\d \(\d+-\d+\)$", lines[1])  # the age and its range
    elif output_format == "json":
        records = json.loads(result.output)
        assert [r["status"] for r in records] == ["error", "ok"]
        assert records[1]["age_low"] <= records[1]["age_high"] and records[1]["gender_uncertain"] in (True, False)
    else:
        table = pd.read_csv(io.StringIO(result.output))
        assert table["status"].tolist() == ["error", "ok"]
        assert table.loc[1, ANSWER_COLUMNS].notna().all()


class StdoutLogs(logging.Handler):
    """Writes log records to whatever ``sys.stdout`` is at the time, as Kedro's rich handler does."""

    def emit(self, record):
        sys.stdout.write(self.format(record) + "\n")


def test_command_line_explains_a_missing_model(tmp_path):
    (tmp_path / "photo.jpg").write_bytes(PHOTO)
    result = CliRunner().invoke(cli, ["predict", str(tmp_path / "photo.jpg"), "--model", "gender=nope.keras"])
    assert result.exit_code != 0
    assert "No model at nope.keras" in result.output


def test_command_line_follows_the_saved_settings_unless_told(saved_models, tmp_path):
    (tmp_path / "photo.jpg").write_bytes(PHOTO)
    never = {**SETTINGS, "detection": {**SETTINGS["detection"], "mode": "never"}}
    (tmp_path / "never.json").write_text(json.dumps(never))
    models = ["--model", f"gender={saved_models['gender']}", "--model", f"age={saved_models['age']}"]

    def box(*options):
        result = CliRunner().invoke(cli, ["predict", str(tmp_path / "photo.jpg"), *models, *options, "--format", "csv"])
        assert result.exit_code == 0, result.output
        return pd.read_csv(io.StringIO(result.output)).loc[0, ["box_x", "box_y", "box_size"]].tolist()

    whole = [0, 0, 512]  # the astronaut photo is 512x512
    assert box("--settings", str(tmp_path / "never.json")) == whole
    assert box("--settings", str(tmp_path / "never.json"), "--detect", "auto") != whole
    assert box("--settings", str(saved_models["settings"])) != whole
    missing = CliRunner().invoke(cli, ["predict", str(tmp_path / "photo.jpg"), *models, "--settings", "none.json"])
    assert "No inference settings at none.json" in missing.output


def test_command_line_streams_csv_rows_chunk_by_chunk_with_one_header(saved_models, tmp_path):
    for index in range(130):  # more than one chunk of 128 photos
        (tmp_path / f"{index:03d}.png").write_bytes(encode(Image.new("L", (40, 40), index), "PNG"))
    models = ["--model", f"gender={saved_models['gender']}", "--model", f"age={saved_models['age']}"]
    options = ["--settings", str(saved_models["settings"]), "--detect", "never", "--format", "csv"]
    # Logging set up by the host program (here: to stdout, at INFO) must not mix into the rows.
    handler, root = StdoutLogs(), logging.getLogger()
    previous_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        result = CliRunner().invoke(cli, ["predict", str(tmp_path), *models, *options])
    finally:
        root.removeHandler(handler)
        root.setLevel(previous_level)
    assert result.exit_code == 0, result.output
    assert result.output.count("file,face,") == 1
    table = pd.read_csv(io.StringIO(result.output))
    assert len(table) == 130 and (table["status"] == "ok").all()


def test_command_line_annotates_every_readable_photo(saved_models, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "photo.jpg").write_bytes(PHOTO)
    (photos / "blank.png").write_bytes(encode(Image.new("RGB", (640, 480), (20, 20, 20)), "PNG"))
    (photos / "notes.jpg").write_bytes(b"this is text, not a photo")
    out = tmp_path / "out"
    models = ["--model", f"gender={saved_models['gender']}", "--model", f"age={saved_models['age']}"]
    options = [*models, "--settings", str(saved_models["settings"]), "--annotate", str(out)]
    result = CliRunner().invoke(cli, ["predict", str(photos), *options])
    assert result.exit_code == 0, result.output
    assert sorted(path.name for path in out.iterdir()) == ["blank.png", "photo.jpg"]
    with Image.open(out / "photo.jpg") as picture:
        assert picture.size == (512, 512) and picture.format == "JPEG"
    with Image.open(out / "blank.png") as picture:  # no face: copied, with a note
        assert picture.size == (640, 480) and np.asarray(picture.convert("L"))[:20, :80].max() > 200
    assert "notes.jpg: not annotated (not an image" in result.output  # named, and the others go on
