"""The team set-up without its servers: the local stack's bookkeeping, and which services a
configuration makes a run check (the servers themselves run in test_team.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import PROJECT_ROOT, copy_project

from face_pipeline.ops import stack
from face_pipeline.ops.processes import free_port

pytestmark = pytest.mark.integration


def test_starting_over_a_running_stack_is_refused_and_its_record_kept(tmp_path, capsys):
    record = tmp_path / stack.STATE_FILE
    record.write_text('{"pids": {"mlflow": 12345}}')
    with pytest.raises(SystemExit, match=r"a stack is already running in .*make stack-down"):
        stack.main(["up", "--dir", str(tmp_path), "--dask-workers", "0"])
    assert record.read_text() == '{"pids": {"mlflow": 12345}}'  # `make stack-down` can still stop it
    assert not (tmp_path / "seaweedfs").exists()  # nothing was started


def context_for(project: Path, env: str | None = None):
    from kedro.framework.session import KedroSession  # noqa: PLC0415
    from kedro.framework.startup import bootstrap_project  # noqa: PLC0415

    bootstrap_project(project)
    with KedroSession.create(project_path=project, env=env) as session:
        return session.load_context()


def test_only_the_remote_services_in_the_configuration_are_checked(tmp_path, monkeypatch):
    from face_pipeline.ops.services import ServiceUnreachable, configured_services  # noqa: PLC0415

    project = copy_project(tmp_path / "project")
    shutil.copytree(PROJECT_ROOT / "conf" / "team", project / "conf" / "team")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db")
    assert configured_services(context_for(project)) == []  # the single-machine default: nothing remote

    closed = free_port()  # nothing listens there once the probe socket is closed
    remote = {
        "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{closed}",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{closed}",
        "DASK_SCHEDULER_ADDRESS": f"tcp://127.0.0.1:{closed}",
    }
    for name, value in {**remote, "FACE_PIPELINE_BUCKET": "any"}.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ServiceUnreachable) as refused:
        context_for(project, env="team")  # the check runs as the context is created
    message = refused.value.message
    assert "\n" not in message
    for what, url in zip(["MLflow tracking server", "object store", "Dask scheduler"], remote.values(), strict=True):
        assert f"the {what} at {url} (Connection refused)" in message
