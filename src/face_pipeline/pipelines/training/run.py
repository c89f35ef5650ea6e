"""How one training run goes: set up, plan (the time budget), fit, finish (the weights kept).

``nodes.train_model`` calls these in that order; the finetuning and head nodes reuse the runtime
and callback helpers.
"""

from __future__ import annotations

import logging
import os
import random
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from face_pipeline.config import check_keys
from face_pipeline.modelling.builders import ModelSettings, build_model, compile_model, inference_model
from face_pipeline.modelling.precision import resolve_precision
from face_pipeline.ops.distribute import Cluster, agree, cluster_from_environment, strategy_name, training_strategy
from face_pipeline.pipelines.training.callbacks import learning_rate_schedule, training_callbacks
from face_pipeline.tasks import get_task

from .backup import backup_path, data_fingerprint, forget_plan, keep_plan, saved_plan
from .batch_norm import KeptEpoch, finish_weights
from .budget import Plan, measure_step_seconds, plan_in_budget
from .callbacks import EarlyStoppingKeepingLast
from .data import distribute, make_dataset, model_targets
from .settings import TrainingSettings

logger = logging.getLogger(__name__)


def configure_runtime(seed: int, deterministic: bool = False, threads: int | None = None) -> None:
    """Seed Python, NumPy and TensorFlow; optionally force deterministic ops and thread counts.

    Thread counts can only be set before TensorFlow starts its runtime; later calls log a
    warning and keep the current setting.
    """
    random.seed(seed)
    np.random.seed(seed)
    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()
    if threads:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(int(threads))
            tf.config.threading.set_inter_op_parallelism_threads(min(2, int(threads)))
        except RuntimeError:
            logger.warning("TensorFlow is already running; training.threads=%s not applied", threads)


def task_target(task: dict[str, Any], block: str = "task") -> str:
    """The label column a ``task`` block names, checked against the known tasks."""
    target = check_keys(task, {"target"}, block).get("target")
    return get_task(target).name


