"""Training on several workers with MultiWorkerMirroredStrategy, on this machine (127.0.0.1).

TensorFlow's gRPC server listens on every interface whatever TF_CONFIG says, so the workers run
inside ``unshare --net`` (loopback only) where the machine allows it, as ``face-pipeline train
--workers`` runs them.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import mlflow
import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from conftest import copy_project, run_in_process
from distributed_worker import TRAINING
from fake_faces import write_utkface_folder

from face_pipeline.ops.distribute import (
    Cluster,
    cluster_from_environment,
    keras_needs_patch,
    local_tf_configs,
    loopback_namespace,
    loopback_only,
    run_local_workers,
)
from face_pipeline.pipelines.training.data import make_dataset

pytestmark = pytest.mark.integration

sys.path.insert(0, str(Path(__file__).parent))

HERE = Path(__file__).parent


CONSOLE = "from face_pipeline.commands.console import main; main()"


def run_workers(workers: int, command: list[str], cwd: Path, env: dict[str, str] | None = None, timeout=300):
    launcher = [sys.executable, "-m", "face_pipeline.ops.distribute", str(workers), *command]
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    return subprocess.run(
        loopback_only(launcher), cwd=cwd, env=environment, capture_output=True, text=True, timeout=timeout, check=False
    )


# A worker that starts its strategy (and so its gRPC server), checks that the cluster works with
# one all-reduce, says where it listens and what interfaces it has, then waits to be probed.
LISTENING_WORKER = """
import json, os, sys, time
import tensorflow as tf
strategy = tf.distribute.MultiWorkerMirroredStrategy()
total = strategy.reduce("SUM", strategy.run(lambda: tf.constant(1.0)), axis=None)
config = json.loads(os.environ["TF_CONFIG"])
index = config["task"]["index"]
port = int(config["cluster"]["worker"][index].rsplit(":", 1)[1])
with open("/proc/self/net/dev") as lines:
    interfaces = [line.split(":")[0].strip() for line in list(lines)[2:]]
out = sys.argv[1]
with open(f"{out}/{index}.partial", "w") as file:
    json.dump({"port": port, "interfaces": interfaces, "total": float(total)}, file)
os.rename(f"{out}/{index}.partial", f"{out}/{index}.json")
deadline = time.monotonic() + 60
while not os.path.exists(f"{out}/probed") and time.monotonic() < deadline:
    time.sleep(0.1)
"""


def this_machine_address() -> str | None:
    """This machine's address on its network (not loopback); None without one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 9))  # no packet is sent: this picks the outgoing interface
        except OSError:
            return None
        address = probe.getsockname()[0]
    return None if address.startswith("127.") or address == "0.0.0.0" else address


def reachable(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=2):
            return True
    except OSError:
        return False


def weights(folder: Path) -> list[np.ndarray]:
    with np.load(folder / "weights.npz") as saved:
        return [saved[name] for name in saved.files]


def test_cluster_is_read_from_tf_config():
    assert cluster_from_environment({}) == Cluster(1, 0)
    configs = [json.loads(config) for config in local_tf_configs(2)]
    assert [config["task"]["index"] for config in configs] == [0, 1]
    assert all(address.startswith("127.0.0.1:") for address in configs[0]["cluster"]["worker"])
    second = cluster_from_environment({"TF_CONFIG": json.dumps(configs[1])})
    assert second == Cluster(2, 1) and not second.is_chief
    # A TFJob's layout: a chief task and workers numbered after it.
    tfjob = {"cluster": {"chief": ["a:1"], "worker": ["b:1", "c:1"]}, "task": {"type": "worker", "index": 0}}
    assert cluster_from_environment({"TF_CONFIG": json.dumps(tfjob)}) == Cluster(3, 1)
    with pytest.raises(ValueError, match="TF_CONFIG is not a cluster description"):
        cluster_from_environment({"TF_CONFIG": "{}"})


