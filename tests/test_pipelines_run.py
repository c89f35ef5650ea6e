"""The ingestion and preprocessing pipelines run through Kedro on a generated folder."""

import base64
import json
import os
import re
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import CARD_SECTIONS, PROJECT_ROOT, kedro, run_in_process, use_small_networks
from fake_faces import encode, face_like, truncated_jpeg, write_utkface_folder
from PIL import Image

from face_pipeline.datasets.array_files import ShardedArrayDataset
from face_pipeline.pipeline_registry import register_pipelines
from face_pipeline.scoring.bootstrap import bootstrap_interval

pytestmark = pytest.mark.integration


def test_ingestion_then_preprocessing(project, tmp_path, monkeypatch):
    faces = tmp_path / "faces"
    labels = pd.DataFrame(write_utkface_folder(faces, 60, size=80))
    (faces / "7_0_0_20170101000000999.jpg.chip.jpg").write_bytes(truncated_jpeg())
    (faces / "not_a_utkface_name.png").write_bytes(encode(face_like(5, 50), "PNG"))
    env = {"FACE_DATA_DIR": str(faces)}

    run_in_process(project, "ingestion", monkeypatch, env=env)
    manifest = pd.read_parquet(project / "data/03_primary/face_manifest.parquet")
    rejected = pd.read_csv(project / "data/08_reporting/rejected_images.csv")
    summary = json.loads((project / "data/08_reporting/data_summary.json").read_text())
    assert sorted(manifest["image_id"]) == sorted(labels["image_id"])
    assert sorted(rejected["reason"]) == ["malformed file name", "truncated image"]
    assert summary["images"] == 60
    assert summary["rejected"] == 2

    run_in_process(project, "preprocessing", monkeypatch, env=env)
    model_input = project / "data/05_model_input"
    total = 0
    for split in ("train", "val", "test"):
        images = ShardedArrayDataset(filepath=str(model_input / f"{split}_images")).load()
        split_labels = pd.read_parquet(model_input / f"{split}_labels.parquet")
        assert images.shape == (len(split_labels), 128, 128, 1)
        assert images.dtype == np.uint8
        expected = manifest[manifest["split"] == split]
        assert split_labels["image_id"].tolist() == expected["image_id"].tolist()
        total += len(images)
    assert total == 60
    assert pd.read_csv(project / "data/08_reporting/preprocessing_failures.csv").empty


def whole_run(project: Path):
    """The MLflow run of the project's whole `kedro run`."""
    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["face_pipeline"], output_format="list")
    [run] = [run for run in runs if run.info.run_name.startswith("__default__ · ")]
    return run


