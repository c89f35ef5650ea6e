"""Training on several GPUs or several workers with TensorFlow's own distribution engine.

A worker learns its place in a cluster from ``TF_CONFIG`` (the variable Kubeflow's TFJob, Vertex
AI and SageMaker set): ``{"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker",
"index": 0}}``. With two or more workers training is synchronous across them
(``MultiWorkerMirroredStrategy``); on one machine with several GPUs, ``MirroredStrategy``;
otherwise TensorFlow's default strategy, i.e. nothing changes.

Keras 3.15's ``fit`` fails under ``MultiWorkerMirroredStrategy`` in two places
(keras-team/keras#20585); ``patch_keras_for_multi_worker`` fixes those two, for the Keras
versions known to need it (see docs/distributed.md for why a patch and not a custom loop).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

# Keras versions whose TensorFlow trainer has the two multi-worker bugs (keras-team/keras#20585).
KERAS_VERSIONS_NEEDING_PATCH = ("3.15.",)


@dataclass(frozen=True)
class Cluster:
    """This process's place among the training workers (one worker: a cluster of one)."""

    workers: int = 1
    index: int = 0

    @property
    def is_chief(self) -> bool:
        """Worker 0 logs to MLflow, saves the model and writes reports; the others only train."""
        return self.index == 0

    @property
    def distributed(self) -> bool:
        return self.workers > 1


def cluster_from_environment(environ: dict[str, str] | None = None) -> Cluster:
    """The cluster ``TF_CONFIG`` describes; a cluster of one without it."""
    raw = (environ if environ is not None else os.environ).get("TF_CONFIG")
    if not raw:
        return Cluster()
    try:
        config = json.loads(raw)
        workers = list(config["cluster"].get("worker", [])) + list(config["cluster"].get("chief", []))
        task = config["task"]
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"TF_CONFIG is not a cluster description: {error}: {raw[:200]}") from error
    # A separate "chief" task (TFJob's layout) is worker 0; workers are numbered after it.
    index = int(task.get("index", 0))
    if "chief" in config["cluster"]:
        index = 0 if task.get("type") == "chief" else index + 1
    return Cluster(workers=max(1, len(workers)), index=index)


_multi_worker_strategies: dict[Cluster, Any] = {}


