"""A local team stack on 127.0.0.1: PostgreSQL, SeaweedFS (S3), an MLflow server, a Dask cluster.

    python -m face_pipeline.ops.stack up [--dir .stack]    # start, print the environment to export
    python -m face_pipeline.ops.stack down [--dir .stack]  # stop every process it started

For trying ``kedro run --env=team`` on one machine and for the integration test; a team points
the same settings at managed services instead (docs/team.md). Every server binds 127.0.0.1 only,
the process ids are recorded in ``DIR/stack.json``, and ``down`` stops each process group.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from face_pipeline.ops.processes import HOST, free_port, http_ok, port_open, start_process, stop_group, wait_until

BUCKET = "face-pipeline"
ARTIFACTS = f"s3://{BUCKET}/mlflow-artifacts"
STATE_FILE = "stack.json"


@dataclass
class Stack:
    """What ``up`` started: the environment clients need and the process groups to stop."""

    folder: str
    env: dict[str, str] = field(default_factory=dict)
    pids: dict[str, int] = field(default_factory=dict)
    postgres_data: str = ""

    def save(self) -> None:
        path = Path(self.folder) / STATE_FILE
        path.write_text(json.dumps(asdict(self), indent=2))
        path.chmod(0o600)  # it holds the object store's secret

    @classmethod
    def load(cls, folder: str | Path) -> Stack:
        return cls(**json.loads((Path(folder) / STATE_FILE).read_text()))


def postgres_bin(name: str) -> str:
    """A PostgreSQL program: on PATH, in ``pg_config --bindir``, or Debian's versioned folder."""
    found = shutil.which(name)
    if found:
        return found
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        bindir = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=True).stdout
        if (Path(bindir.strip()) / name).exists():
            return str(Path(bindir.strip()) / name)
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not candidates:
        raise FileNotFoundError(f"{name} not found: install PostgreSQL (Debian: apt-get install postgresql)")
    return candidates[-1]


def postgres_missing() -> str | None:
    """What this machine lacks to start PostgreSQL here (its programs; as root, the ``postgres``
    user and ``runuser``), or None: said before anything starts, in one line."""
    try:
        for name in ("initdb", "pg_ctl"):
            postgres_bin(name)
    except FileNotFoundError:
        return "PostgreSQL not found (initdb, pg_ctl)"
    if os.geteuid() == 0:
        import pwd  # noqa: PLC0415 - Unix only, as is running as root

        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "PostgreSQL refuses to run as root and there is no postgres user to run it as"
        if not shutil.which("runuser"):
            return "PostgreSQL refuses to run as root and runuser (util-linux) is not there to change user"
    return None