def test_a_whole_run_is_tracked_in_mlflow(trained_project):
    output = (trained_project / "kedro_run.log").read_text()
    # Not a terminal: one whole log line per epoch.
    metrics = {
        "gender": r"accuracy=\S+ auc=\S+ loss=\S+ val_accuracy=\S+ val_auc=\S+ val_loss=\S+",
        "age": r"age_distribution_loss=\S+ .*\bmae=\S+ .*val_mae=\S+",
    }
    for task, pattern in metrics.items():
        assert re.search(rf"INFO +epoch 1: {pattern}", output), (task, output[-3000:])

    run = whole_run(trained_project)
    params, tags = run.data.params, run.data.tags
    # Named after what it did, so that runs side by side in the UI tell apart.
    assert (tags["mlflow.runName"], tags["profile"]) == ("__default__ · default · local", "default")
    assert run.data.metrics["run_minutes"] > 0
    assert params["gender.model.architecture"] == "default_cnn"
    assert params["gender.training.epochs"] == "1"
    assert params["preprocessing.image.size"] == "128"
    assert not [name for name in params if name.startswith("parameters.")]  # each parameter logged once
    assert len(tags["data.manifest_sha1"]) == 40
    assert tags["data.images"] == "48"
    # What each training decided at run time, beside the configured parameters.
    for task in ("gender", "age"):
        decided = json.loads((trained_project / f"data/08_reporting/{task}_training_decisions.json").read_text())
        assert params[f"{task}.decided.epochs_run"] == "1" == str(decided["epochs_run"])
        assert params[f"{task}.decided.precision"] == decided["precision"]
        assert params[f"{task}.decided.train_data_sha1"] == decided["train_data_sha1"]

    client = mlflow.MlflowClient()
    for metric in ("gender.loss", "gender.val_loss", "gender.val_accuracy", "gender.val_auc", "age.val_mae"):
        assert [m.step for m in client.get_metric_history(run.info.run_id, metric)] == [1], metric
    expected = {"gender.test_accuracy", "gender.test_roc_auc", "gender.test_log_loss", "age.test_mae"}
    expected |= {"gender.test_ece", "gender.test_ece_uncalibrated", "gender.test_accuracy_at_90_coverage"}
    expected |= {"age.test_range_coverage", "age.test_range_width"}
    assert expected <= set(run.data.metrics)
    # The calibration fitted on the validation split: saved beside the model, logged as params.
    for task, key in (("gender", "temperature"), ("age", "distribution_levels")):
        saved = json.loads((trained_project / f"data/06_models/{task}_calibration.json").read_text())
        assert params[f"{task}.calibrated.{key}"] == str(saved[key])
        report = json.loads((trained_project / f"data/08_reporting/{task}_metrics.json").read_text())
        assert report["calibration"] == saved
    assert float(params["gender.calibrated.temperature"]) > 0 and 0 < float(params["age.calibrated.level"]) < 1
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"gender_training_curves.png", "gender_metrics.json", "gender_confusion_matrix.png"} <= artifacts
    assert {"gender_reliability.png", "gender_risk_coverage.png", "gender_calibration.json"} <= artifacts
    assert {"age_predicted_vs_true.png", "age_ranges.png", "age_calibration.json"} <= artifacts
    assert (trained_project / "data/08_reporting/gender_training_curves.png").stat().st_size > 1000

    logged = mlflow.search_logged_models(experiment_ids=[run.info.experiment_id], output_format="list")
    [gender] = [model for model in logged if model.name == "gender_model"]
    assert gender.source_run_id == run.info.run_id
    model = mlflow.keras.load_model(gender.model_uri)
    probabilities = model.predict(np.zeros((3, 128, 128, 1), dtype=np.uint8), verbose=0)
    assert probabilities.shape == (3, 1)
    assert mlflow.pyfunc.load_model(gender.model_uri).predict(np.zeros((1, 128, 128, 1), np.uint8)).shape == (1, 1)
    # Its requirements name the versions installed.
    requirements = Path(mlflow.pyfunc.get_model_dependencies(gender.model_uri)).read_text().split()
    assert f"keras=={version('keras')}" in requirements and f"numpy=={version('numpy')}" in requirements
    versions = list((trained_project / "data/06_models/gender_model.keras").iterdir())
    assert len(versions) == 1  # one versioned native Keras file per run


def test_a_whole_run_writes_the_model_card(trained_project, tmp_path):
    run = whole_run(trained_project)
    client = mlflow.MlflowClient()
    # The card the run logged (the file on disk is rewritten by later runs, e.g. evaluate_folder).
    card = Path(client.download_artifacts(run.info.run_id, "model_card.md", str(tmp_path))).read_text()
    for part in CARD_SECTIONS:
        assert part in card, part
    assert run.info.run_id in card and "`__default__ · default · local`" in card
    commit = run.data.tags.get("git_commit")  # none for a project copy outside git
    assert (f"git commit `{commit}`" if commit else "not in a git work tree") in card
    summary = json.loads((trained_project / "data/08_reporting/data_summary.json").read_text())
    assert f"{summary['images']:,} usable images, {summary['rejected']:,} files rejected" in card
    reports = trained_project / "data/08_reporting"
    for task, metric, label, digits in (("gender", "accuracy", "accuracy", 3), ("age", "mae", "MAE (years)", 2)):
        report = json.loads((reports / f"{task}_metrics.json").read_text())
        table = pd.read_parquet(trained_project / f"data/07_model_output/{task}_test_predictions.parquet")
        per_face = (
            ((table["y_pred"] >= 0.5) == (table["y_true"] == 1)).to_numpy(float)
            if metric == "accuracy"
            else (table["y_pred"] - table["y_true"]).abs().to_numpy()
        )
        low, high = bootstrap_interval(per_face, resamples=1000, confidence=0.95, seed=0)
        assert low <= report[metric] <= high
        shown = f"| `{task}` | {label} | {report[metric]:.{digits}f} ({low:.{digits}f}–{high:.{digits}f}) | "
        assert shown + f"{report['images']:,} |" in card, (shown, card[:3000])
        decided = json.loads((reports / f"{task}_training_decisions.json").read_text())
        assert f"epochs_run `{decided['epochs_run']}`" in card
    # Packaged with the served model, as the artifact model_card.
    uri = (trained_project / "data/06_models/face_model_uri.txt").read_text()
    packaged = Path(mlflow.artifacts.download_artifacts(uri, dst_path=str(tmp_path / "face_model")))
    assert (packaged / "artifacts/model_card.md").read_text() == card