@pytest.mark.parametrize("bind_all", [False, True], ids=["loopback", "bind_all"])
def test_local_workers_are_reachable_on_loopback_only_unless_bind_all(tmp_path, bind_all):
    address = this_machine_address()
    if not bind_all and loopback_namespace() is None:
        pytest.skip("no network namespace can be made here (unshare --net)")
    if bind_all and address is None:
        pytest.skip("this machine has no address besides loopback to reach the workers on")
    command = [sys.executable, "-c", LISTENING_WORKER, str(tmp_path)]
    with ThreadPoolExecutor(1) as pool:
        job = pool.submit(run_local_workers, 2, command, {"TF_CPP_MIN_LOG_LEVEL": "2"}, bind_all=bind_all)
        deadline = time.monotonic() + 90
        while not all((tmp_path / f"{index}.json").exists() for index in (0, 1)):
            assert not job.done() and time.monotonic() < deadline, "the workers did not start"
            time.sleep(0.2)
        workers = [json.loads((tmp_path / f"{index}.json").read_text()) for index in (0, 1)]
        seen = [reachable(address, worker["port"]) for worker in workers] if address else []
        (tmp_path / "probed").touch()
        assert job.result(timeout=60) == 0
    assert [worker["total"] for worker in workers] == [2.0, 2.0]  # the two workers did reach each other
    if bind_all:
        assert all(seen)  # TensorFlow's servers listen on every interface, as on a cluster
        assert all(len(worker["interfaces"]) > 1 for worker in workers)
    else:
        assert not any(seen)
        assert [worker["interfaces"] for worker in workers] == [["lo"], ["lo"]]


