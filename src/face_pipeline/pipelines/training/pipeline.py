"""Training pipeline template, instantiated once per task with a Kedro namespace.

``create_pipeline(task="gender")`` gives nodes ``gender.train_model`` etc., parameters
``params:gender.*`` (``conf/base/parameters_train_gender.yml``) and outputs ``gender.model``,
``gender.calibration`` (fitted on the validation split), ``gender.metric_history``...; the
model-input arrays are shared by every task.
"""

from kedro.pipeline import Node, Pipeline

from .nodes import fit_calibration, history_as_metrics, plot_training_curves, train_model

SHARED_INPUTS = {"train_images", "train_labels", "val_images", "val_labels"}


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
        ]
    )
    return Pipeline(template, namespace=task, inputs=SHARED_INPUTS)