def test_evaluate_saved_models_on_another_folder(trained_project, tmp_path, monkeypatch):
    other = tmp_path / "other_faces"
    write_utkface_folder(other, 20, size=100, seed=9)
    (other / "broken.jpg").write_bytes(b"")
    reports = trained_project / "data/08_reporting"
    training_reports = {p.name: p.stat().st_mtime for p in reports.iterdir()}

    run_in_process(trained_project, "evaluate_folder", monkeypatch, env={"EVAL_DATA_DIR": str(other)})
    for task, metric in (("gender", "accuracy"), ("age", "mae")):
        report = json.loads((reports / f"external_{task}_metrics.json").read_text())
        assert report["images"] == 20
        assert report[metric] >= 0
        groups = pd.read_csv(reports / f"external_{task}_group_metrics.csv")
        assert set(groups["grouping"]) == {"age_band", "gender", "race"}
        assert (reports / f"external_{task}_worst_faces.png").stat().st_size > 1000
        answers = pd.read_parquet(trained_project / f"data/07_model_output/external_{task}_test_predictions.parquet")
        if task == "gender":  # calibrated, with the network's own probability beside it
            assert {"ece", "ece_uncalibrated"} <= set(report) and "gender_uncertain" in answers
            assert (reports / "external_gender_reliability.png").stat().st_size > 1000
        else:
            assert 0 <= report["range_coverage"] <= 1 and answers[["age_low", "age_high"]].notna().all().all()
        # The training run's own reports are left as they were.
        assert (reports / f"{task}_metrics.json").stat().st_mtime == training_reports[f"{task}_metrics.json"]
    assert pd.read_csv(reports / "external_rejected_images.csv")["reason"].tolist() == ["empty file"]

    mlflow.set_tracking_uri(f"sqlite:///{trained_project / 'mlflow.db'}")
    run = mlflow.search_runs(experiment_names=["face_pipeline"], order_by=["start_time DESC"], output_format="list")[0]
    assert run.data.tags["pipeline_names"] == "['evaluate_folder']"
    assert {"external.gender.test_accuracy", "external.age.test_mae"} <= set(run.data.metrics)
    # The model card, rewritten with the saved networks' figures on the folder.
    card = (reports / "model_card.md").read_text()
    external = json.loads((reports / "external_gender_metrics.json").read_text())
    assert f"The saved networks on `{other.name}`" in card and "Not measured" not in card
    assert f"| `gender` | accuracy | {external['accuracy']:.3f} (" in card
    assert "model_card.md" in {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id)}


def test_whole_run_logs_the_served_model(trained_project):
    uri = (trained_project / "data/06_models/face_model_uri.txt").read_text()
    mlflow.set_tracking_uri(f"sqlite:///{trained_project / 'mlflow.db'}")
    model = mlflow.pyfunc.load_model(uri)
    image = base64.b64encode(encode(face_like(1, 120))).decode()
    answer = model.predict(pd.DataFrame({"image": [image]}))
    assert answer["status"].tolist() == ["ok"]
    assert answer[["gender_uncertain", "age_low", "age_high"]].notna().all().all()
    assert {"age_low", "age_high", "gender_uncertain"} <= set(model.metadata.get_output_schema().input_names())


