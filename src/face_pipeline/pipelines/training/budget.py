"""The time budget: how long an epoch takes here, and the epochs and face size that fit in the budget."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

logger = logging.getLogger(__name__)

# What ``downsample: auto`` tries in turn, least first: 128 px faces become 80 px, then 64 px.
AUTO_DOWNSAMPLE = (1.6, 2)


@dataclass(frozen=True)
class Plan:
    """What a run trains: ``epochs`` (the schedule's length) on faces shrunk by ``downsample``.

    ``source`` says how it was decided: ``parameters`` (no budget), ``measured`` (epochs timed
    on this machine) or ``resumed`` (kept from the interrupted run it continues).
    """

    epochs: int
    downsample: float = 1
    source: str = "parameters"
    seconds_per_epoch: float | None = None


def plan_epochs(epochs: int, seconds_per_epoch: float, budget_minutes: float | None) -> int:
    """The epochs of ``seconds_per_epoch`` that fit in ``budget_minutes`` (at least 1, at most ``epochs``)."""
    if not budget_minutes:
        return int(epochs)
    return max(1, min(int(epochs), int(budget_minutes * 60 // max(seconds_per_epoch, 1e-9))))


def plan_downsample(
    epochs: int,
    full_seconds: float,
    downsampled_seconds: Callable[[float], float],
    budget_minutes: float,
    factors: tuple[float, ...] = AUTO_DOWNSAMPLE,
) -> tuple[float, int]:
    """``(downsample, epochs)`` for ``downsample: auto`` in ``budget_minutes``.

    The least downsampling at which at least half the epochs fit: full-size faces, else each of
    ``factors`` in turn; where none holds half, the last one tried, with as many epochs as fit.
    A network trained through most of its schedule on smaller faces beats a larger one stopped
    after a few epochs (docs/experiments.md). ``downsampled_seconds(factor)`` times an epoch of
    that network, only when it is needed; one that is not faster than the last is not taken.
    """
    downsample, seconds = 1, full_seconds
    for factor in factors:
        if 2 * plan_epochs(epochs, seconds, budget_minutes) >= epochs:
            break
        smaller = downsampled_seconds(factor)
        if smaller < seconds:
            downsample, seconds = factor, smaller
    return downsample, plan_epochs(epochs, seconds, budget_minutes)


def measure_step_seconds(
    probe: keras.Model, train_data: tf.data.Dataset, probe_steps: int = 12, warmup_steps: int = 3
) -> float:
    """Seconds one training step of ``probe``, a throwaway compiled model, takes here on ``train_data``'s batches.

    Times ``probe_steps`` steps after ``warmup_steps`` (graph tracing, first use of each kernel),
    repeating the batches if there are fewer, and takes the median.
    """
    ends: list[float] = []

    class StepTimer(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            ends.append(time.perf_counter())

    steps = train_data.repeat().take(warmup_steps + probe_steps)
    probe.fit(steps, epochs=1, shuffle=False, verbose=0, callbacks=[StepTimer()])
    if not ends:
        raise ValueError("measuring a training step needs training batches; the data set is empty")
    return float(np.median(np.diff(ends[max(0, warmup_steps - 1) :])))


def plan_in_budget(
    epochs: int,
    budget_minutes: float,
    epoch_seconds: Callable[[float], float],
    auto_downsample: bool,
) -> Plan:
    """The epochs (and, with ``auto_downsample``, the downsampling) that fit ``budget_minutes`` here.

    ``epoch_seconds(downsample)`` times an epoch of a throwaway copy of the configured network.
    Epochs that do not fit are cut (``plan_epochs``); with ``auto_downsample``, where fewer than
    half fit, the network for smaller faces is trained instead (``plan_downsample``).
    """
    full, probed = epoch_seconds(1), {}

    def downsampled_seconds(factor: float) -> float:
        probed[factor] = epoch_seconds(factor)
        return probed[factor]

    full_planned = plan_epochs(epochs, full, budget_minutes)
    downsample, planned = 1, full_planned
    if auto_downsample:
        downsample, planned = plan_downsample(epochs, full, downsampled_seconds, budget_minutes)
    notes = [
        f"faces downsampled by {f:g}: {t:.0f} s, {plan_epochs(epochs, t, budget_minutes)} of {epochs}"
        for f, t in probed.items()
    ]
    if downsample != 1:
        notes.append(f"training with downsample {downsample:g}, {planned} epochs")
    (logger.warning if planned < epochs or downsample != 1 else logger.info)(
        "Time budget %s min: an epoch takes about %.0f s here, so %d of %d epochs fit%s",
        budget_minutes,
        full,
        full_planned,
        epochs,
        "".join(f"; {note}" for note in notes),
    )
    return Plan(planned, downsample, "measured", probed.get(downsample, full))