def training_strategy(cluster: Cluster | None = None):
    """The ``tf.distribute`` strategy to train under here (see the module's docstring).

    A worker of a cluster gets one ``MultiWorkerMirroredStrategy`` for its life: its collective
    ops must be set up before TensorFlow runs anything else (the chief's other nodes, such as the
    embedding heads, run TensorFlow too), so ``face-pipeline train`` asks for it first.
    """
    import tensorflow as tf  # noqa: PLC0415

    cluster = cluster or cluster_from_environment()
    if cluster.distributed:
        if cluster not in _multi_worker_strategies:
            patch_keras_for_multi_worker()
            _multi_worker_strategies[cluster] = tf.distribute.MultiWorkerMirroredStrategy()
        return _multi_worker_strategies[cluster]
    if len(tf.config.list_logical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def strategy_name(strategy) -> str:
    """The public name of ``strategy``'s class (``MultiWorkerMirroredStrategy``, not its alias)."""
    import tensorflow as tf  # noqa: PLC0415

    for name in ("MultiWorkerMirroredStrategy", "MirroredStrategy", "OneDeviceStrategy"):
        if isinstance(strategy, getattr(tf.distribute, name)):
            return name
    return "default" if strategy is tf.distribute.get_strategy() else type(strategy).__name__


def keras_needs_patch(version: str | None = None) -> bool:
    import keras  # noqa: PLC0415

    return (version or keras.__version__).startswith(KERAS_VERSIONS_NEEDING_PATCH)


def patch_keras_for_multi_worker() -> bool:
    """Fix Keras 3.15's ``fit`` under ``MultiWorkerMirroredStrategy``; returns whether it patched.

    1. ``TensorFlowTrainer._maybe_symbolic_build`` passes a batch of per-replica values to the
       symbolic build, which only needs shapes: it gets zeros shaped like one replica's batch.
    2. ``reduce_per_replica`` reduces scalar metrics across workers with ``axis=0``, which a
       0-d value does not have: scalars are reduced with ``axis=None``.
    Only the Keras versions in ``KERAS_VERSIONS_NEEDING_PATCH`` are patched, and only once;
    ``FACE_PIPELINE_KERAS_PATCH=0`` turns it off (the test that tells when upstream is fixed).
    """
    if os.environ.get("FACE_PIPELINE_KERAS_PATCH", "1") == "0" or not keras_needs_patch():
        return False
    import tensorflow as tf  # noqa: PLC0415
    from keras.src.backend.tensorflow import trainer  # noqa: PLC0415

    if getattr(trainer, "_face_pipeline_patched", False):
        return True
    original_build = trainer.TensorFlowTrainer._maybe_symbolic_build
    original_reduce = trainer.reduce_per_replica

    def zeros_like_spec(spec: Any) -> Any:
        replicas = getattr(spec, "_value_specs", None)
        if replicas:  # several replicas in this process: one replica's batch is enough
            return zeros_like_spec(replicas[0])
        return tf.zeros([1 if side is None else side for side in spec.shape], spec.dtype)

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        if iterator is not None and self._distribute_strategy is not None:
            # The build needs shapes only. Built from the dataset's spec, not from a batch drawn
            # from it: drawing one starts an extra pass, which moves a reshuffling dataset's
            # order on by one epoch (training would no longer match one process's).
            data_batch = tf.nest.map_structure(zeros_like_spec, iterator._distributed_dataset.element_spec)
            with self.distribute_strategy.scope():
                self._symbolic_build(data_batch=data_batch)
            return None
        return original_build(self, iterator=iterator, data_batch=data_batch)

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and trainer._collective_all_reduce_multi_worker(strategy):

            def mean(value):
                axis = 0 if getattr(value, "shape", None) is not None and len(value.shape) > 0 else None
                return strategy.reduce("MEAN", value, axis=axis)

            return tf.nest.map_structure(mean, values)
        return original_reduce(values, strategy, reduction)

    trainer.TensorFlowTrainer._maybe_symbolic_build = _maybe_symbolic_build
    trainer.reduce_per_replica = reduce_per_replica
    trainer._face_pipeline_patched = True
    return True


def agree(value: float, strategy, reduction: str = "MAX") -> float:
    """The same number on every worker: ``value`` reduced over the workers (``MAX`` or ``MEAN``).

    For decisions each worker makes from its own clock (how many epochs fit, whether to stop):
    a worker that stops alone would leave the others waiting for it forever.
    """
    import tensorflow as tf  # noqa: PLC0415

    if strategy.num_replicas_in_sync <= 1:
        return float(value)
    per_replica = strategy.run(lambda: tf.constant(float(value), tf.float32))
    return float(strategy.reduce(reduction, per_replica, axis=None))


def free_ports(count: int) -> list[int]:
    """``count`` ports free on 127.0.0.1 right now."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def local_tf_configs(workers: int) -> list[str]:
    """``TF_CONFIG`` for each of ``workers`` processes on this machine (127.0.0.1, free ports)."""
    addresses = [f"127.0.0.1:{port}" for port in free_ports(workers)]
    return [
        json.dumps({"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}})
        for index in range(workers)
    ]


# The ``unshare`` options that give a command a network namespace of its own, tried in turn: as
# root (or with CAP_SYS_ADMIN), then as any user, inside a user namespace of its own.
_NAMESPACE_OPTIONS = (("--net",), ("--user", "--map-root-user", "--net"))


class LoopbackUnavailable(RuntimeError):
    """This machine cannot give the local workers a network namespace with loopback only."""


@functools.cache
def loopback_namespace() -> tuple[str, ...] | None:
    """The command prefix that runs a command in a new network namespace with only loopback up.

    ``None`` where ``unshare`` or ``ip`` is missing, or the kernel refuses (not Linux, user
    namespaces turned off). Tried once per process: each try starts two small programs.
    """
    unshare = shutil.which("unshare")
    ip = shutil.which("ip", path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]))
    if not unshare or not ip:
        return None
    for options in _NAMESPACE_OPTIONS:
        prefix = (unshare, *options, "sh", "-c", f'{ip} link set lo up && exec "$@"', "sh")
        if subprocess.run([*prefix, "true"], capture_output=True, check=False).returncode == 0:
            return prefix
    return None


def loopback_only(command: Sequence[str]) -> list[str]:
    """``command`` inside a new network namespace with only loopback up, where the machine allows one.

    TensorFlow's gRPC server listens on every interface whatever ``TF_CONFIG`` says (it binds
    ``0.0.0.0``, with no setting to change it); in its own namespace the only interface is
    loopback, so nothing outside can reach it. Elsewhere, ``command`` as it is.
    """
    prefix = loopback_namespace()
    return [*prefix, *command] if prefix else list(command)


def run_local_workers(
    workers: int, command: Sequence[str], env: dict[str, str] | None = None, *, bind_all: bool = False
) -> int:
    """Run ``command`` as ``workers`` processes of one cluster on this machine; the worst exit code.

    By default the launcher and its workers share a network namespace with only loopback
    (``loopback_only``): their gRPC servers cannot be reached from the network, and they cannot
    reach it either (a tracking server, a bucket, even one on this machine's 127.0.0.1).
    ``bind_all`` runs them on this machine's network, their servers listening on every
    interface as TensorFlow's do. Raises ``LoopbackUnavailable`` where no namespace can be made,
    rather than opening the servers to the network unasked.
    """
    launcher = [sys.executable, "-m", "face_pipeline.ops.distribute", str(workers), *command]
    if not bind_all:
        if loopback_namespace() is None:
            raise LoopbackUnavailable(
                "cannot keep the local workers on loopback here (`unshare --net` and `ip` are needed, "
                "Linux only): TensorFlow's servers would listen on every interface; "
                "run them so anyway with --bind-all"
            )
        launcher = loopback_only(launcher)
    return subprocess.run(launcher, env={**os.environ, **(env or {})}, check=False).returncode


def launch_local_workers(workers: int, command: Sequence[str], env: dict[str, str] | None = None) -> list[int]:
    """Run ``command`` as ``workers`` processes of one cluster on this machine; their exit codes.

    They share this process's network: ``run_local_workers`` starts this in a namespace with
    loopback only. Each process gets its ``TF_CONFIG``; output goes to this terminal, prefixed by nothing (each
    log line names its worker). If one worker fails, the others are stopped: they would wait
    for it forever.
    """
    processes = []
    for config in local_tf_configs(workers):
        environment = {**os.environ, **(env or {}), "TF_CONFIG": config}
        processes.append(subprocess.Popen(list(command), env=environment))
    codes: list[int | None] = [None] * workers
    try:
        while any(code is None for code in codes):
            for index, process in enumerate(processes):
                if codes[index] is None:
                    try:
                        codes[index] = process.wait(timeout=1)
                    except subprocess.TimeoutExpired:
                        continue
                    if codes[index] != 0:
                        logger.error("Worker %d exited with %s; stopping the others", index, codes[index])
                        for other in processes:
                            if other.poll() is None:
                                other.terminate()
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    return [int(code) for code in codes]


if __name__ == "__main__":  # pragma: no cover - used as `python -m face_pipeline.ops.distribute N command...`
    exit_codes = launch_local_workers(int(sys.argv[1]), sys.argv[2:])
    print(f"workers exited with {exit_codes}", flush=True)
    sys.exit(max(exit_codes))
