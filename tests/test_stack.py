"""The local team stack's bookkeeping (the stack itself runs in test_team.py)."""

from __future__ import annotations

import pytest

from face_pipeline import stack


def test_starting_over_a_running_stack_is_refused_and_its_record_kept(tmp_path, capsys):
    record = tmp_path / stack.STATE_FILE
    record.write_text('{"pids": {"mlflow": 12345}}')
    with pytest.raises(SystemExit, match=r"a stack is already running in .*make stack-down"):
        stack.main(["up", "--dir", str(tmp_path), "--dask-workers", "0"])
    assert record.read_text() == '{"pids": {"mlflow": 12345}}'  # `make stack-down` can still stop it
    assert not (tmp_path / "seaweedfs").exists()  # nothing was started