def test_face_pipeline_train_keeps_local_workers_on_loopback_unless_bind_all(monkeypatch):
    from face_pipeline.commands import train as train_command  # noqa: PLC0415

    calls = []
    monkeypatch.setattr(train_command, "run_local_workers", lambda *args, **kwargs: calls.append(kwargs) or 0)
    monkeypatch.delenv("TF_CONFIG", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    for options in (["--workers=2"], ["--workers=2", "--bind-all"]):
        assert CliRunner().invoke(train_command.train, ["--task=gender", *options]).exit_code == 0
    assert calls == [{"bind_all": False}, {"bind_all": True}]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://user:secret@mlflow.example.com")
    refused = CliRunner().invoke(train_command.train, ["--workers=2"])
    assert refused.exit_code != 0 and "--bind-all" in refused.output and "secret" not in refused.output
    assert len(calls) == 2


def test_workers_read_distinct_rows_that_together_make_one_process_batches():
    images = np.arange(40, dtype=np.uint8).reshape(40, 1, 1, 1)
    targets = np.arange(40, dtype=np.float32)

    def batches(shard):
        dataset = make_dataset(images, targets, 8, shuffle=True, seed=5, shard=shard)
        return [sorted(y.numpy().astype(int)) for _, y in dataset]

    alone, first, second = batches((0, 1)), batches((0, 2)), batches((1, 2))
    assert len(first) == len(second) == len(alone) == 5  # every worker takes the same number of steps
    for whole, part, other in zip(alone, first, second, strict=True):
        assert not set(part) & set(other)
        assert sorted(part + other) == whole


def test_two_workers_train_the_same_network_as_one_process(tmp_path):
    result = run_workers(2, [sys.executable, str(HERE / "distributed_worker.py"), str(tmp_path / "two")], HERE)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    alone = subprocess.run(
        [sys.executable, str(HERE / "distributed_worker.py"), str(tmp_path / "one")],
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert alone.returncode == 0
    chief, worker, single = weights(tmp_path / "two/0"), weights(tmp_path / "two/1"), weights(tmp_path / "one/0")
    for a, b, c in zip(chief, worker, single, strict=True):
        np.testing.assert_array_equal(a, b)  # synchronous: the workers end identical
        np.testing.assert_allclose(a, c, rtol=1e-5, atol=1e-6)  # and as one process with the same global batch
    run = json.loads((tmp_path / "two/0/run.json").read_text())
    assert run["decisions"]["distribution_strategy"] == "MultiWorkerMirroredStrategy"
    assert run["decisions"]["workers"] == 2
    losses = run["history"]["loss"]
    assert len(losses) == TRAINING["epochs"] and losses[-1] < losses[0]  # it did train, and learnt


@pytest.mark.slow  # two 2-worker trainings, ~1-2 minutes; in `make test-all`
def test_a_killed_worker_stops_the_job_and_a_restart_resumes_from_the_last_epoch(tmp_path):
    script = [sys.executable, str(HERE / "distributed_worker.py"), str(tmp_path / "run"), str(tmp_path / "backup")]
    epochs = TRAINING["epochs"] + 2
    killed = run_workers(2, [*script, "1:3"], HERE, env={"EPOCHS": str(epochs)})
    assert killed.returncode != 0  # worker 1 killed in epoch 3; the launcher stopped worker 0
    assert not (tmp_path / "run").exists()
    resumed = run_workers(2, script, HERE, env={"EPOCHS": str(epochs)})
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    for worker in ("0", "1"):
        run = json.loads((tmp_path / "run" / worker / "run.json").read_text())
        assert len(run["history"]["loss"]) == epochs - 2  # epochs 3 and 4 again, 1-2 restored
        assert run["decisions"]["resumed_from_backup"] is True
    np.testing.assert_array_equal(weights(tmp_path / "run/0")[0], weights(tmp_path / "run/1")[0])


@pytest.mark.skipif(not keras_needs_patch(), reason="only the Keras versions the patch is for")
def test_keras_without_the_patch_still_fails_under_multi_worker(tmp_path):
    """When this fails, Keras fixed keras-team/keras#20585: remove patch_keras_for_multi_worker
    for that version (distribute.KERAS_VERSIONS_NEEDING_PATCH)."""
    command = [sys.executable, str(HERE / "distributed_worker.py"), str(tmp_path)]
    result = run_workers(2, command, HERE, env={"FACE_PIPELINE_KERAS_PATCH": "0"})
    assert result.returncode != 0
    assert "PerReplica" in result.stderr or "Invalid reduction dimension" in result.stderr, result.stderr[-3000:]


def test_face_pipeline_train_on_two_workers_tracks_one_run(tmp_path, monkeypatch):
    project = copy_project(tmp_path / "project")
    faces = tmp_path / "faces"
    write_utkface_folder(faces, 48, size=64)
    small = {
        "model": {"default_cnn": {"stem_filters": 4, "filters": [8], "downsample": 1}, "mirror_average": False},
        "training": {"epochs": 1, "time_budget_minutes": None, "batch_norm_recalibration": 0},
    }
    (project / "conf/local/parameters_train_gender.yml").write_text(yaml.safe_dump({"gender": small}))
    run_in_process(project, "embeddings", monkeypatch, env={"FACE_DATA_DIR": str(faces)})

    command = [
        sys.executable,
        "-c",
        CONSOLE,
        "train",
        "--task=gender",
    ]
    environment = {"FACE_DATA_DIR": str(faces), "MLFLOW_TRACKING_URI": f"sqlite:///{project / 'mlflow.db'}"}
    result = run_workers(2, command, project, env=environment)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["face_pipeline"], output_format="list")
    [run] = [run for run in runs if run.data.tags.get("pipeline_names") == "['train_gender']"]  # the chief's only
    assert len(runs) == 2  # and the preparation run before it
    assert run.data.params["gender.decided.workers"] == "2"
    assert run.data.params["gender.decided.distribution_strategy"] == "MultiWorkerMirroredStrategy"
    assert "gender.test_accuracy" in run.data.metrics
    assert len(list((project / "data/06_models/gender_model.keras").iterdir())) == 1  # saved once, by the chief
