"""Fine-tuning pipeline: the saved networks adapted to a labelled folder of another population.

The folder (``finetune_images``) goes through ingestion with its own split
(``finetune_ingestion``) and through detection and alignment as photos
(``finetune_preprocessing``). Each task's network then trains further on it
(``finetune_model``), and three evaluations make the change visible: the fine-tuned network
on the folder's test split (``finetune.<task>.*``), the base network on that split
(``finetune_base.<task>.*``) and the fine-tuned network on the original test split, where
forgetting would show (``finetune_original.<task>.*``).
"""

from kedro.pipeline import Node, Pipeline

from face_pipeline.pipelines import evaluation, preprocessing
from face_pipeline.pipelines.training.nodes import fit_calibration, history_as_metrics, plot_training_curves

from .nodes import finetune_model, tag_lineage


def _identity(model):
    return model


def _task(task: str) -> Pipeline:
    template = Pipeline(
        [
            Node(
                finetune_model,
                [
                    "base_model",
                    "train_images",
                    "train_labels",
                    "val_images",
                    "val_labels",
                    "params:task",
                    "params:finetuning",
                ],
                ["model", "history"],
                name="finetune_model",
            ),
            Node(
                fit_calibration,
                ["model", "val_images", "val_labels", "params:task", "params:calibration"],
                "calibration",
                name="fit_calibration",
            ),
            Node(tag_lineage, ["params:base_model_source", "params:task"], "lineage", name="tag_lineage"),
            Node(history_as_metrics, "history", "metric_history", name="log_metric_history"),
            Node(_identity, "model", "mlflow_model", name="log_model_to_mlflow"),
            Node(plot_training_curves, ["history", "params:task"], "training_curves", name="plot_training_curves"),
        ]
    )
    return Pipeline(
        template,
        namespace=f"finetune.{task}",
        inputs={
            "base_model": f"finetune_base_{task}_model",
            **{
                f"{split}_{kind}": f"finetune.{split}_{kind}"
                for split in ("train", "val")
                for kind in ("images", "labels")
            },
        },
        parameters={
            "params:task": f"params:{task}.task",
            "params:calibration": f"params:{task}.calibration",
            "params:finetuning": "params:finetuning",
            "params:base_model_source": f"params:finetuning.base_models.{task}",
        },
    )


def create_pipeline(tasks: tuple[str, ...], **kwargs) -> Pipeline:
    """Fine-tuning of each of ``tasks``' networks, with the three evaluations."""
    pipelines = [preprocessing.create_folder_pipeline("finetune", "finetune_images")]
    for task in tasks:
        pipelines += [
            _task(task),
            evaluation.create_scoped_pipeline(task, "finetune", test="finetune.test", model=f"finetune.{task}.model"),
            evaluation.create_scoped_pipeline(
                task, "finetune_base", test="finetune.test", model=f"finetune_base_{task}_model"
            ),
            evaluation.create_scoped_pipeline(task, "finetune_original", model=f"finetune.{task}.model"),
        ]
    return sum(pipelines[1:], pipelines[0])
