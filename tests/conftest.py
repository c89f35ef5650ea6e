"""Shared fixtures. Images are generated on the fly (see fake_faces.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from fake_faces import write_utkface_folder

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# The headings a model card must have (tests of the card node and of a whole run).
CARD_SECTIONS = (
    "## Model details",
    "## Training decisions",
    "## Data",
    "## Test results",
    "## By age band, gender and race",
    "## Calibration and age ranges",
    "## `--mode accurate`",
    "## Another population",
    "## Limitations",
    "## Intended uses",
    "## Out of scope",
)


@pytest.fixture
def utkface_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "faces"
    write_utkface_folder(folder, 24)
    return folder


def copy_project(root: Path) -> Path:
    """A throw-away copy of the Kedro project's configuration and notebooks (the package is installed)."""
    root.mkdir(parents=True)
    shutil.copy(PROJECT_ROOT / "pyproject.toml", root)
    shutil.copy(PROJECT_ROOT / ".telemetry", root)
    shutil.copytree(PROJECT_ROOT / "conf" / "base", root / "conf" / "base")
    shutil.copytree(PROJECT_ROOT / "notebooks", root / "notebooks")
    (root / "conf" / "local").mkdir()
    (root / "src").mkdir()
    return root


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return copy_project(tmp_path / "project")


def use_small_networks(project: Path, epochs: int = 2) -> None:
    """Tiny models for speed, set as a user would: conf/local changes only the keys it names.

    No time budget: timing a few steps first would add ~14 s per model (the budget's planning is
    tested in tests/pipelines/training).
    """
    for task in ("gender", "age"):
        training = {"epochs": epochs, "time_budget_minutes": None}
        small = {"model": {"default_cnn": {"stem_filters": 8, "filters": [8, 16]}}, "training": training}
        (project / f"conf/local/parameters_train_{task}.yml").write_text(yaml.safe_dump({task: small}))


@pytest.fixture(scope="session")
def trained_project(tmp_path_factory) -> Path:
    """A project after a whole `kedro run` (the CLI, as a user runs it) on 48 generated faces with tiny
    networks; shared by every test that needs trained models or a tracked run (~40 s, once)."""
    root = copy_project(tmp_path_factory.mktemp("trained") / "project")
    faces = root.parent / "faces"
    write_utkface_folder(faces, 48, size=64)
    use_small_networks(root, epochs=1)
    output = kedro(root, "run", env={"FACE_DATA_DIR": str(faces)})
    (root / "kedro_run.log").write_text(output)  # what `kedro run` printed, for the tests that read it
    return root


def kedro(project: Path, *args: str, env: dict[str, str] | None = None, timeout: int = 600) -> str:
    """Run the ``kedro`` CLI in ``project``; fail with its output if it fails."""
    environment = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{project / 'mlflow.db'}", **(env or {})}
    environment.pop("COLUMNS", None)  # the log's width is the project's own, as in CI
    if "FACE_DATA_DIR" not in (env or {}):  # `make test` exports the real folder; a test names its own
        environment.pop("FACE_DATA_DIR", None)
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


def run_in_process(
    project: Path, pipeline: str, monkeypatch, env: dict[str, str] | None = None, params: dict | None = None
) -> None:
    """``kedro run --pipelines=<pipeline>`` in this process (a KedroSession): no CLI start-up, for
    tests about what a pipeline writes rather than about the command."""
    from kedro.framework.session import KedroSession  # noqa: PLC0415
    from kedro.framework.startup import bootstrap_project  # noqa: PLC0415

    for name, value in {"MLFLOW_TRACKING_URI": f"sqlite:///{project / 'mlflow.db'}", **(env or {})}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(project)
    import mlflow  # noqa: PLC0415

    bootstrap_project(project)
    try:
        with KedroSession.create(project_path=project, runtime_params=params) as session:
            session.run(pipeline_names=[pipeline])
    finally:
        while mlflow.active_run() is not None:  # a run left open would take the next session's params
            mlflow.end_run()


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory) -> dict[str, Path]:
    """Both small networks saved as training saves them (``small_models``; imported here only, as
    it starts TensorFlow and bench scripts import this module for its project helpers)."""
    from small_models import save_small_models  # noqa: PLC0415

    return save_small_models(tmp_path_factory.mktemp("models"))