def test_predict_pipeline_on_a_folder_and_a_file(trained_project, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "face.png").write_bytes(encode(face_like(3, 150), "PNG"))
    (photos / "broken.jpg").write_bytes(b"not a photo")
    single = tmp_path / "one.jpg"
    single.write_bytes(encode(face_like(4, 90)))
    params = f"--params=predict.input_path={photos};{single},predict.annotate=true"
    kedro(trained_project, "run", "--pipelines=predict", params)
    table = pd.read_csv(trained_project / "data/07_model_output/predictions.csv")
    assert pd.read_parquet(trained_project / "data/07_model_output/predictions.parquet").shape == table.shape
    by_file = table.set_index(table["file"].str.rsplit("/", n=1).str[-1])
    assert by_file.loc["face.png", "status"] == "ok"
    assert by_file.loc["one.jpg", "status"] == "ok"
    assert by_file.loc["broken.jpg", "status"] == "error"
    assert 0 <= by_file.loc["face.png", "female_probability"] <= 1
    assert by_file.loc["face.png", "gender"] in {"male", "female"}
    assert by_file.loc["face.png", "age_low"] <= by_file.loc["face.png", "age_high"]
    assert by_file.loc["face.png", "gender_uncertain"] in (True, False)
    assert pd.isna(by_file.loc["broken.jpg", "age_low"])
    # predict.annotate: each readable photo, with its faces drawn, through the catalog
    annotated = trained_project / "data/08_reporting/annotated"
    assert sorted(path.name for path in annotated.iterdir()) == ["face.png", "one.jpg"]
    with Image.open(annotated / "face.png") as picture:
        assert picture.size == (150, 150)


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


def context_for(project, env=None, runtime_params=None):
    from kedro.framework.session import KedroSession  # noqa: PLC0415
    from kedro.framework.startup import bootstrap_project  # noqa: PLC0415

    bootstrap_project(project)
    with KedroSession.create(project_path=project, env=env, runtime_params=runtime_params) as session:
        return session.load_context()


def settings_for(project, env=None, runtime_params=None) -> dict:
    return context_for(project, env, runtime_params).params


def test_logged_networks_name_their_pinned_requirements(project):
    from face_pipeline.inference.packaging import pinned_requirements  # noqa: PLC0415

    catalog = context_for(project).config_loader["catalog"]
    assert catalog["{task}.mlflow_model"]["save_args"]["pip_requirements"] == pinned_requirements()


def test_environments_and_params_change_single_keys(project):
    shutil.copytree(PROJECT_ROOT / "conf" / "seed", project / "conf" / "seed")
    use_small_networks(project, epochs=3)
    local = settings_for(project, runtime_params={"gender": {"training": {"batch_size": 8}}})
    assert local["gender"]["training"]["epochs"] == 3  # conf/local
    assert local["gender"]["training"]["batch_size"] == 8  # --params
    base = yaml.safe_load((PROJECT_ROOT / "conf/base/parameters_train_gender.yml").read_text())
    assert local["gender"]["training"]["learning_rate"] == base["gender"]["training"]["learning_rate"]  # kept
    assert local["gender"]["model"]["default_cnn"]["filters"] == [8, 16]
    assert local["gender"]["model"]["default_cnn"]["batch_norm"] is True
    seed = settings_for(project, env="seed")
    assert seed["gender"]["model"]["architecture"] == "seed_cnn"
    assert seed["gender"]["model"]["augment"] is None
    assert seed["gender"]["model"]["seed_cnn"]["filters"] == [32, 64, 128, 256]
    assert seed["age"]["training"]["lr_schedule"] == "constant"
    # The seed recipe: plain losses, single-pass models, whatever the default profile uses.
    assert seed["age"]["model"]["loss"] == "mae"
    assert seed["gender"]["model"]["loss"] == "binary_crossentropy"
    assert not seed["age"]["model"]["mirror_average"] and not seed["gender"]["model"]["mirror_average"]


