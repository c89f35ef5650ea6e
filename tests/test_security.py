"""What the project trusts and what it does not: model files, servers' addresses, credentials."""

from pathlib import Path

import keras
import pytest
import yaml

from face_pipeline.inference.loading import load_keras_model
from face_pipeline.ops.tracking import without_credentials

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def test_a_model_file_carrying_code_is_refused(tmp_path):
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Lambda(lambda x: x * 2)(inputs))  # a pickled Python function
    model.save(tmp_path / "lambda.keras")
    with pytest.raises(ValueError, match="safe_mode"):
        load_keras_model(tmp_path / "lambda.keras")


def test_servers_the_project_starts_listen_on_this_machine_only_by_default():
    from mlflow.models.cli import serve  # noqa: PLC0415

    assert {p.name: p.default for p in serve.params}["host"] == "127.0.0.1"  # mlflow models serve
    mlflow_conf = yaml.safe_load((PROJECT_ROOT / "conf/base/mlflow.yml").read_text())
    assert mlflow_conf["ui"]["host"] == "127.0.0.1"  # kedro mlflow ui
    assert "dev_addr" not in yaml.safe_load((PROJECT_ROOT / "mkdocs.yml").read_text().split("\nnav:")[0])


def test_credentials_in_a_tracking_uri_never_reach_a_message():
    assert without_credentials("https://user:pa55@mlflow.example.com:5000/x") == "https://mlflow.example.com:5000/x"
    assert without_credentials("sqlite:///mlflow.db") == "sqlite:///mlflow.db"
