"""The team set-up end to end on real servers: PostgreSQL, SeaweedFS (S3), an MLflow server, Dask.

Everything binds 127.0.0.1. Where ``unshare --net`` works (root on Linux), the tests run again
inside a private network namespace whose only interface is loopback, so nothing can leave it.

Where PostgreSQL or the team extra is missing, this module is skipped with the reason and how to
install them, so that ``make test`` runs everywhere; with ``FACE_PIPELINE_REQUIRE_TEAM=1``
(``.ci/run`` sets it) what is missing fails the run instead. What needs no server (which services
a configuration makes a run check) is tested in test_stack.py.
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import PROJECT_ROOT, copy_project, kedro, use_small_networks
from fake_faces import write_utkface_folder

from face_pipeline.datasets.array_files import ShardedArrayDataset
from face_pipeline.ops import stack as team_stack
from face_pipeline.ops.processes import stop_group

REQUIRED = "FACE_PIPELINE_REQUIRE_TEAM"
TEAM_EXTRA = "the team extra is not installed: pip install -e '.[team]' (make install does) to run the team tests"
INSIDE_NAMESPACE = "FACE_PIPELINE_TEST_NETNS"
RAW = f"{team_stack.BUCKET}/data/01_raw/utkface"
SECOND_BUCKET = "face-pipeline-second"


def team_module(name: str):
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


s3fs, distributed, psycopg = (team_module(name) for name in ("s3fs", "distributed", "psycopg"))


def missing_here() -> str | None:
    """What this machine lacks for these tests, and how to get it; None when nothing is missing."""
    if None in (s3fs, distributed, psycopg):
        return TEAM_EXTRA
    missing = team_stack.postgres_missing()
    if missing:
        return f"{missing}: apt-get install postgresql (or run bash .ci/run) to run the team tests"
    if not (shutil.which("weed") or Path(sys.executable).with_name("weed").exists()):
        return f"SeaweedFS (weed) not found; {TEAM_EXTRA}"
    return None


# Skipped with one line naming what is missing (a module-wide mark: the tests carry no marks of
# their own, so the summary folds them into one line), or failed where they must run (CI).
MISSING = missing_here()
if MISSING and os.environ.get(REQUIRED) == "1":
    pytest.fail(f"{MISSING} ({REQUIRED}=1: the team tests must run here)", pytrace=False)
pytestmark = [pytest.mark.team, pytest.mark.integration, *([pytest.mark.skip(reason=MISSING)] if MISSING else [])]


def private_network_available() -> bool:
    if os.environ.get(INSIDE_NAMESPACE) or not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "--net", "sh", "-c", "ip link set lo up"], capture_output=True, check=False)
    return probe.returncode == 0


PRIVATE_NETWORK = not MISSING and private_network_available()


def test_in_private_network_namespace():
    if not PRIVATE_NETWORK:
        pytest.skip("unshare --net is not available: the tests below run as they are")
    script = 'ip link set lo up && exec "$0" -m pytest "$1" -x -q -p no:cacheprovider -m team -k "not private_network"'
    result = subprocess.run(
        ["unshare", "--net", "sh", "-c", script, sys.executable, __file__],
        env={**os.environ, INSIDE_NAMESPACE: "1"},
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-8000:]
    summary = output.strip().splitlines()[-1]
    assert " passed" in summary and "skipped" not in summary, output[-3000:]


@pytest.fixture(scope="module")
def on_loopback() -> None:
    """Where the namespace test ran the tests that start the stack, they are not run again here."""
    if PRIVATE_NETWORK:
        pytest.skip("ran inside a private network namespace instead")


@pytest.fixture(scope="module")
def stack(tmp_path_factory, on_loopback):
    folder = tmp_path_factory.mktemp("stack")
    started = team_stack.up(folder, dask_workers=0)
    storage = storage_for(started.env)
    storage.mkdir(SECOND_BUCKET)
    yield started
    pids = team_stack.Stack.load(folder).pids
    team_stack.down(folder)
    assert not [name for name, pid in pids.items() if alive(pid)], "processes left running"


@pytest.fixture(scope="module")
def dask_cluster():
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        yield cluster, client


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie has exited
        return stat.read().split()[2] != "Z"


def storage_for(env: dict[str, str]):
    return s3fs.S3FileSystem(
        key=env["AWS_ACCESS_KEY_ID"],
        secret=env["AWS_SECRET_ACCESS_KEY"],
        client_kwargs={"endpoint_url": env["AWS_ENDPOINT_URL"]},
    )


def team_project(root: Path) -> Path:
    """The project with conf/team, tiny networks and small decoding chunks (so both workers get some)."""
    project = copy_project(root)
    shutil.copytree(PROJECT_ROOT / "conf" / "team", project / "conf" / "team")
    use_small_networks(project)
    for settings in (project / "conf" / "local").glob("parameters_*.yml"):
        shutil.move(settings, project / "conf" / "team" / settings.name)
    small_chunks = {"preprocessing": {"chunk_size": 8}}
    (project / "conf/team/parameters_chunks.yml").write_text(yaml.safe_dump(small_chunks))
    return project


def run_kedro(project: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, **env}
    environment.pop("COLUMNS", None)
    if "FACE_DATA_DIR" not in env:  # `make test` exports the real folder; these runs read the bucket's
        environment.pop("FACE_DATA_DIR", None)
    cli = Path(sys.executable).with_name("kedro")
    return subprocess.run(
        [str(cli), "run", *args], cwd=project, env=environment, capture_output=True, text=True, timeout=600, check=False
    )


def load_sharded(env: dict[str, str], path: str) -> np.ndarray:
    """The sharded array in the bucket at ``path``, read as the team catalog reads it."""
    credentials = {
        "key": env["AWS_ACCESS_KEY_ID"],
        "secret": env["AWS_SECRET_ACCESS_KEY"],
        "client_kwargs": {"endpoint_url": env["AWS_ENDPOINT_URL"]},
    }
    return np.asarray(ShardedArrayDataset(filepath=f"s3://{path}", credentials=credentials).load())


def query(backend_uri: str, sql: str, *args) -> list[tuple]:
    with psycopg.connect(backend_uri.replace("postgresql+psycopg://", "postgresql://")) as connection:
        return connection.execute(sql, args).fetchall()


def decoded_chunks_per_worker(client) -> dict[str, int]:
    """How many image chunks each Dask worker decoded (its task log keeps the finished tasks)."""

    def count(dask_worker) -> int:
        return sum(
            1 for entry in dask_worker.state.log if str(entry[0]).startswith("_decode_chunk-") and entry[2] == "memory"
        )

    return client.run(count)


def test_anonymous_requests_are_refused(stack):
    endpoint = stack.env["AWS_ENDPOINT_URL"]
    with pytest.raises(urllib.error.HTTPError) as denied:
        urllib.request.urlopen(f"{endpoint}/{team_stack.BUCKET}/", timeout=5)
    assert denied.value.code == 403
    anonymous = s3fs.S3FileSystem(anon=True, client_kwargs={"endpoint_url": endpoint})
    with pytest.raises(PermissionError):
        anonymous.ls(team_stack.BUCKET)


def test_team_run_on_s3_dask_and_the_tracking_server(stack, dask_cluster, tmp_path, monkeypatch):
    cluster, client = dask_cluster
    storage = storage_for(stack.env)
    faces = tmp_path / "faces"
    write_utkface_folder(faces, 48, size=64)
    storage.put(f"{faces}/", f"{RAW}/", recursive=True)
    project = team_project(tmp_path / "team")
    local = copy_project(tmp_path / "local")

    team_env = {**stack.env, "DASK_SCHEDULER_ADDRESS": cluster.scheduler_address}
    # Meanwhile a colleague runs ingestion into another bucket against the same server.
    other_env = {**stack.env, "FACE_PIPELINE_BUCKET": SECOND_BUCKET, "FACE_DATA_DIR": f"s3://{RAW}"}
    with ThreadPoolExecutor(3) as runs:
        training = runs.submit(run_kedro, project, team_env, "--env=team", "--pipelines=train_gender")
        colleague = runs.submit(run_kedro, project, other_env, "--env=team", "--pipelines=ingestion")
        reference = runs.submit(kedro, local, "run", "--pipelines=preprocessing", env={"FACE_DATA_DIR": str(faces)})
        results = {"training": training.result(), "colleague": colleague.result()}
        reference.result()
    for name, result in results.items():
        assert result.returncode == 0, f"{name}: {(result.stdout + result.stderr)[-6000:]}"

    # Both runs landed on the server, finished.
    import mlflow  # noqa: PLC0415 - the tracking client only for these checks

    tracking = mlflow.MlflowClient(stack.env["MLFLOW_TRACKING_URI"])
    experiment = tracking.get_experiment_by_name("face_pipeline")
    runs_by_pipeline = {
        run.data.tags["pipeline_names"]: run for run in tracking.search_runs([experiment.experiment_id])
    }
    assert set(runs_by_pipeline) == {"['train_gender']", "['ingestion']"}
    assert {run.info.status for run in runs_by_pipeline.values()} == {"FINISHED"}
    run_id = runs_by_pipeline["['train_gender']"].info.run_id

    # Params, metric history and test metrics are rows in PostgreSQL.
    backend = stack.env["MLFLOW_BACKEND_STORE_URI"]
    params = dict(query(backend, "SELECT key, value FROM params WHERE run_uuid = %s", run_id))
    assert params["gender.training.epochs"] == "2"
    assert params["preprocessing.scheduler"] == cluster.scheduler_address
    steps = query(
        backend, "SELECT step FROM metrics WHERE run_uuid = %s AND key = 'gender.val_loss' ORDER BY step", run_id
    )
    assert [step for (step,) in steps] == [1, 2]
    latest = dict(query(backend, "SELECT key, value FROM latest_metrics WHERE run_uuid = %s", run_id))
    assert 0 <= latest["gender.test_accuracy"] <= 1

    # The model and reports are in the object store, through the server and directly.
    models = {model.name: model for model in tracking.search_logged_models(experiment_ids=[experiment.experiment_id])}
    assert set(models) == {"gender_model", "gender_head"}  # the network and its embedding head
    logged = models["gender_model"]
    assert logged.source_run_id == run_id
    artifacts = team_stack.ARTIFACTS.removeprefix("s3://")
    assert storage.exists(f"{artifacts}/{experiment.experiment_id}/models/{logged.model_id}/artifacts/data/model.keras")
    assert storage.exists(f"{artifacts}/{experiment.experiment_id}/{run_id}/artifacts/gender_metrics.json")
    # ... and clients without bucket credentials fetch it through the server.
    for name in [name for name in os.environ if name.startswith("AWS_")]:
        monkeypatch.delenv(name)
    assert logged.artifact_location.startswith("mlflow-artifacts:")
    mlmodel = mlflow.artifacts.download_artifacts(
        artifact_uri=f"{logged.artifact_location}/MLmodel", tracking_uri=stack.env["MLFLOW_TRACKING_URI"]
    )
    assert "keras" in yaml.safe_load(Path(mlmodel).read_text())["flavors"]
    data = f"{team_stack.BUCKET}/data"
    assert storage.glob(f"{data}/06_models/gender_model.keras/*/gender_model.keras")
    assert storage.exists(f"{data}/07_model_output/gender_test_predictions.parquet")
    assert storage.exists(f"{SECOND_BUCKET}/data/03_primary/face_manifest.parquet")

    # The arrays in the bucket are those of a local run on the same images.
    expected_chunks = 0
    for split in ("train", "val", "test"):
        remote = load_sharded(stack.env, f"{data}/05_model_input/{split}_images")
        local_images = ShardedArrayDataset(filepath=str(local / f"data/05_model_input/{split}_images")).load()
        np.testing.assert_array_equal(remote, np.asarray(local_images))
        with storage.open(f"{data}/05_model_input/{split}_labels.parquet", "rb") as stream:
            labels = pd.read_parquet(stream)
        pd.testing.assert_frame_equal(labels, pd.read_parquet(local / f"data/05_model_input/{split}_labels.parquet"))
        expected_chunks += -(-len(labels) // 8)

    # Both Dask workers decoded images; neither loaded MLflow.
    chunks = decoded_chunks_per_worker(client)
    assert len(chunks) == 2 and all(count > 0 for count in chunks.values()), chunks
    assert sum(chunks.values()) == expected_chunks  # every chunk of 8 images of every split
    assert not any(client.run(lambda: "mlflow" in sys.modules).values())

    # No secret in the logs, params or tags.
    secret, key_id = stack.env["AWS_SECRET_ACCESS_KEY"], stack.env["AWS_ACCESS_KEY_ID"]
    for name, result in results.items():
        assert secret not in result.stdout + result.stderr, name
        assert key_id not in result.stdout + result.stderr, name
    recorded = query(backend, "SELECT value FROM params UNION ALL SELECT value FROM tags")
    assert not [value for (value,) in recorded if secret in value or key_id in value]


def test_a_stopped_server_or_store_is_named_in_one_line_and_a_rerun_completes(stack, tmp_path):
    project = team_project(tmp_path / "team")
    env = {**stack.env, "FACE_PIPELINE_BUCKET": SECOND_BUCKET, "FACE_DATA_DIR": f"s3://{RAW}"}
    folder = Path(stack.folder)
    tracking_uri, endpoint = stack.env["MLFLOW_TRACKING_URI"], stack.env["AWS_ENDPOINT_URL"]

    stop_group(stack.pids["mlflow"])
    stop_group(stack.pids["seaweedfs"])
    failed = run_kedro(project, env, "--env=team", "--pipelines=ingestion")
    assert failed.returncode == 1
    [error] = [line for line in failed.stderr.splitlines() if line.startswith("Error:")]
    assert f"MLflow tracking server at {tracking_uri}" in error
    assert f"object store at {endpoint}" in error
    assert "Traceback" not in failed.stdout + failed.stderr

    port = int(tracking_uri.rsplit(":", 1)[1])
    storage_env = {name: value for name, value in stack.env.items() if name.startswith(("AWS_", "MLFLOW_S3"))}
    backend = stack.env["MLFLOW_BACKEND_STORE_URI"]
    _, stack.pids["mlflow"] = team_stack.start_mlflow(folder, backend, team_stack.ARTIFACTS, storage_env, port)
    s3_port = int(endpoint.rsplit(":", 1)[1])
    key, secret = stack.env["AWS_ACCESS_KEY_ID"], stack.env["AWS_SECRET_ACCESS_KEY"]
    _, stack.pids["seaweedfs"] = team_stack.start_seaweedfs(folder, key, secret, s3_port)
    stack.save()  # so that the fixture stops the restarted servers
    rerun = run_kedro(project, env, "--env=team", "--pipelines=ingestion")
    assert rerun.returncode == 0, (rerun.stdout + rerun.stderr)[-6000:]
    assert "Pipeline execution completed successfully" in rerun.stdout + rerun.stderr
