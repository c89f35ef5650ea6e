"""What each prediction task is, in one place: its label, output layer, losses, metrics, scores and plots.

A task is a label column of the manifest (``gender``, ``age``) and the namespace of its
parameters (``conf/base/parameters_train_<task>.yml``), catalog entries and pipelines. Model
builders, training, evaluation and prediction ask the task rather than testing its name, so a
new task is its parameter file plus one ``Task`` in ``TASKS`` (``register`` adds one at run time).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from face_pipeline.config import ConfigError
from face_pipeline.labels import AGE_BINS, GENDERS
from face_pipeline.scoring.answers import (
    age_columns,
    age_text,
    calibrated_gender,
    distribution_output,
    gender_columns,
    gender_label,
    gender_text,
    is_missing,
    served_output,
)
from face_pipeline.scoring.calibration import (
    accuracy_at_coverage,
    expected_calibration_error,
    fit_age_range,
    fit_temperature,
    range_scores,
)
from face_pipeline.scoring.plots import (
    plot_age_ranges,
    plot_confusion_matrix,
    plot_predicted_vs_true,
    plot_reliability,
    plot_risk_coverage,
    plot_roc_curve,
)
from face_pipeline.scoring.scores import age_scores, gender_scores

if TYPE_CHECKING:
    import keras
    import matplotlib.pyplot as plt

# Keras, matplotlib and scikit-learn are imported where they are used: prediction workers import
# this module to name the prediction columns and must not start TensorFlow (calibration is NumPy).


@dataclass(frozen=True)
class Task:
    """One prediction task.

    ``head(features, loss, **label_stats)`` adds the output layer(s) to a network's features:
    one tensor, or a dict whose entry ``name`` is the served output and whose other entries are
    training-only outputs. ``losses`` maps each loss name a parameter file may choose to a
    function returning the Keras loss(es) for that head (a dict for a multi-output head); the
    first is the default. ``label_stats(targets)`` gives the head what it needs to know of the
    training labels. ``scores(y_true, y_pred)`` are the evaluation report's numbers;
    ``headline`` is the one that sums a model up. ``plots`` are the evaluation plots
    particular to the task, ``{name: plot(test_predictions, report)}``.

    What users act on is fitted after training on the validation split
    (``face_pipeline.scoring.calibration``): ``calibrate(outputs, targets, settings)`` returns the
    calibration (a JSON-able dict saved with the model) from the network's outputs
    (``network_outputs``: the served one and, where there is one, its distribution);
    ``calibrated(values, calibration)`` is the served output once calibrated (the prediction
    evaluation scores); ``columns(outputs, calibration)`` are the prediction table's columns;
    ``answer_scores(table)`` score those columns on a labelled evaluation table (calibration
    error, coverage of a range).
    """

    name: str
    head: Callable[..., Any]
    losses: Mapping[str, Callable[[], Any]]
    metrics: Callable[[], list[keras.metrics.Metric]]
    scores: Callable[[np.ndarray, np.ndarray], dict[str, Any]]
    headline: str
    higher_is_better: bool
    columns: Callable[[Mapping[str, np.ndarray], Mapping[str, Any]], dict[str, np.ndarray]]
    calibrate: Callable[[Mapping[str, np.ndarray], np.ndarray, Mapping[str, Any]], dict[str, Any]] = (
        lambda outputs, targets, settings: {}
    )
    calibrated: Callable[[np.ndarray, Mapping[str, Any]], np.ndarray] = lambda values, calibration: values
    answer_scores: Callable[[pd.DataFrame], dict[str, Any]] = lambda table: {}
    label_stats: Callable[[np.ndarray], dict[str, float]] = lambda targets: {}
    plots: Mapping[str, Callable[[pd.DataFrame, dict[str, Any]], plt.Figure]] = field(default_factory=dict)
    describe_prediction: Callable[[float, float], str] = lambda true, predicted: (
        f"true {true:g}, predicted {predicted:g}"
    )
    label: Callable[[pd.DataFrame], Any] | None = None
    # A prediction row's answer, in words for the command's table and in a few characters for a
    # picture's label; None where the row has none. Default: the column of the task's name.
    answer_text: Callable[[Mapping[str, Any]], str | None] | None = None
    picture_label: Callable[[Mapping[str, Any]], str | None] | None = None

    def text(self, row: Mapping[str, Any], short: bool = False) -> str | None:
        """This task's answer in ``row`` (a prediction row): in words, or ``short`` for a picture."""
        custom = self.picture_label if short else self.answer_text
        if custom is not None:
            return custom(row)
        value = row.get(self.name)
        return None if is_missing(value) else f"{self.name} {value}"

    def targets(self, labels: pd.DataFrame) -> np.ndarray:
        """The task's target per row of a labels table: the column of its name, or ``label(labels)``."""
        values = self.label(labels) if self.label is not None else labels[self.name]
        return np.asarray(values, dtype=np.float32)

    @property
    def default_loss(self) -> str:
        return next(iter(self.losses))

    def loss(self, name: str | None) -> Any:
        """The Keras loss(es) named ``name`` (None: the default)."""
        name = name or self.default_loss
        if name not in self.losses:
            raise ValueError(f"loss for {self.name} must be one of {sorted(self.losses)}, got {name!r}")
        return self.losses[name]()


