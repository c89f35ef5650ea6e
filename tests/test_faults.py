"""Runs that survive faults: killed runs, full and read-only disks, an MLflow store that cannot be used.

Disks are small tmpfs mounts (skipped where mounting is not permitted). The long version, with
several kills during preprocessing and training and two runs at once, is bench/faults.py.
"""

import contextlib
import errno
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import copy_project
from fake_faces import write_utkface_folder
from kedro.io.core import DatasetError, Version

from face_pipeline.datasets.array_files import NumpyDataset, ShardedArrayDataset
from face_pipeline.hooks import TrainingInProgress, lock_folder
from face_pipeline.modelling.builders import build_model
from face_pipeline.ops.files import partial_name, written_atomically
from face_pipeline.ops.processes import free_port
from face_pipeline.ops.tracking import TrackingStoreUnavailable, check_tracking_store

pytestmark = pytest.mark.integration

ARRAYS = ("train_images", "val_images", "test_images")  # folders of shards


@contextlib.contextmanager
def tmpfs(folder: Path, size: str = "64k", read_only: bool = False):
    """A small RAM disk at ``folder``: a full disk, or a read-only one."""
    folder.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    command = ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)]
    mounted = subprocess.run(command, capture_output=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)


def test_an_array_that_does_not_fit_leaves_the_previous_one_and_says_what_to_do(tmp_path):
    with tmpfs(tmp_path / "disk") as disk:
        dataset = NumpyDataset(filepath=str(disk / "x.npy"), mmap_mode=None)
        dataset.save(np.arange(1000, dtype=np.int64))
        with pytest.raises(DatasetError) as failure:
            dataset.save(np.zeros(100_000, dtype=np.int64))
        assert "No space left on device" in str(failure.value)
        assert f"{disk / 'x.npy'} was not written; free space" in str(failure.value)
        assert sorted(os.listdir(disk)) == ["x.npy"]  # no half-written file left
        assert np.array_equal(dataset.load(), np.arange(1000))


def test_a_read_only_output_folder_is_named_with_what_to_do(tmp_path):
    expected = r"Read-only file system: .* was not written; the folder is on a read-only"
    with tmpfs(tmp_path / "disk", read_only=True) as disk, pytest.raises(DatasetError, match=expected):
        NumpyDataset(filepath=str(disk / "x.npy")).save(np.zeros(3))


def test_a_model_that_does_not_fit_leaves_no_version_to_load(tmp_path):
    from face_pipeline.datasets.keras_files import AtomicTensorFlowModelDataset  # noqa: PLC0415 - TensorFlow

    model = build_model("default_cnn", (32, 32, 1), "gender", stem_filters=4, filters=[4], batch_norm=False)
    with tmpfs(tmp_path / "disk", size="16k") as disk:
        dataset = AtomicTensorFlowModelDataset(filepath=str(disk / "m.keras"), version=Version(None, None))
        with pytest.raises(DatasetError, match="No space left on device"):
            dataset.save(model)
        assert not list(disk.glob("m.keras/*/m.keras"))
        assert not list(disk.glob("m.keras/*/*.partial-*"))
        assert not AtomicTensorFlowModelDataset(filepath=str(disk / "m.keras"), version=Version(None, None)).exists()


def test_what_a_killed_writer_left_is_removed_by_the_next_save(tmp_path):
    path = tmp_path / "x.npy"
    command = [sys.executable, "-c", "import os; print(os.getpid())"]
    dead = subprocess.run(command, capture_output=True, text=True, check=True)
    stale = Path(f"{path}.partial-{dead.stdout.strip()}")
    stale.write_bytes(b"\x93NUMPY half")
    NumpyDataset(filepath=str(path)).save(np.ones(4))
    assert not stale.exists()
    assert not Path(partial_name(str(path))).exists()
    assert np.array_equal(NumpyDataset(filepath=str(path)).load(), np.ones(4))


