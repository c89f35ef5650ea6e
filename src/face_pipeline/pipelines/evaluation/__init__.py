"""Evaluation pipeline template (one per task, by namespace) and the folder evaluation."""

from .pipeline import create_card_pipeline, create_folder_pipeline, create_pipeline, create_scoped_pipeline

__all__ = ["create_card_pipeline", "create_folder_pipeline", "create_pipeline", "create_scoped_pipeline"]
