"""Embeddings pipeline: ``<split>_labels`` + raw images -> ``<split>_embeddings``, cached by content."""

from functools import partial, update_wrapper

from kedro.pipeline import Node, Pipeline

from face_pipeline.labels import SPLITS

from .nodes import embed_images, embedding_failures, embedding_summary


def _for(func, **fixed):
    return update_wrapper(partial(func, **fixed), func)


def create_pipeline(splits: tuple[str, ...] = SPLITS, **kwargs) -> Pipeline:
    """One node per split (``embed_<split>``), then the report of what was computed, reused and missing.

    Every split reads the shared cache ``embedding_cache`` and adds its new embeddings to it
    (``<split>_new_embeddings``, new partitions of the same folder).
    """
    return Pipeline(
        [
            *(
                Node(
                    _for(embed_images, split=split),
                    [
                        f"{split}_labels",
                        "raw_images",
                        "embedding_cache",
                        "params:embeddings",
                        "params:predict.detection",
                    ],
                    [f"{split}_embeddings", f"{split}_new_embeddings", f"{split}_embedding_summary"],
                    name=f"embed_{split}",
                )
                for split in splits
            ),
            Node(
                _for(embedding_failures, splits=splits),
                [f"{split}_embeddings" for split in splits],
                "embedding_failures",
                name="report_embedding_failures",
            ),
            Node(
                _for(embedding_summary, splits=splits),
                [f"{split}_embedding_summary" for split in splits],
                "embedding_summary",
                name="summarise_embeddings",
            ),
        ]
    )


def create_folder_pipeline(scope: str, images: str, splits: tuple[str, ...] = ("test",)) -> Pipeline:
    """The embeddings of another labelled folder's ``splits`` (the catalog entry ``images``), namespaced
    ``scope`` (``<scope>.test_embeddings``...), with the same cache and settings."""
    return Pipeline(
        create_pipeline(splits),
        namespace=scope,
        inputs={"raw_images": images, "embedding_cache": "embedding_cache"},
        parameters={"params:embeddings": "params:embeddings", "params:predict.detection": "params:predict.detection"},
    )