def test_a_failure_while_writing_removes_the_partial_file(tmp_path):
    import fsspec  # noqa: PLC0415

    fs = fsspec.filesystem("file")
    with pytest.raises(OSError, match="was not written"), written_atomically(fs, str(tmp_path / "x.bin")) as partial:
        Path(partial).write_bytes(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")
    assert os.listdir(tmp_path) == []


def test_an_unreachable_tracking_server_is_named_without_its_credentials(tmp_path):
    uri = f"http://someone:secret@127.0.0.1:{free_port()}"
    with pytest.raises(TrackingStoreUnavailable) as failure:
        check_tracking_store(uri, tmp_path, timeout=2)
    message = str(failure.value)
    assert f"MLflow tracking server http://127.0.0.1:{uri.rsplit(':', 1)[1]} is not reachable" in message
    assert "secret" not in message and "MLFLOW_TRACKING_URI=sqlite:///mlflow.db" in message


def test_a_locked_or_foreign_mlflow_database_is_named(tmp_path):
    check_tracking_store("sqlite:///mlflow.db", tmp_path)  # missing: MLflow creates it
    database = tmp_path / "mlflow.db"
    holder = sqlite3.connect(database, isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(TrackingStoreUnavailable, match=f"MLflow database {database} cannot be written .*locked"):
            check_tracking_store("sqlite:///mlflow.db", tmp_path, timeout=0.5)
    finally:
        holder.rollback()
        holder.close()
    check_tracking_store("sqlite:///mlflow.db", tmp_path)
    (tmp_path / "notes.db").write_text("my notes")
    with pytest.raises(TrackingStoreUnavailable, match=r"notes\.db is not an SQLite database"):
        check_tracking_store("sqlite:///notes.db", tmp_path)


def test_a_read_only_mlflow_folder_is_named(tmp_path):
    with tmpfs(tmp_path / "store", read_only=True) as store, pytest.raises(TrackingStoreUnavailable) as failure:
        check_tracking_store(f"sqlite:///{store}/mlflow.db", tmp_path)
    assert f"{store} (the folder of the MLflow database) is not writable: Read-only file system" in str(failure.value)


def kedro_process(project: Path, *args: str, env: dict[str, str]) -> subprocess.Popen:
    environment = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{project / 'mlflow.db'}", **env}
    return subprocess.Popen(
        [str(Path(sys.executable).with_name("kedro")), *args],
        cwd=project,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def kill_when(process: subprocess.Popen, marker: str) -> str:
    """SIGKILL ``process`` (its whole group) as soon as its log shows ``marker``; its log so far."""
    lines = []
    for line in process.stdout:
        lines.append(line)
        if marker in line:
            os.killpg(process.pid, signal.SIGKILL)
            break
    process.wait(timeout=60)
    return "".join(lines)


def test_a_run_killed_while_saving_arrays_leaves_none_half_written_and_reruns_to_identical_arrays(
    trained_project, tmp_path
):
    project = copy_project(tmp_path / "project")
    faces = tmp_path / "faces"
    write_utkface_folder(faces, 48, size=64)  # the same faces as trained_project's
    env = {"FACE_DATA_DIR": str(faces)}
    killed = kedro_process(project, "run", "--pipelines", "preprocessing", env=env)
    log = kill_when(killed, "Saving data to train_images")
    assert killed.returncode == -signal.SIGKILL, log[-3000:]
    arrays = project / "data" / "05_model_input"
    for name in ARRAYS:  # each split there is complete, or refused as unfinished
        dataset = ShardedArrayDataset(filepath=str(arrays / name))
        if dataset.exists():
            np.asarray(dataset.load())
        elif (arrays / name).exists():
            with pytest.raises(DatasetError, match="did not finish"):
                dataset.load()
    rerun = kedro_process(project, "run", "--pipelines", "preprocessing", env=env)
    output, _ = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, output[-3000:]
    for name in ARRAYS:
        expected = trained_project / "data" / "05_model_input" / name
        files = sorted(path.name for path in expected.iterdir())
        assert sorted(path.name for path in (arrays / name).iterdir()) == files, name
        for file in files:
            assert (arrays / name / file).read_bytes() == (expected / file).read_bytes(), (name, file)
    assert not list(arrays.rglob("*.partial*"))


def test_a_run_against_an_unreachable_tracking_server_stops_at_once_with_one_message(project, utkface_folder):
    uri = f"http://127.0.0.1:{free_port()}"
    env = {"FACE_DATA_DIR": str(utkface_folder), "MLFLOW_TRACKING_URI": uri}
    run = kedro_process(project, "run", "--pipelines", "ingestion", env=env)
    output, _ = run.communicate(timeout=120)  # MLflow alone retries for about four minutes
    assert run.returncode != 0
    [message] = [line for line in output.splitlines() if "Cannot reach" in line]
    assert f"the MLflow tracking server at {uri} (Connection refused)" in message
    assert not (project / "data" / "03_primary" / "face_manifest.parquet").exists()


def test_two_runs_at_once_on_a_new_store_both_finish_and_leave_it_intact(project, utkface_folder):
    env = {"FACE_DATA_DIR": str(utkface_folder)}
    runs = [kedro_process(project, "run", "--pipelines", "ingestion", env=env) for _ in range(2)]
    outputs = [run.communicate(timeout=600)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs[0][-2000:] + outputs[1][-2000:]
    with contextlib.closing(sqlite3.connect(project / "mlflow.db")) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert connection.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 2


def test_a_second_training_in_the_project_is_refused_until_the_first_ends(tmp_path):
    first = lock_folder(tmp_path / "data" / "06_models")
    with pytest.raises(TrainingInProgress, match="another `kedro run` is training in this project"):
        lock_folder(tmp_path / "data" / "06_models")
    os.close(first)  # the first run ends (a SIGKILL closes it too)
    os.close(lock_folder(tmp_path / "data" / "06_models"))