def as_postgres_user(command: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run it as the ``postgres`` user then."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


def run_checked(command: list[str]) -> None:
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {(result.stdout + result.stderr).strip()[-2000:]}")


def start_postgres() -> tuple[str, int, str]:
    """A throw-away cluster in a new temporary folder (one the ``postgres`` user can reach when
    we are root): its SQLAlchemy URI, server pid and data folder."""
    data = Path(tempfile.mkdtemp(prefix="face-pipeline-postgres-"))
    if os.geteuid() == 0:
        shutil.chown(data, "postgres")
    port = free_port()
    run_checked(as_postgres_user([postgres_bin("initdb"), "-D", str(data), "-A", "trust", "-U", "mlflow", "--no-sync"]))
    options = f"-p {port} -k {data} -c listen_addresses={HOST} -c fsync=off"
    run_checked(
        as_postgres_user(
            [postgres_bin("pg_ctl"), "-D", str(data), "-w", "-l", str(data / "server.log"), "-o", options, "start"]
        )
    )
    pid = int((data / "postmaster.pid").read_text().split()[0])
    return f"postgresql+psycopg://mlflow@{HOST}:{port}/postgres", pid, str(data)


def seaweedfs_command(folder: Path, s3_port: int) -> list[str]:
    """``weed mini`` bound to 127.0.0.1, telemetry and the extra front-ends off, free ports."""
    ports = {name: free_port() for name in ("master", "volume", "filer")}
    grpc = {name: free_port() for name in ("master", "volume", "filer", "s3")}
    weed = shutil.which("weed") or str(Path(sys.executable).with_name("weed"))
    return [
        weed,
        "mini",
        f"-dir={folder}",
        f"-ip={HOST}",
        f"-ip.bind={HOST}",
        "-master.telemetry=false",
        "-admin.ui=false",
        "-webdav=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.port={s3_port}",
        *(f"-{name}.port={port}" for name, port in ports.items()),
        *(f"-{name}.port.grpc={port}" for name, port in grpc.items()),
    ]


def start_seaweedfs(folder: Path, key: str, secret: str, s3_port: int | None = None) -> tuple[str, int]:
    """SeaweedFS with one S3 identity (anonymous requests are refused): endpoint and pid."""
    data = folder / "seaweedfs"
    data.mkdir(parents=True, exist_ok=True)
    s3_port = s3_port or free_port()
    env = {**os.environ, "AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": secret}
    process = start_process(seaweedfs_command(data, s3_port), folder / "seaweedfs.log", env)
    endpoint = f"http://{HOST}:{s3_port}"
    wait_until(lambda: http_ok(f"{endpoint}/healthz") or http_ok(f"{endpoint}/status"), "SeaweedFS", process)
    return endpoint, process.pid


def make_bucket(endpoint: str, key: str, secret: str, bucket: str) -> None:
    import s3fs  # noqa: PLC0415 - the team extra

    storage = s3fs.S3FileSystem(key=key, secret=secret, client_kwargs={"endpoint_url": endpoint})
    deadline = time.monotonic() + 60
    while True:  # the S3 front-end answers before the filer is ready to create buckets
        try:
            if not storage.exists(bucket):
                storage.mkdir(bucket)
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def start_mlflow(
    folder: Path, backend_uri: str, artifacts: str, storage_env: dict[str, str], port: int | None = None
) -> tuple[str, int]:
    """The tracking server; artifacts go through it (``--serve-artifacts``) into ``artifacts``."""
    port = port or free_port()
    mlflow = str(Path(sys.executable).with_name("mlflow"))
    command = [mlflow, "server", "--backend-store-uri", backend_uri, "--serve-artifacts"]
    command += ["--artifacts-destination", artifacts, "--host", HOST, "--port", str(port), "--workers", "2"]
    process = start_process(command, folder / "mlflow.log", {**os.environ, **storage_env})
    uri = f"http://{HOST}:{port}"
    wait_until(lambda: http_ok(f"{uri}/health"), "MLflow server", process, timeout=180)
    return uri, process.pid


def start_dask(folder: Path, workers: int) -> tuple[str, int, int]:
    """A scheduler and ``workers`` single-threaded worker processes: address and both pids."""
    port = free_port()
    dask = str(Path(sys.executable).with_name("dask"))
    address = f"tcp://{HOST}:{port}"
    dashboard = ["--dashboard-address", f"{HOST}:0"]  # the default binds every interface
    scheduler_command = [dask, "scheduler", "--host", HOST, "--port", str(port), *dashboard]
    scheduler = start_process(scheduler_command, folder / "dask-scheduler.log")
    wait_until(lambda: port_open(HOST, port), "Dask scheduler", scheduler)
    worker_command = [dask, "worker", address, "--host", HOST, "--nworkers", str(workers), "--nthreads", "1"]
    worker = start_process([*worker_command, *dashboard], folder / "dask-worker.log")
    return address, scheduler.pid, worker.pid


def storage_environment(endpoint: str, key: str, secret: str) -> dict[str, str]:
    """What boto3/s3fs clients read: the MLflow server for artifacts, ``conf/team`` for data."""
    return {
        "AWS_ACCESS_KEY_ID": key,
        "AWS_SECRET_ACCESS_KEY": secret,
        "AWS_ENDPOINT_URL": endpoint,
        "MLFLOW_S3_ENDPOINT_URL": endpoint,
    }


def create_experiment(tracking_uri: str, name: str) -> None:
    """Created once up front: runs that start together would otherwise race to create it."""
    from mlflow import MlflowClient  # noqa: PLC0415 - slow import, only here

    client = MlflowClient(tracking_uri)
    if client.get_experiment_by_name(name) is None:
        client.create_experiment(name)


def up(folder: str | Path, dask_workers: int = 2, experiment: str = "face_pipeline") -> Stack:
    """Start everything (PostgreSQL ~1 s, SeaweedFS ~1 s, MLflow ~15 s on first start)."""
    root = Path(folder).resolve()
    if (root / STATE_FILE).exists():
        # Starting again over a running stack would overwrite the record of its processes.
        raise RuntimeError(f"a stack is already running in {root} ({STATE_FILE}): stop it first (make stack-down)")
    root.mkdir(parents=True, exist_ok=True)
    stack = Stack(folder=str(root))
    try:
        backend, stack.pids["postgres"], stack.postgres_data = start_postgres()
        stack.save()
        key, secret = f"face{secrets.token_hex(6)}", secrets.token_urlsafe(24)
        endpoint, stack.pids["seaweedfs"] = start_seaweedfs(root, key, secret)
        stack.save()
        make_bucket(endpoint, key, secret, BUCKET)
        storage = storage_environment(endpoint, key, secret)
        uri, stack.pids["mlflow"] = start_mlflow(root, backend, ARTIFACTS, storage)
        stack.save()
        create_experiment(uri, experiment)
        stack.env = {**storage, "MLFLOW_TRACKING_URI": uri, "FACE_PIPELINE_BUCKET": BUCKET}
        if dask_workers:
            address, stack.pids["dask-scheduler"], stack.pids["dask-workers"] = start_dask(root, dask_workers)
            stack.env["DASK_SCHEDULER_ADDRESS"] = address
        stack.env["MLFLOW_BACKEND_STORE_URI"] = backend
        stack.save()
    except BaseException:
        down(root)
        raise
    return stack


def stop_postgres(data: str, pid: int) -> None:
    result = subprocess.run(
        as_postgres_user([postgres_bin("pg_ctl"), "-D", data, "-m", "fast", "-w", "stop"]),
        capture_output=True,
        check=False,
    )
    if result.returncode != 0:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)


