"""Project pipelines."""

from __future__ import annotations

from kedro.pipeline import Pipeline

from face_pipeline.pipelines import embeddings, evaluation, finetuning, ingestion, predict, preprocessing, training
from face_pipeline.tasks import TASKS


def register_pipelines() -> dict[str, Pipeline]:
    """Register the project's pipelines.

    ``ingestion``, ``preprocessing``, ``embeddings``, ``train_<task>`` and ``__default__`` are complete jobs on a
    fresh clone with images: each includes the stages it depends on. ``evaluation``,
    ``evaluate_folder``, ``finetune``, ``predict`` and ``package_model`` start from the models a
    training run saved (and the test split, another labelled folder or photos, as they need).
    Add ``--only-missing-outputs`` to reuse what earlier runs already wrote, e.g.
    ``kedro run --pipelines=train_age --only-missing-outputs`` after ``train_gender``.
    """
    ingest = ingestion.create_pipeline()
    prepare = ingest + preprocessing.create_pipeline() + embeddings.create_pipeline()
    # One training and one evaluation pipeline per task (face_pipeline.tasks); the served model
    # bundles every task's network.
    train = {task: training.create_pipeline(task=task) for task in TASKS}
    evaluate = {task: evaluation.create_pipeline(task=task) for task in TASKS}
    settings = predict.create_settings_pipeline()
    trained_and_evaluated = sum((train[task] + evaluate[task] for task in TASKS), Pipeline([]))
    # The model card of the networks a pipeline evaluates (08_reporting/model_card.md, in the run
    # and packaged with face_model), from their reports.
    card = evaluation.create_card_pipeline
    return {
        "ingestion": ingest,
        "preprocessing": ingest + preprocessing.create_pipeline(),
        # dlib's face embedding of every labelled image, cached by content (for the embedding heads).
        "embeddings": prepare,
        **{f"train_{task}": prepare + train[task] + evaluate[task] + settings + card([task]) for task in TASKS},
        # Scores the latest saved models again, e.g. after changing the evaluation parameters.
        "evaluation": sum(evaluate.values(), Pipeline([])) + card(TASKS),
        # The saved models on another labelled folder (EVAL_DATA_DIR), no retraining; the card
        # rewritten with their figures there.
        "evaluate_folder": evaluation.create_folder_pipeline(tuple(TASKS)) + card(TASKS, folder_scope="external"),
        # The saved models trained further on another population's labelled folder (FINETUNE_DATA_DIR).
        "finetune": finetuning.create_pipeline(tuple(TASKS)),
        # Every task's answer for new photos (predict.input_path), with the saved models.
        "predict": predict.create_pipeline(),
        # Every task's network bundled with detection and preprocessing as the MLflow model face_model, with
        # the model card the last training or evaluation wrote.
        "package_model": settings + predict.create_packaging_pipeline(tuple(TASKS)),
        "__default__": prepare
        + trained_and_evaluated
        + settings
        + card(TASKS)
        + predict.create_packaging_pipeline(tuple(TASKS)),
    }
