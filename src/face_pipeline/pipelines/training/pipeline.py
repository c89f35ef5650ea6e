"""Training pipeline template, instantiated once per task with a Kedro namespace.

``create_pipeline(task="gender")`` gives nodes ``gender.train_model`` etc., parameters
``params:gender.*`` (``conf/base/parameters_train_gender.yml``) and outputs ``gender.model``,
``gender.calibration`` (fitted on the validation split), ``gender.metric_history``, the
embedding head ``gender.head`` and its mix with the network ``gender.combination``...; the
model-input arrays and the embeddings are shared by every task.
"""

from kedro.pipeline import Node, Pipeline

from .heads import fit_head_combination, train_head
from .nodes import fit_calibration, history_as_metrics, plot_training_curves, train_model

SHARED_INPUTS = {
    *("train_images", "train_labels", "val_images", "val_labels"),
    *("train_embeddings", "val_embeddings", "embedding_summary"),
}


def _identity(model):
    return model


def create_pipeline(task: str, **kwargs) -> Pipeline:
    template = Pipeline(
        [
            Node(
                train_model,
                inputs=[
                    "train_images",
                    "train_labels",
                    "val_images",
                    "val_labels",
                    "params:task",
                    "params:model",
                    "params:training",
                ],
                outputs=["model", "history", "training_decisions"],
                name="train_model",
            ),
            Node(
                fit_calibration,
                ["model", "val_images", "val_labels", "params:task", "params:calibration"],
                "calibration",
                name="fit_calibration",
            ),
            Node(history_as_metrics, "history", "metric_history", name="log_metric_history"),
            Node(_identity, "model", "mlflow_model", name="log_model_to_mlflow"),
            Node(plot_training_curves, ["history", "params:task"], "training_curves", name="plot_training_curves"),
            # The embedding head, and how much of its answer to mix into the network's (mode accurate).
            Node(
                train_head,
                [
                    "train_embeddings",
                    "train_labels",
                    "val_embeddings",
                    "val_labels",
                    "params:task",
                    "params:model",
                    "params:head",
                    "embedding_summary",
                ],
                ["head", "head_history", "head_decisions"],
                name="train_head",
            ),
            Node(history_as_metrics, "head_history", "head_metric_history", name="log_head_metric_history"),
            Node(_identity, "head", "mlflow_head", name="log_head_to_mlflow"),
            Node(
                fit_head_combination,
                ["model", "head", "val_images", "val_labels", "val_embeddings", "params:task", "params:calibration"],
                "combination",
                name="fit_head_combination",
            ),
        ]
    )
    return Pipeline(template, namespace=task, inputs=SHARED_INPUTS)
