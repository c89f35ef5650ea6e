"""Embeddings pipeline."""

from .pipeline import create_folder_pipeline, create_pipeline

__all__ = ["create_folder_pipeline", "create_pipeline"]
