"""Evaluation pipeline template (one per task, by namespace)."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
