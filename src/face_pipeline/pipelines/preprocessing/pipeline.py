"""Preprocessing pipeline: ``face_manifest`` + raw images -> sharded arrays and labels per split."""

from functools import partial, update_wrapper

from kedro.pipeline import Node, Pipeline

from face_pipeline.labels import SPLITS

from .nodes import decode_split, report_failures, split_labels


def _for_split(func, split: str):
    return update_wrapper(partial(func, split=split), func)


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            *(
                node
                for split in SPLITS
                for node in (
                    # The images are decoded while the catalog writes their shards; the labels
                    # follow from the rows that the written array says it kept.
                    Node(
                        func=_for_split(decode_split, split),
                        inputs=["face_manifest", "raw_images", "params:preprocessing"],
                        outputs=f"{split}_images",
                        name=f"preprocess_{split}",
                    ),
                    Node(
                        func=_for_split(split_labels, split),
                        inputs=["face_manifest", f"{split}_images"],
                        outputs=[f"{split}_labels", f"{split}_decode_failures"],
                        name=f"label_{split}",
                    ),
                )
            ),
            Node(
                func=report_failures,
                inputs=[f"{split}_decode_failures" for split in SPLITS],
                outputs="preprocessing_failures",
                name="report_preprocessing_failures",
            ),
        ]
    )


def create_folder_pipeline(scope: str, images: str) -> Pipeline:
    """Ingestion and preprocessing of another labelled folder (the catalog entry ``images``).

    Everything is namespaced ``scope`` (``<scope>.face_manifest``, ``<scope>.test_images``...)
    and reads the parameters ``<scope>_ingestion`` and ``<scope>_preprocessing``.
    """
    from face_pipeline.pipelines import ingestion  # noqa: PLC0415 - ingestion imports nothing of this

    return Pipeline(
        ingestion.create_pipeline() + create_pipeline(),
        namespace=scope,
        inputs={"raw_images": images},
        parameters={
            "params:ingestion": f"params:{scope}_ingestion",
            "params:preprocessing": f"params:{scope}_preprocessing",
        },
    )
