"""Preprocessing pipeline: ``face_manifest`` + raw images -> arrays per split."""

from functools import partial, update_wrapper

from kedro.pipeline import Node, Pipeline

from face_pipeline.pipelines.ingestion.nodes import SPLITS

from .nodes import preprocess_split, report_failures


def _for_split(split: str):
    return update_wrapper(partial(preprocess_split, split=split), preprocess_split)


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            *(
                Node(
                    func=_for_split(split),
                    inputs=["face_manifest", "raw_images", "params:preprocessing"],
                    outputs=[f"{split}_images", f"{split}_labels", f"{split}_decode_failures"],
                    name=f"preprocess_{split}",
                )
                for split in SPLITS
            ),
            Node(
                func=report_failures,
                inputs=[f"{split}_decode_failures" for split in SPLITS],
                outputs="preprocessing_failures",
                name="report_preprocessing_failures",
            ),
        ]
    )