def test_finetune_on_another_population(trained_project, tmp_path, monkeypatch):
    folder = tmp_path / "new_population"
    folder.mkdir()
    rows = []
    for index in range(40):
        name = f"person_{index:03d}.png"
        (folder / name).write_bytes(encode(face_like(100 + index, 90), "PNG"))
        rows.append({"file": name, "age": 20 + index, "gender": "female" if index % 2 else "male"})
    pd.DataFrame(rows).to_csv(folder / "labels.csv", index=False)
    training = whole_run(trained_project)
    base = f"runs:/{training.info.run_id}/gender_model"

    params = {"finetuning": {"epochs": 2, "base_models": {"gender": base}}}
    run_in_process(trained_project, "finetune", monkeypatch, env={"FINETUNE_DATA_DIR": str(folder)}, params=params)
    reports = trained_project / "data/08_reporting"
    splits = {
        split: pd.read_parquet(trained_project / f"data/05_model_input/finetune_{split}_labels.parquet")
        for split in ("train", "val", "test")
    }
    assert sum(len(labels) for labels in splits.values()) == 40
    assert 4 <= len(splits["test"]) <= 8  # about 15 %
    for task in ("gender", "age"):
        own = json.loads((reports / f"finetune_{task}_metrics.json").read_text())
        before = json.loads((reports / f"finetune_base_{task}_metrics.json").read_text())
        original = json.loads((reports / f"finetune_original_{task}_metrics.json").read_text())
        assert own["images"] == before["images"] == len(splits["test"])
        assert original["images"] == json.loads((reports / f"{task}_metrics.json").read_text())["images"]
    assert len(list((trained_project / "data/06_models/finetuned_gender_model.keras").iterdir())) == 1

    run = mlflow.search_runs(experiment_names=["face_pipeline"], order_by=["start_time DESC"], output_format="list")[0]
    assert run.data.tags["pipeline_names"] == "['finetune']"
    assert run.data.tags["finetune.gender.base_run_id"] == training.info.run_id
    assert run.data.tags["finetune.age.base_model"] == "data/06_models/age_model.keras"
    expected = {"finetune.gender.test_accuracy", "finetune_base.gender.test_accuracy", "finetune_original.age.test_mae"}
    assert expected <= set(run.data.metrics)
    history = mlflow.MlflowClient().get_metric_history(run.info.run_id, "finetune.gender.val_loss")
    assert [m.step for m in history] == [1, 2]


def test_running_kedro_sends_no_telemetry_and_leaves_pyproject_alone(project):
    """The project declares its telemetry consent: kedro run as the README says, with no opt-out variables."""
    before = (project / "pyproject.toml").read_text()
    environment = {k: v for k, v in os.environ.items() if k not in ("KEDRO_DISABLE_TELEMETRY", "DO_NOT_TRACK")}
    kedro_cli = Path(sys.executable).with_name("kedro")
    result = subprocess.run(
        [str(kedro_cli), "registry", "list"],
        cwd=project,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "sending anonymous usage data" not in result.stdout + result.stderr
    assert (project / "pyproject.toml").read_text() == before


def test_mode_accurate_answers_the_same_on_every_surface(trained_project, tmp_path):
    """The whole run trained and saved an embedding head per task with its mix; the predict
    pipeline, the command line and the served model answer alike with mode accurate, and
    differently from mode fast (the head is mixed in)."""
    models = trained_project / "data/06_models"
    for task in ("gender", "age"):
        combination = json.loads((models / f"{task}_combination.json").read_text())
        assert 0 <= combination["head_weight"] <= 1
        assert (models / f"{task}_head.keras").is_dir()
        comparison = pd.read_csv(trained_project / f"data/08_reporting/{task}_head_comparison.csv")
        assert set(comparison["variant"]) == {"network", "head", "combined"}
    decisions = json.loads((trained_project / "data/08_reporting/gender_head_decisions.json").read_text())
    assert decisions["embeddings_computed"] + decisions["embeddings_reused"] == 48
    photo = tmp_path / "face.png"
    photo.write_bytes(encode(face_like(3, 150), "PNG"))

    kedro(trained_project, "run", "--pipelines=predict", f"--params=predict.input_path={photo},predict.mode=accurate")
    pipeline = pd.read_parquet(trained_project / "data/07_model_output/predictions.parquet")
    cli = [str(Path(sys.executable).with_name("face-pipeline")), "predict", str(photo), "--format", "json"]
    answers = {
        mode: json.loads(
            subprocess.run([*cli, "--mode", mode], cwd=trained_project, capture_output=True, check=True).stdout
        )
        for mode in ("fast", "accurate")
    }
    mlflow.set_tracking_uri(f"sqlite:///{trained_project / 'mlflow.db'}")
    uri = (models / "face_model_uri.txt").read_text()
    served = mlflow.pyfunc.load_model(uri, model_config={"mode": "accurate"})
    image = base64.b64encode(photo.read_bytes()).decode()
    served_answer = served.predict(pd.DataFrame({"image": [image]}))
    accurate = answers["accurate"][0]
    for column in ("female_probability", "age", "age_low", "age_high"):
        assert pipeline.loc[0, column] == pytest.approx(accurate[column], abs=1e-3), column
        assert served_answer.loc[0, column] == pytest.approx(accurate[column], abs=1e-3), column
    assert accurate["female_probability"] != pytest.approx(answers["fast"][0]["female_probability"], abs=1e-6)
