"""``face-pipeline train``: the training pipelines on one worker of a cluster, or on N local workers.

Every worker runs this same command (as a TFJob's pods do). Worker 0, the chief, runs the
``train_<task>`` pipeline's training, evaluation and reports through Kedro, so it alone logs to
MLflow and saves the model; the other workers load the same model-input arrays and parameters
and run the training node only. The arrays and embeddings must exist already (``kedro run
--pipelines=embeddings``, which includes preprocessing): on several machines, on storage they all
read (docs/distributed.md).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from face_pipeline.ops.distribute import Cluster, LoopbackUnavailable, cluster_from_environment, run_local_workers


def _chief_pipeline(task: str):
    """The nodes of ``train_<task>`` after preparation (preprocessing and embeddings): training,
    evaluation, reports, settings; what the chief runs."""
    from kedro.framework.project import pipelines  # noqa: PLC0415

    preparation = set(pipelines["embeddings"].nodes)
    return pipelines[f"train_{task}"].only_nodes(
        *(node.name for node in pipelines[f"train_{task}"].nodes if node not in preparation)
    )


def _stored_inputs(pipeline) -> list[str]:
    """What ``pipeline`` reads from the catalog, parameters aside."""
    return sorted(name for name in pipeline.inputs() if not name.startswith("params:") and name != "parameters")


def train_on_this_worker(task: str, env: str | None, cluster: Cluster, project: Path) -> None:
    """The chief runs ``train_<task>`` (less preparation) through Kedro; another worker runs only its
    training node, wired as the pipeline wires it, and keeps nothing (the chief saves and logs)."""
    from kedro.framework.session import KedroSession  # noqa: PLC0415
    from kedro.framework.startup import bootstrap_project  # noqa: PLC0415

    bootstrap_project(project)
    with KedroSession.create(project_path=project, env=env) as session:
        context = session.load_context()
        chief = _chief_pipeline(task)
        training = chief.only_nodes(f"{task}.train_model")
        needed = _stored_inputs(chief if cluster.is_chief else training)
        missing = [name for name in needed if not context.catalog.exists(name)]
        if missing:
            raise click.ClickException(
                f"the model-input arrays or embeddings are missing ({', '.join(missing)}): "
                "run `kedro run --pipelines=embeddings` first"
            )
        if cluster.is_chief:
            session.run(pipeline_names=[f"train_{task}"], node_names=[node.name for node in chief.nodes])
            return
        (node,) = training.nodes
        node.run({name: context.catalog.load(name) for name in node.inputs})


@click.command()
@click.option(
    "--task",
    "tasks",
    multiple=True,
    help="Task(s) to train, in turn [default: every task, as `kedro run` does].",
)
@click.option(
    "--workers",
    type=int,
    default=1,
    show_default=True,
    help="Start this many local workers (127.0.0.1, loopback only); without it, run as the worker TF_CONFIG names.",
)
@click.option(
    "--bind-all",
    is_flag=True,
    help="With --workers: run the local workers on this machine's network, their servers listening on every "
    "interface (needed to reach a tracking server or a bucket); by default they have loopback only.",
)
@click.option("--env", default=None, help="Kedro configuration environment, as for `kedro run --env`.")
def train(tasks: tuple[str, ...], workers: int, bind_all: bool, env: str | None) -> None:
    """Train the task networks with tf.distribute: on every worker TF_CONFIG describes, or on N local ones."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if not tasks:
        from face_pipeline.tasks import TASKS  # noqa: PLC0415

        tasks = tuple(TASKS)
    if workers > 1 and "TF_CONFIG" not in os.environ:
        tracking = os.environ.get("MLFLOW_TRACKING_URI", "")
        if not bind_all and tracking.startswith(("http://", "https://")):
            # With loopback only the chief would retry the server for minutes before failing.
            raise click.ClickException(
                "MLFLOW_TRACKING_URI names a tracking server, which local workers with loopback only "
                "cannot reach: add --bind-all"
            )
        command = [sys.executable, "-c", "from face_pipeline.commands.console import main; main()", "train"]
        command += [f"--task={task}" for task in tasks] + ([f"--env={env}"] if env else [])
        try:
            sys.exit(run_local_workers(workers, command, bind_all=bind_all))
        except LoopbackUnavailable as error:
            raise click.ClickException(str(error)) from error
    cluster = cluster_from_environment()
    if cluster.distributed:  # before TensorFlow runs anything: collective ops are set up at start
        from face_pipeline.ops.distribute import training_strategy  # noqa: PLC0415

        training_strategy(cluster)
    for task in tasks:
        train_on_this_worker(task, env, cluster, Path.cwd())
