"""Project pipelines."""

from __future__ import annotations

from kedro.pipeline import Pipeline

from face_pipeline.pipelines import ingestion, preprocessing, training


def register_pipelines() -> dict[str, Pipeline]:
    """Register the project's pipelines.

    Every name is a complete job on a fresh clone: it includes the stages it depends on.
    Add ``--only-missing-outputs`` to reuse what earlier runs already wrote, e.g.
    ``kedro run --pipelines=train_age --only-missing-outputs`` after ``train_gender``.
    """
    ingest = ingestion.create_pipeline()
    prepare = ingest + preprocessing.create_pipeline()
    train_gender = training.create_pipeline(task="gender")
    train_age = training.create_pipeline(task="age")
    return {
        "ingestion": ingest,
        "preprocessing": prepare,
        "train_gender": prepare + train_gender,
        "train_age": prepare + train_age,
        "__default__": prepare + train_gender + train_age,
    }