def required_setting(settings: Mapping[str, Any], key: str, task: str) -> Any:
    """``settings[key]`` of ``<task>.calibration``, or an error naming the key that is missing."""
    if key not in settings:
        raise ConfigError(f"{task}.calibration.{key} is required (see conf/base/parameters_train_{task}.yml)")
    return settings[key]


# ---- gender ----------------------------------------------------------------------------


def gender_head(features, loss: str | None = None):
    from keras import layers  # noqa: PLC0415

    return layers.Dense(1, activation="sigmoid", dtype="float32", name="gender")(features)


def gender_metrics() -> list[keras.metrics.Metric]:
    import keras  # noqa: PLC0415

    return [keras.metrics.BinaryAccuracy(name="accuracy"), keras.metrics.AUC(name="auc")]


def calibrate_gender(outputs: Mapping[str, np.ndarray], targets: np.ndarray, settings: Mapping[str, Any]) -> dict:
    """Temperature scaling of P(female), fitted on the validation faces; ``uncertain_below`` kept with it."""

    method, uncertain_below = (required_setting(settings, key, "gender") for key in ("method", "uncertain_below"))
    temperature = fit_temperature(targets, served_output(outputs)) if method == "temperature" else 1.0
    return {"method": method, "temperature": temperature, "uncertain_below": float(uncertain_below)}


def gender_answer_scores(table: pd.DataFrame) -> dict[str, Any]:
    """Calibration error before and after calibration, accuracy of the 90 % most confident answers,
    and the share marked uncertain with the accuracy on the rest."""

    y_true, probability = table["y_true"].to_numpy(), table["y_pred"].to_numpy()
    answered = ~table["gender_uncertain"].to_numpy(dtype=bool)
    correct = (probability >= 0.5) == (y_true == 1)
    return {
        "ece_uncalibrated": expected_calibration_error(y_true, table["y_pred_uncalibrated"].to_numpy()),
        "ece": expected_calibration_error(y_true, probability),
        "accuracy_at_90_coverage": accuracy_at_coverage(y_true, probability, 0.9),
        "uncertain_share": float((~answered).mean()) if len(table) else None,
        "accuracy_when_certain": float(correct[answered].mean()) if answered.any() else None,
    }


GENDER = Task(
    name="gender",
    head=gender_head,
    losses={"binary_crossentropy": lambda: "binary_crossentropy"},
    metrics=gender_metrics,
    scores=gender_scores,
    headline="accuracy",
    higher_is_better=True,
    columns=gender_columns,
    calibrate=calibrate_gender,
    calibrated=calibrated_gender,
    answer_scores=gender_answer_scores,
    plots={
        "confusion_matrix": plot_confusion_matrix,
        "roc_curve": plot_roc_curve,
        "reliability": plot_reliability,
        "risk_coverage": plot_risk_coverage,
    },
    describe_prediction=lambda true, predicted: f"true {GENDERS[int(true)]}\nP(female) {predicted:.2f}",
    answer_text=gender_text,
    picture_label=gender_label,
)


# ---- age -------------------------------------------------------------------------------


