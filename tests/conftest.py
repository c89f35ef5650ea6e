"""Shared fixtures. Images are generated on the fly (see fake_faces.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from fake_faces import write_utkface_folder

PROJECT_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def utkface_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "faces"
    write_utkface_folder(folder, 24)
    return folder


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A throw-away copy of the Kedro project configuration to run pipelines in."""
    root = tmp_path / "project"
    root.mkdir()
    shutil.copy(PROJECT_ROOT / "pyproject.toml", root)
    shutil.copytree(PROJECT_ROOT / "conf" / "base", root / "conf" / "base")
    (root / "conf" / "local").mkdir()
    (root / "src").mkdir()  # the package itself is installed
    return root


def kedro(project: Path, *args: str, env: dict[str, str] | None = None, timeout: int = 600) -> str:
    """Run the ``kedro`` CLI in ``project``; fail with its output if it fails."""
    environment = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{project / 'mlflow.db'}",
        "COLUMNS": "200",
        **(env or {}),
    }
    kedro_cli = Path(sys.executable).with_name("kedro")
    result = subprocess.run(
        [str(kedro_cli), *args],
        cwd=project,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    return output