def down(folder: str | Path) -> None:
    """Stop every process ``up`` recorded, newest first; PostgreSQL through ``pg_ctl``."""
    root = Path(folder).resolve()
    if not (root / STATE_FILE).exists():
        return
    stack = Stack.load(root)
    for name, pid in reversed(stack.pids.items()):
        if name == "postgres":
            stop_postgres(stack.postgres_data, pid)
        else:
            stop_group(pid)
    if stack.postgres_data:
        shutil.rmtree(stack.postgres_data, ignore_errors=True)
    (root / STATE_FILE).unlink()


def exports(env: dict[str, str]) -> Iterator[str]:
    yield from (f"export {name}={value}" for name, value in env.items())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m face_pipeline.ops.stack", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["up", "down"])
    parser.add_argument("--dir", default=".stack", help="where data, logs and stack.json go (default .stack)")
    parser.add_argument("--dask-workers", type=int, default=2, help="0: no Dask cluster")
    args = parser.parse_args(argv)
    if args.action == "down":
        down(args.dir)
        print(f"Stopped the stack in {args.dir}")
        return
    try:
        stack = up(args.dir, args.dask_workers)
    except RuntimeError as error:
        raise SystemExit(f"Error: {error}") from None
    print(f"Stack running in {stack.folder} (logs there). Export this, then: kedro run --env=team")
    print("\n".join(exports(stack.env)))


if __name__ == "__main__":
    main()