def age_head(features, loss: str | None = None, mean: float = 33.0, std: float = 20.0):
    """Age in years; with the "distribution" loss also the probabilities per year it is the expectation of."""
    import keras  # noqa: PLC0415
    from keras import layers  # noqa: PLC0415

    if loss == "distribution":
        # Probabilities per year of age, starting from a Gaussian prior around the training
        # mean; the prediction in years is their expectation (a fixed dense layer).
        prior = -0.5 * ((AGE_BINS - mean) / std) ** 2
        probabilities = layers.Dense(
            len(AGE_BINS),
            activation="softmax",
            kernel_initializer="zeros",
            bias_initializer=keras.initializers.Constant(prior - prior.max()),
            dtype="float32",
            name="age_distribution",
        )(features)
        age = layers.Dense(
            1,
            use_bias=False,
            trainable=False,
            kernel_initializer=keras.initializers.Constant(AGE_BINS.reshape(-1, 1)),
            dtype="float32",
            name="age",
        )(probabilities)
        return {"age": age, "age_distribution": probabilities}
    # The dense layer predicts a standardised age; a fixed affine layer turns it into years.
    # Without it the weights must first grow ~20x to span real ages, which stalls training.
    standardised = layers.Dense(1, dtype="float32", name="age_standardised")(features)
    return layers.Rescaling(scale=std, offset=mean, dtype="float32", name="age")(standardised)


def huber_loss():
    import keras  # noqa: PLC0415

    return keras.losses.Huber(delta=5.0)


def distribution_loss() -> dict[str, Any]:
    from face_pipeline.scoring.losses import AgeDistributionLoss  # noqa: PLC0415

    return {"age": "mae", "age_distribution": AgeDistributionLoss()}


def age_metrics() -> list[keras.metrics.Metric]:
    import keras  # noqa: PLC0415

    return [keras.metrics.MeanAbsoluteError(name="mae"), keras.metrics.RootMeanSquaredError(name="rmse")]


def age_label_stats(ages: np.ndarray) -> dict[str, float]:
    ages = np.asarray(ages, dtype=np.float32)
    return {"mean": float(ages.mean()), "std": float(ages.std()) or 1.0}


def calibrate_age(outputs: Mapping[str, np.ndarray], targets: np.ndarray, settings: Mapping[str, Any]) -> dict:
    """The age range's calibration: ``level`` per band of predicted age (``calibration.fit_age_range``)."""

    level, bands = (required_setting(settings, key, "age") for key in ("level", "bands"))
    return fit_age_range(served_output(outputs), distribution_output(outputs), AGE_BINS, targets, level, bands)


def age_answer_scores(table: pd.DataFrame) -> dict[str, Any]:
    """How often the true age is inside the range, and the range's mean width."""

    return range_scores(table["y_true"], table["age_low"], table["age_high"])


AGE = Task(
    name="age",
    head=age_head,
    losses={
        "mae": lambda: "mae",
        "huber": huber_loss,
        # DLDL-v2: the divergence shapes the distribution, MAE on its expectation sharpens it.
        "distribution": distribution_loss,
    },
    metrics=age_metrics,
    scores=age_scores,
    headline="mae",
    higher_is_better=False,
    columns=age_columns,
    calibrate=calibrate_age,
    answer_scores=age_answer_scores,
    label_stats=age_label_stats,
    plots={"predicted_vs_true": plot_predicted_vs_true, "ranges": plot_age_ranges},
    describe_prediction=lambda true, predicted: f"true {true:.0f}, predicted {predicted:.0f}",
    answer_text=age_text,
    picture_label=lambda row: age_text(row, short=True),
)


_REGISTRY: dict[str, Task] = {task.name: task for task in (GENDER, AGE)}
TASKS = MappingProxyType(_REGISTRY)  # every known task by name, read-only


def get_task(name: str) -> Task:
    """The task named ``name``, with an error listing the known ones."""
    if name not in _REGISTRY:
        raise ValueError(f"task must be one of {sorted(_REGISTRY)}, got {name!r}")
    return _REGISTRY[name]


def register(task: Task) -> Task:
    """Make ``task`` known by its name (a plugin's or a test's own task); returns it."""
    _REGISTRY[task.name] = task
    return task


def unregister(name: str) -> None:
    """Forget the task ``name`` (one ``register`` added)."""
    _REGISTRY.pop(name, None)


def answers_text(row: Mapping[str, Any], short: bool = False) -> str:
    """Every task's answer in a prediction row: ``female (P(female) 0.64, uncertain)  age 28.6
    (20-38)`` for the command's table, ``F? 0.64 · 29 (20-38)`` (``short``) for a picture."""
    texts = [text for task in TASKS.values() if (text := task.text(row, short)) is not None]
    return (" · " if short else "  ").join(texts)


def face_label(row: Mapping[str, Any]) -> str:
    """A face's label on an annotated picture: ``F? 0.64 · 29 (20-38)``."""
    return answers_text(row, short=True)
