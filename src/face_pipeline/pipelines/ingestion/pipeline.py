"""Ingestion pipeline: raw folder -> ``face_manifest`` + rejection report + summary."""

from kedro.pipeline import Node, Pipeline

from .nodes import assign_splits, inspect_images, label_images, select_usable_images, summarise_data


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(inspect_images, ["raw_images", "params:ingestion"], "image_inspection", name="inspect_images"),
            Node(
                label_images,
                ["image_inspection", "raw_images", "params:ingestion"],
                "labelled_images",
                name="label_images",
            ),
            Node(
                select_usable_images,
                ["labelled_images", "params:ingestion"],
                ["usable_images", "rejected_images"],
                name="select_usable_images",
            ),
            Node(assign_splits, ["usable_images", "params:ingestion"], "face_manifest", name="assign_splits"),
            Node(
                summarise_data,
                ["face_manifest", "rejected_images", "params:ingestion"],
                "data_summary",
                name="summarise_data",
            ),
        ]
    )
