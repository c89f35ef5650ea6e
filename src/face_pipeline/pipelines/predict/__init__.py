"""Predict pipeline."""

from .pipeline import create_packaging_pipeline, create_pipeline, create_settings_pipeline

__all__ = ["create_packaging_pipeline", "create_pipeline", "create_settings_pipeline"]
