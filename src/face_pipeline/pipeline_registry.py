"""Project pipelines."""

from __future__ import annotations

from kedro.pipeline import Pipeline

from face_pipeline.pipelines import ingestion, preprocessing


def register_pipelines() -> dict[str, Pipeline]:
    """Register the project's pipelines.

    Each stage has its own name and reads its inputs from the catalog, so
    ``kedro run --pipelines=preprocessing`` reuses the manifest that ingestion
    wrote. ``__default__`` runs every stage in order.
    """
    pipelines = {
        "ingestion": ingestion.create_pipeline(),
        "preprocessing": preprocessing.create_pipeline(),
    }
    pipelines["__default__"] = sum(pipelines.values(), Pipeline([]))
    return pipelines