def _probe_epoch_seconds(
    probe: keras.Model,
    train_images: np.ndarray,
    train_labels: pd.DataFrame,
    target: str,
    batch_size: int,
    val_count: int,
) -> float:
    """Seconds an epoch of ``probe``'s network takes here, from a few timed training steps.

    A validation step counts as a third of a training step (a forward pass only).
    """
    steps_per_epoch, val_steps = -(-len(train_images) // batch_size), -(-val_count // batch_size)
    count = 16 * batch_size
    targets = model_targets(probe, train_labels.iloc[:count], target)
    data = make_dataset(train_images[:count], targets, batch_size, shuffle=False, seed=0)
    return measure_step_seconds(probe, data) * (steps_per_epoch + val_steps / 3)


def _batches(
    network: keras.Model,
    images: np.ndarray,
    labels: pd.DataFrame,
    target: str,
    settings: TrainingSettings,
    shuffle: bool,
    strategy=None,
    cluster: Cluster | None = None,
) -> tf.data.Dataset:
    """The batches of ``images``; on several workers, this worker's share of each (see ``make_dataset``)."""
    targets = model_targets(network, labels, target)
    cluster = cluster or Cluster()

    def for_shard(shard: tuple[int, int]) -> tf.data.Dataset:
        return make_dataset(images, targets, settings.batch_size, shuffle=shuffle, seed=settings.seed, shard=shard)

    return distribute(for_shard, strategy, cluster.workers, cluster.index)


def runtime_description(strategy, cluster: Cluster) -> dict[str, Any]:
    """Where the run trained: TensorFlow's threads per op, the distribution strategy, the workers."""
    return {
        "threads": tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count(),
        "distribution_strategy": strategy_name(strategy),
        "workers": cluster.workers,
        "replicas": strategy.num_replicas_in_sync,
    }


def _backup_folder(
    settings: TrainingSettings, model: dict[str, Any], fingerprint: str, cluster: Cluster
) -> Path | None:
    """The run's backup folder (``backup_path``), one per worker: Keras callbacks know no chief."""
    if not settings.backup_dir:
        return None
    backup = backup_path(settings.backup_dir, {"model": model, "training": settings.resume_key()}, fingerprint)
    return backup / f"worker-{cluster.index}" if cluster.distributed else backup


@dataclass
class TrainingSetup:
    """What a run trains and where: the task, its settings, the builder's options, the cluster."""

    target: str
    model_settings: ModelSettings
    settings: TrainingSettings
    precision: str
    input_shape: tuple[int, ...]
    options: dict[str, Any]
    auto_downsample: bool  # downsample: auto, settled by the time budget
    cluster: Cluster
    strategy: Any
    fingerprint: str
    backup: Path | None

    def build(self, learning_rate: Any, precision: str | None = None, **changes: Any) -> keras.Model:
        """The network, compiled for the task, with the run's options (``changes`` on top)."""
        arguments = {**self.options, **changes}
        network = build_model(
            self.model_settings.architecture,
            self.input_shape,
            self.target,
            precision=precision or self.precision,
            **arguments,
        )
        return compile_model(network, self.target, learning_rate, self.model_settings.loss)


@dataclass(frozen=True)
class TrainingDecisions:
    """What a run decided at run time, logged as MLflow params ``<task>.decided.*``."""

    precision: str
    runtime: dict[str, Any]
    plan: Plan
    downsample: float
    resumed_from_backup: bool
    epochs_run: int
    kept: KeptEpoch
    parameters: int
    train_data_sha1: str

    def as_params(self) -> dict[str, Any]:
        return {
            "precision": self.precision,
            **self.runtime,
            "planned_epochs": self.plan.epochs,
            "plan": self.plan.source,
            "downsample": self.downsample,
            "resumed_from_backup": self.resumed_from_backup,
            "epochs_run": self.epochs_run,
            "epoch_kept": self.kept.epoch,
            "epoch_kept_because": self.kept.reason,
            "parameters": self.parameters,
            "train_data_sha1": self.train_data_sha1,
        }


def set_up(
    train_images: np.ndarray, train_labels: pd.DataFrame, task: dict[str, Any], model: dict[str, Any], training: dict
) -> TrainingSetup:
    """The checked settings, seeds and threads, the builder's options, the strategy and the backup folder."""
    target = task_target(task)
    spec = get_task(target)
    model_settings = ModelSettings.from_params(model, f"{target}.model")
    settings = TrainingSettings.from_params(training, f"{target}.training")
    configure_runtime(settings.seed, settings.deterministic, settings.threads)
    options = {
        **model_settings.builder_options(),
        "loss": model_settings.loss,
        "augment": model_settings.augment,
        "label_stats": spec.label_stats(spec.targets(train_labels)),
    }
    # downsample: auto is settled by the time budget: full-size faces unless they do not fit.
    auto_downsample = str(options.get("downsample")).lower() == "auto"
    if auto_downsample:
        options["downsample"] = 1
    cluster = cluster_from_environment()
    strategy = training_strategy(cluster)
    fingerprint = data_fingerprint(train_images, train_labels)
    return TrainingSetup(
        target=target,
        model_settings=model_settings,
        settings=settings,
        precision=resolve_precision(settings.precision),
        input_shape=tuple(train_images.shape[1:]),
        options=options,
        auto_downsample=auto_downsample,
        cluster=cluster,
        strategy=strategy,
        fingerprint=fingerprint,
        backup=_backup_folder(settings, model, fingerprint, cluster),
    )


def plan_run(setup: TrainingSetup, train_images: np.ndarray, train_labels: pd.DataFrame, val_count: int) -> Plan:
    """The epochs (and downsampling) to train: as configured, or what fits the time budget here.

    A resumed run keeps the plan it started with. Probing draws random numbers, so the seeds
    are reset afterwards: the model then starts from the same weights as without a budget.
    """
    settings = setup.settings
    if not settings.time_budget_minutes:
        plan = Plan(settings.epochs)
    else:

        def epoch_seconds(downsample: float) -> float:
            changes = {"downsample": downsample} if setup.auto_downsample else {}
            probe = setup.build(float(settings.learning_rate), **changes)
            seconds = _probe_epoch_seconds(
                probe, train_images, train_labels, setup.target, settings.batch_size, val_count
            )
            return agree(seconds, setup.strategy)  # every worker plans with the slowest one's time

        plan = saved_plan(setup.backup) or plan_in_budget(
            settings.epochs, settings.time_budget_minutes, epoch_seconds, setup.auto_downsample
        )
        keep_plan(setup.backup, plan)
        keras.utils.set_random_seed(settings.seed)
    if setup.auto_downsample:
        setup.options["downsample"] = plan.downsample
    setup.settings = settings.for_planned_epochs(plan.epochs)
    return plan


def fit(
    setup: TrainingSetup,
    train_images: np.ndarray,
    train_labels: pd.DataFrame,
    val_images: np.ndarray,
    val_labels: pd.DataFrame,
) -> tuple[keras.Model, keras.callbacks.History, list[keras.callbacks.Callback], bool, Any]:
    """The network trained as planned: it, its history, the callbacks, whether it resumed, the rate."""
    settings, strategy, cluster, target = setup.settings, setup.strategy, setup.cluster, setup.target
    steps_per_epoch = -(-len(train_images) // settings.batch_size)
    learning_rate = learning_rate_schedule(settings, steps_per_epoch)
    with strategy.scope():
        network = setup.build(learning_rate)
    train_data = _batches(network, train_images, train_labels, target, settings, True, strategy, cluster)
    callbacks = training_callbacks(settings, target, setup.backup, strategy)
    resumed = setup.backup is not None and setup.backup.exists()
    logger.info(
        "Training %s (%s, %s parameters, %s, %s) on %d images, validating on %d",
        network.name,
        setup.model_settings.architecture,
        f"{network.count_params():,}",
        setup.precision,
        f"worker {cluster.index + 1} of {cluster.workers}" if cluster.distributed else strategy_name(strategy),
        len(train_images),
        len(val_images),
    )
    history = network.fit(
        train_data,
        validation_data=_batches(network, val_images, val_labels, target, settings, False, strategy, cluster),
        epochs=settings.epochs,
        callbacks=callbacks,
        shuffle=False,  # train_data reshuffles itself every epoch
        verbose=1 if sys.stdout.isatty() else 0,  # progress bar on a terminal, EpochLog lines otherwise
    )
    forget_plan(setup.backup)
    return network, history, callbacks, resumed, learning_rate


def finish(
    setup: TrainingSetup,
    network: keras.Model,
    callbacks: list[keras.callbacks.Callback],
    learning_rate: Any,
    train_images: np.ndarray,
    val_images: np.ndarray,
    val_labels: pd.DataFrame,
) -> tuple[keras.Model, KeptEpoch, int, int]:
    """The weights to keep (``finish_weights``) on a float32 network outside the strategy, served
    as ``inference_model``; with the epoch kept, the epochs run and the network's parameters."""
    settings, strategy = setup.settings, setup.strategy
    if setup.precision != "float32" or strategy.num_replicas_in_sync > 1:
        # Served in float32 and outside the strategy: the same network with the trained weights
        # (variables are float32 already), so predictions do not depend on 16-bit support or on
        # the other workers. Everything after this runs on each worker alone, alike.
        trained_weights = network.get_weights()
        network = setup.build(learning_rate, precision="float32")
        network.set_weights(trained_weights)
    val_data = _batches(network, val_images, val_labels, setup.target, settings, False)
    epoch_log = callbacks[0]
    stopping = next((c for c in callbacks if isinstance(c, EarlyStoppingKeepingLast)), None)
    epochs_run = (epoch_log.last_epoch or 0) + 1
    kept = finish_weights(
        network, train_images, val_data, int(settings.batch_norm_recalibration), settings.seed, stopping, epochs_run
    )
    served = inference_model(network, setup.target, bool(setup.model_settings.mirror_average))
    return served, kept, epochs_run, network.count_params()
