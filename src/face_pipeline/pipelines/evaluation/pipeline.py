"""Evaluation pipeline template: scores one task's model on the test split (namespace = task)."""

from collections.abc import Sequence
from functools import partial, update_wrapper

from kedro.pipeline import Node, Pipeline

from face_pipeline.tasks import get_task

from .card import card_headlines, write_model_card
from .card_summary import describe_run, summarise_folder_for_card, summarise_for_card
from .heads import compare_with_head
from .nodes import (
    breakdown,
    evaluate,
    metrics_for_mlflow,
    plot_group_metric,
    plot_task,
    plot_worst_faces,
    predict,
)

SHARED_INPUTS = {"test_images", "test_labels", "test_embeddings"}


def _by(grouping: str):
    return update_wrapper(partial(plot_group_metric, grouping=grouping), plot_group_metric)


def _task_plot(plot: str):
    return update_wrapper(partial(plot_task, plot=plot), plot_task)


def _plot_nodes(task: str) -> list[Node]:
    """The task's own plots (``Task.plots``) and the shared ones; each plot is its own dataset so
    kedro-viz can preview it."""
    task_plots = [
        Node(_task_plot(plot), ["test_predictions", "metrics", "params:task"], f"{plot}_plot", name=f"plot_{plot}")
        for plot in get_task(task).plots
    ]
    return [
        *task_plots,
        Node(_by("age_band"), ["group_metrics", "params:task"], "by_age_band_plot", name="plot_by_age_band"),
        Node(_by("race"), ["group_metrics", "params:task"], "by_race_plot", name="plot_by_race"),
        Node(
            plot_worst_faces,
            ["test_predictions", "test_images", "params:task"],
            "worst_faces_plot",
            name="plot_worst_faces",
        ),
    ]


def _head_nodes() -> list[Node]:
    """The network, the embedding head and their mix side by side (``<task>.head_comparison``)."""
    return [
        Node(
            compare_with_head,
            [
                "model",
                "calibration",
                "head",
                "combination",
                "test_images",
                "test_labels",
                "test_embeddings",
                "params:task",
                "params:evaluation",
            ],
            ["head_comparison", "head_metrics"],
            name="compare_with_head",
        )
    ]


def create_pipeline(task: str, with_head: bool = True, **kwargs) -> Pipeline:
    """``task``'s evaluation; ``with_head``: also its embedding head and the mix (``compare_with_head``)."""
    template = Pipeline(
        [
            Node(
                predict,
                ["model", "calibration", "test_images", "test_labels", "params:task"],
                "test_predictions",
                name="predict_test",
            ),
            Node(
                breakdown, ["test_predictions", "params:task", "params:evaluation"], "group_metrics", name="break_down"
            ),
            Node(
                evaluate,
                ["test_predictions", "group_metrics", "calibration", "params:task", "params:evaluation"],
                "metrics",
                name="evaluate",
            ),
            Node(metrics_for_mlflow, "metrics", "test_metrics", name="log_test_metrics"),
            *_plot_nodes(task),
            *(_head_nodes() if with_head else []),
        ]
    )
    shared = SHARED_INPUTS if with_head else SHARED_INPUTS - {"test_embeddings"}
    return Pipeline(template, namespace=task, inputs=shared, parameters={"params:evaluation": "params:evaluation"})


def create_scoped_pipeline(task: str, scope: str, test: str = "test", model: str | None = None) -> Pipeline:
    """``task``'s evaluation of ``model`` (default: the saved ``<task>.model``) with its calibration
    (the dataset named like the model, ``calibration`` for ``model``) on the split
    ``<test>_images`` / ``<test>_labels``, every output prefixed ``scope``: reports in
    ``08_reporting/<scope>_<task>_*``, MLflow metrics ``<scope>.<task>.test_*``."""
    with_head = model is None  # the saved network's own head; a fine-tuned network has none
    model = model or f"{task}.model"
    heads = {"test_embeddings": f"{test}_embeddings", f"{task}.head": f"{task}.head"} if with_head else {}
    return Pipeline(
        create_pipeline(task, with_head),
        namespace=scope,
        inputs={
            "test_images": f"{test}_images",
            "test_labels": f"{test}_labels",
            f"{task}.model": model,
            f"{task}.calibration": model.removesuffix("model") + "calibration",
            **heads,
            **({f"{task}.combination": f"{task}.combination"} if with_head else {}),
        },
        parameters={f"params:{task}.task": f"params:{task}.task", "params:evaluation": "params:evaluation"},
    )


def create_folder_pipeline(tasks: tuple[str, ...]) -> Pipeline:
    """Score the saved models on another labelled folder, without retraining.

    The folder (``external_images``) goes through the same ingestion as the training data, with
    every usable image in the test split, then through detection and alignment as the served
    model sees a photo (``external_preprocessing.detection``), then through each task's
    evaluation. Everything is namespaced ``external``: reports land in
    ``08_reporting/external_<task>_*`` and in MLflow as ``external.<task>.test_*``.
    """
    from face_pipeline.pipelines import embeddings, preprocessing  # noqa: PLC0415 - avoid an import cycle

    prepare = preprocessing.create_folder_pipeline("external", "external_images") + embeddings.create_folder_pipeline(
        "external", "external_images"
    )
    return sum((create_scoped_pipeline(task, "external", test="external.test") for task in tasks), prepare)


def create_card_pipeline(tasks: Sequence[str], folder_scope: str | None = None) -> Pipeline:
    """The model card (``model_card``, ``08_reporting/model_card.md``) of ``tasks``' networks.

    Each task's section (``<task>.summarise_for_card``) reads the reports its evaluation wrote and
    what its training decided: from this run where it ran them, else from the files of the run
    that did. With ``folder_scope`` (``external``, for ``evaluate_folder``) the card also has each
    task's figures on that folder (``<scope>.<task>.summarise_for_card``).
    """
    sections = [
        Node(
            summarise_for_card,
            [
                *(f"{task}.{name}" for name in ("metrics", "group_metrics", "test_predictions", "head_comparison")),
                *(f"{task}.{name}" for name in ("training_decisions", "head_decisions", "combination")),
                f"params:{task}.task",
                f"params:{task}.model",
                "params:evaluation",
                "params:model_card",
            ],
            f"{task}.card_section",
            name="summarise_for_card",
            namespace=task,
        )
        for task in tasks
    ]
    if folder_scope:
        sections += [
            Node(
                summarise_folder_for_card,
                [
                    *(f"{folder_scope}.{task}.{name}" for name in ("metrics", "group_metrics", "test_predictions")),
                    f"{folder_scope}.{task}.head_comparison",
                    f"{folder_scope}.data_summary",
                    f"params:{task}.task",
                    f"params:{folder_scope}_ingestion",
                    "params:evaluation",
                    "params:model_card",
                ],
                f"{folder_scope}.{task}.card_section",
                name="summarise_for_card",
                namespace=f"{folder_scope}.{task}",
            )
            for task in tasks
        ]
    return Pipeline(
        [
            *sections,
            Node(
                describe_run,
                {"run": "params:run", **{task: f"params:{task}.model" for task in tasks}},
                "run_details",
                name="describe_run",
            ),
            Node(
                write_model_card,
                [
                    "data_summary",
                    "embedding_summary",
                    "params:preprocessing",
                    "run_details",
                    "params:model_card",
                    *(section.outputs[0] for section in sections),
                ],
                "model_card",
                name="write_model_card",
            ),
            Node(
                card_headlines,
                ["run_details", *(section.outputs[0] for section in sections)],
                "model_card_headlines",
                name="card_headlines",
            ),
        ]
    )
