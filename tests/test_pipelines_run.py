"""The ingestion and preprocessing pipelines run through Kedro on a generated folder."""

import json

import mlflow
import numpy as np
import pandas as pd
import yaml
from conftest import kedro
from fake_faces import encode, face_like, truncated_jpeg, write_utkface_folder

from face_pipeline.pipeline_registry import register_pipelines


def test_ingestion_then_preprocessing(project, tmp_path):
    faces = tmp_path / "faces"
    labels = pd.DataFrame(write_utkface_folder(faces, 60, size=80))
    (faces / "7_0_0_20170101000000999.jpg.chip.jpg").write_bytes(truncated_jpeg())
    (faces / "not_a_utkface_name.png").write_bytes(encode(face_like(5, 50), "PNG"))
    env = {"FACE_DATA_DIR": str(faces)}

    kedro(project, "run", "--pipelines=ingestion", env=env)
    manifest = pd.read_parquet(project / "data/03_primary/face_manifest.parquet")
    rejected = pd.read_csv(project / "data/08_reporting/rejected_images.csv")
    summary = json.loads((project / "data/08_reporting/data_summary.json").read_text())
    assert sorted(manifest["image_id"]) == sorted(labels["image_id"])
    assert sorted(rejected["reason"]) == ["malformed file name", "truncated image"]
    assert summary["images"] == 60
    assert summary["rejected"] == 2

    kedro(project, "run", "--pipelines=preprocessing", env=env)
    model_input = project / "data/05_model_input"
    total = 0
    for split in ("train", "val", "test"):
        images = np.load(model_input / f"{split}_images.npy", mmap_mode="r")
        split_labels = pd.read_parquet(model_input / f"{split}_labels.parquet")
        assert images.shape == (len(split_labels), 128, 128, 1)
        assert images.dtype == np.uint8
        expected = manifest[manifest["split"] == split]
        assert split_labels["image_id"].tolist() == expected["image_id"].tolist()
        total += len(images)
    assert total == 60
    assert pd.read_csv(project / "data/08_reporting/preprocessing_failures.csv").empty


def use_small_networks(project, epochs: int = 2) -> None:
    """Tiny models for speed, overridden as a user would: conf/local replaces a task's block."""
    for task in ("gender", "age"):
        params = yaml.safe_load((project / f"conf/base/parameters_train_{task}.yml").read_text())
        params[task]["model"].update(stem_filters=8, filters=[8, 16])
        params[task]["training"]["epochs"] = epochs
        (project / f"conf/local/parameters_train_{task}.yml").write_text(yaml.safe_dump(params))


def test_train_gender_is_tracked_in_mlflow(project, tmp_path):
    faces = tmp_path / "faces"
    write_utkface_folder(faces, 48, size=64)
    use_small_networks(project)
    kedro(project, "run", "--pipelines=train_gender", env={"FACE_DATA_DIR": str(faces)})

    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["face_pipeline"], output_format="list")
    assert len(runs) == 1
    run = runs[0]
    params, tags = run.data.params, run.data.tags
    assert params["gender.model.architecture"] == "default_cnn"
    assert params["gender.training.epochs"] == "2"
    assert params["preprocessing.image.size"] == "128"
    assert len(tags["data.manifest_sha1"]) == 40
    assert tags["data.images"] == "48"

    client = mlflow.MlflowClient()
    for metric in ("gender.loss", "gender.val_loss", "gender.val_accuracy", "gender.val_auc", "gender.epoch_seconds"):
        assert [m.step for m in client.get_metric_history(run.info.run_id, metric)] == [1, 2], metric
    assert {"gender.test_accuracy", "gender.test_roc_auc", "gender.test_log_loss", "gender.test_f1"} <= set(
        run.data.metrics
    )
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"gender_training_curves.png", "gender_metrics.json", "gender_confusion_matrix.png"} <= artifacts
    assert (project / "data/08_reporting/gender_training_curves.png").stat().st_size > 1000

    [logged] = mlflow.search_logged_models(experiment_ids=[run.info.experiment_id], output_format="list")
    assert logged.source_run_id == run.info.run_id
    model = mlflow.keras.load_model(logged.model_uri)
    probabilities = model.predict(np.zeros((3, 128, 128, 1), dtype=np.uint8), verbose=0)
    assert probabilities.shape == (3, 1)
    assert mlflow.pyfunc.load_model(logged.model_uri).predict(np.zeros((1, 128, 128, 1), np.uint8)).shape == (1, 1)
    versions = list((project / "data/06_models/gender_model.keras").iterdir())
    assert len(versions) == 1  # one versioned native Keras file per run


def test_evaluate_saved_models_on_another_folder(project, tmp_path):
    write_utkface_folder(tmp_path / "faces", 48, size=64)
    other = tmp_path / "other_faces"
    write_utkface_folder(other, 20, size=100, seed=9)
    (other / "broken.jpg").write_bytes(b"")
    use_small_networks(project, epochs=1)
    env = {"FACE_DATA_DIR": str(tmp_path / "faces"), "EVAL_DATA_DIR": str(other)}
    kedro(project, "run", env=env)
    training_reports = {p.name: p.stat().st_mtime for p in (project / "data/08_reporting").iterdir()}

    kedro(project, "run", "--pipelines=evaluate_folder", env=env)
    reports = project / "data/08_reporting"
    for task, metric in (("gender", "accuracy"), ("age", "mae")):
        report = json.loads((reports / f"external_{task}_metrics.json").read_text())
        assert report["images"] == 20
        assert report[metric] >= 0
        groups = pd.read_csv(reports / f"external_{task}_group_metrics.csv")
        assert set(groups["grouping"]) == {"age_band", "gender", "race"}
        assert (reports / f"external_{task}_worst_faces.png").stat().st_size > 1000
        # The training run's own reports are left as they were.
        assert (reports / f"{task}_metrics.json").stat().st_mtime == training_reports[f"{task}_metrics.json"]
    assert pd.read_csv(reports / "external_rejected_images.csv")["reason"].tolist() == ["empty file"]

    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    run = mlflow.search_runs(experiment_names=["face_pipeline"], order_by=["start_time DESC"], output_format="list")[0]
    assert run.data.tags["pipeline_names"] == "['evaluate_folder']"
    assert {"external.gender.test_accuracy", "external.age.test_mae"} <= set(run.data.metrics)


def test_kedro_viz_export_lists_every_pipeline_and_node(project):
    kedro(project, "viz", "build", "--include-previews")
    api = project / "build" / "api"
    registered = register_pipelines()
    assert set(registered) <= {p["id"] for p in json.loads((api / "main").read_text())["pipelines"]}
    for name, pipeline in registered.items():
        exported = json.loads((api / "pipelines" / name).read_text())
        tasks = [n for n in exported["nodes"] if n["type"] == "task"]
        assert len(tasks) == len(pipeline.nodes), name
        exported_names = {".".join([*(n.get("modular_pipelines") or [])[-1:], n["name"]]) for n in tasks}
        assert exported_names == {node.name for node in pipeline.nodes}, name
    # The training namespaces are collapsible groups.
    groups = {n["name"] for n in json.loads((api / "main").read_text())["nodes"] if n["type"] == "modularPipeline"}
    assert {"gender", "age"} <= groups
