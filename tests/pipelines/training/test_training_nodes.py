import types
import warnings
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest

from face_pipeline.config import ConfigError
from face_pipeline.inference.batching import predict_in_batches
from face_pipeline.modelling.builders import build_model, compile_model
from face_pipeline.pipelines.training import backup, batch_norm, callbacks, run
from face_pipeline.pipelines.training import budget as time_budget
from face_pipeline.pipelines.training.data import make_dataset
from face_pipeline.pipelines.training.nodes import history_as_metrics, plot_training_curves, train_model

SIZE = 32
MODEL = {
    "architecture": "default_cnn",
    "loss": None,
    "augment": None,
    "default_cnn": {"stem_filters": 8, "filters": [8, 16], "convs_per_stage": 1, "batch_norm": False, "dense_units": 8},
}


def training_params(tmp_path=None, **overrides) -> dict:
    params = {
        "epochs": 1,
        "batch_size": 16,
        "learning_rate": 0.002,
        "lr_schedule": "cosine",
        "warmup_epochs": 0,
        "early_stopping_patience": 0,
        "seed": 3,
        "deterministic": False,
        "threads": None,
        "backup_dir": str(tmp_path / "backup") if tmp_path else None,
    }
    return {**params, **overrides}


def tiny_split(count: int, seed: int) -> tuple[np.ndarray, pd.DataFrame]:
    """Bright faces are 'female' and old, dark ones 'male' and young: learnable in an epoch or two."""
    rng = np.random.default_rng(seed)
    gender = rng.integers(0, 2, count)
    images = rng.integers(0, 60, (count, SIZE, SIZE, 1)) + gender[:, None, None, None] * 150
    labels = pd.DataFrame({"image_id": [f"{seed}_{i}" for i in range(count)], "gender": gender})
    labels["age"] = 20 + 40 * gender + rng.integers(0, 5, count)
    labels["race"] = pd.array([None] * count, dtype="Int8")
    return images.astype(np.uint8), labels


@pytest.fixture(scope="module")
def data():
    return (*tiny_split(64, 1), *tiny_split(32, 2))


@pytest.mark.parametrize("task", ["gender", "age"])
def test_one_epoch_per_task(data, task):
    model, history, _ = train_model(*data, {"target": task}, MODEL, training_params())
    assert isinstance(model, keras.Model)
    expected = {"loss", "val_loss", "epoch_seconds"} | (
        {"accuracy", "auc", "val_accuracy", "val_auc"} if task == "gender" else {"mae", "rmse", "val_mae", "val_rmse"}
    )
    assert expected <= set(history)
    assert all(len(values) == 1 for values in history.values())


def test_distribution_loss_trains_and_serves_the_age_with_its_distribution(data, caplog):
    model_options = {**MODEL, "loss": "distribution"}
    with caplog.at_level("INFO", logger="face_pipeline"):
        model, history, _ = train_model(*data, {"target": "age"}, model_options, training_params(epochs=2))
    epoch_lines = [record.getMessage() for record in caplog.records if record.getMessage().startswith("epoch ")]
    assert len(epoch_lines) == 2
    assert all(" val_mae=" in line and "val_age_mae" not in line for line in epoch_lines)
    assert set(model.output_names) == {"age", "age_distribution"}
    assert {"mae", "val_mae", "age_distribution_loss", "val_age_distribution_loss"} <= set(history)
    predictions = model.predict(data[2], verbose=0)
    assert predictions["age"].shape == (len(data[2]), 1) and predictions["age_distribution"].shape[1] == 121
    assert np.abs(predictions["age"].ravel() - data[3]["age"].to_numpy()).mean() == pytest.approx(
        history["val_mae"][-1], rel=1e-3
    )
    # The served age is its distribution's expectation, which the range is read from.
    np.testing.assert_allclose(predictions["age_distribution"] @ np.arange(121), predictions["age"].ravel(), rtol=1e-4)


def test_dataset_with_one_target_per_output():
    images = np.arange(6, dtype=np.uint8).reshape(6, 1, 1, 1)
    targets = {"gender": np.arange(6) % 2, "age": np.arange(6) * 10.0}
    (x, y), *_ = list(make_dataset(images, targets, 6, shuffle=True, seed=0))
    order = x.numpy().ravel()
    np.testing.assert_array_equal(y["gender"].numpy(), order % 2)
    np.testing.assert_array_equal(y["age"].numpy(), order * 10.0)


@pytest.mark.parametrize(
    ("precision", "task", "loss", "mirror_average"),
    [
        ("mixed_bfloat16", "age", "distribution", True),
        ("mixed_bfloat16", "gender", None, False),
        ("mixed_float16", "gender", None, True),  # with loss scaling
    ],
)
def test_mixed_precision_training_serves_a_float32_model(data, tmp_path, precision, task, loss, mirror_average):
    model_options = {**MODEL, "loss": loss, "mirror_average": mirror_average}
    model, history, _ = train_model(
        *data, {"target": task}, model_options, training_params(epochs=2, precision=precision)
    )
    assert len(history["val_loss"]) == 2
    policies = {layer.dtype_policy.name for layer in model._flatten_layers(include_self=False)}
    assert policies == {"float32"}
    model.save(tmp_path / "model.keras")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reloaded = keras.saving.load_model(tmp_path / "model.keras")
    assert not [str(w.message) for w in caught if "Skipping variable loading" in str(w.message)]
    predictions = predict_in_batches(reloaded, data[2])  # the served output (age: not its distribution)
    assert predictions.dtype == np.float32
    # The float32 copy predicts what the 16-bit network validated, up to bfloat16 rounding.
    truth = data[3][task].to_numpy()
    if task == "age":
        assert np.abs(predictions - truth).mean() == pytest.approx(history["val_mae"][-1], rel=0.05)
    else:
        assert ((predictions > 0.5) == truth).mean() == pytest.approx(history["val_accuracy"][-1], abs=0.05)


def test_training_learns_the_signal(data):
    _, history, _ = train_model(
        *data, {"target": "gender"}, MODEL, training_params(epochs=4, learning_rate=0.005, lr_schedule="constant")
    )
    assert history["val_accuracy"][-1] > 0.9


def test_metric_history_format_for_mlflow():
    metrics = history_as_metrics({"loss": [0.9, 0.5], "val_loss": [1.0, 0.7]})
    assert metrics["val_loss"] == [{"value": 1.0, "step": 1}, {"value": 0.7, "step": 2}]


def test_training_curves_plot():
    figure = plot_training_curves(
        {"loss": [0.9, 0.5], "val_loss": [1.0, 0.7], "mae": [9, 8], "val_mae": [10, 9], "epoch_seconds": [3, 3]},
        {"target": "age"},
    )
    assert [axis.get_title() for axis in figure.axes] == ["loss", "mae"]


def test_dataset_batches_stay_uint8_and_cover_every_image():
    images = np.arange(10 * 2 * 2 * 1, dtype=np.uint8).reshape(10, 2, 2, 1)
    targets = np.arange(10, dtype=np.float32)
    dataset = make_dataset(images, targets, 4, shuffle=True, seed=0)
    assert dataset.options().autotune.enabled is False  # it competes with training for the CPU
    batches = list(dataset)
    assert [len(x) for x, _ in batches] == [4, 4, 2]
    assert all(x.dtype == np.uint8 for x, _ in batches)
    seen = np.concatenate([y.numpy() for _, y in batches])
    assert sorted(seen) == list(range(10))
    for x, y in batches:  # each image still carries its own label
        np.testing.assert_array_equal(x.numpy()[:, 0, 0, 0], images[y.numpy().astype(int), 0, 0, 0])


class Interrupted(Exception):
    pass


def train_until_killed_after_second_epoch(data, params: dict, monkeypatch) -> None:
    original = callbacks.EpochLog.on_epoch_end

    def crash_after_second_epoch(self, epoch, logs=None):
        original(self, epoch, logs)
        if epoch == 1:
            raise Interrupted

    monkeypatch.setattr(callbacks.EpochLog, "on_epoch_end", crash_after_second_epoch)
    with pytest.raises(Interrupted):
        train_model(*data, {"target": "gender"}, MODEL, params)
    monkeypatch.setattr(callbacks.EpochLog, "on_epoch_end", original)


def test_an_interrupted_fit_resumes_from_its_last_finished_epoch(data, tmp_path, monkeypatch):
    params = training_params(tmp_path, epochs=4)
    train_until_killed_after_second_epoch(data, params, monkeypatch)

    # Another configuration does not pick up that backup (its weights would not fit)...
    other = {**MODEL, "default_cnn": {**MODEL["default_cnn"], "dense_units": 4}}
    _, history, _ = train_model(*data, {"target": "gender"}, other, {**params, "epochs": 1})
    assert len(history["loss"]) == 1
    # ...but the same one resumes: the crash came before the second epoch's backup, so epochs 2-4 run.
    _, history, _ = train_model(*data, {"target": "gender"}, MODEL, params)
    assert len(history["loss"]) == 3
    assert not any(path.is_file() for path in (tmp_path / "backup").rglob("*"))  # finished runs clean up


@pytest.mark.parametrize(("start_epoch", "epochs_run"), [(0, 2), (2, 4)])
def test_early_stopping_waits_for_its_start_epoch(data, monkeypatch, start_epoch, epochs_run):
    original = callbacks.EpochLog.on_epoch_end

    def worsening_validation(self, epoch, logs=None):
        original(self, epoch, logs)
        logs["val_loss"] = float(epoch)  # EarlyStopping, later in the list, sees this

    monkeypatch.setattr(callbacks.EpochLog, "on_epoch_end", worsening_validation)
    params = training_params(epochs=4, early_stopping_patience=1, early_stopping_start_epoch=start_epoch)
    _, history, _ = train_model(*data, {"target": "gender"}, MODEL, params)
    assert len(history["loss"]) == epochs_run


def test_deterministic_option_gives_identical_models(data):
    params = training_params(epochs=2, deterministic=True)
    first, *_ = train_model(*data, {"target": "age"}, MODEL, params)
    second, *_ = train_model(*data, {"target": "age"}, MODEL, params)
    for a, b in zip(first.get_weights(), second.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_batch_norm_recalibration_normalises_plain_training_images(data):
    images = data[0]
    model = build_model("default_cnn", images.shape[1:], "gender", filters=[8, 8], augment={"brightness": 0.5})
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    for norm in norms:  # statistics far from anything the images give
        norm.moving_mean.assign(norm.moving_mean + 50.0)
    assert batch_norm.recalibrate_batch_norm(model, images, count=len(images), seed=0, batch_size=16) == len(images)
    for norm in norms:
        outputs = keras.ops.convert_to_numpy(keras.Model(model.inputs, norm.output)(images, training=False))
        np.testing.assert_allclose(outputs.mean(axis=(0, 1, 2)), 0.0, atol=1e-3)
        assert np.all(outputs.std(axis=(0, 1, 2)) > 0.5) and np.all(outputs.std(axis=(0, 1, 2)) < 1.01)
    assert batch_norm.recalibrate_batch_norm(model, images, count=0, seed=0) == 0


@pytest.mark.parametrize("better", ["restored", "last"])
def test_after_re_estimation_the_better_of_restored_and_last_epoch_is_kept(data, better, caplog):
    images, labels, val_images, val_labels = data
    model = build_model("default_cnn", images.shape[1:], "gender", filters=[8, 8], dense_units=8)
    compile_model(model, "gender", 1e-3)
    untrained = model.get_weights()
    model.fit(images, labels["gender"].to_numpy("float32"), epochs=8, batch_size=16, verbose=0)
    trained = model.get_weights()
    val_data = make_dataset(val_images, val_labels["gender"].to_numpy("float32"), 16, shuffle=False, seed=0)
    # The restored epoch's weights are in the model; the last epoch's are early stopping's.
    restored, last = (trained, untrained) if better == "restored" else (untrained, trained)
    model.set_weights(restored)
    stopping = callbacks.EarlyStoppingKeepingLast()
    stopping.best_epoch, stopping.last_epoch, stopping.best_weights, stopping.last_weights = 6, 8, restored, last
    with caplog.at_level("INFO", logger=batch_norm.__name__):
        kept = batch_norm.finish_weights(model, images, val_data, 64, seed=0, stopping=stopping, epochs_run=9)
    assert kept.epoch == (7 if better == "restored" else 9)
    expected = [w for w, variable in zip(trained, model.weights, strict=True) if variable.trainable]
    for variable, value in zip(model.trainable_weights, expected, strict=True):
        np.testing.assert_array_equal(variable.numpy(), value)
    assert "Last epoch 9 against the restored epoch 7, both re-estimated" in caplog.text
    assert f"keeping epoch {kept.epoch}" in caplog.text
    # Statistics re-estimated for the weights kept, not left from the other candidate.
    statistics = [norm.moving_mean.numpy() for norm in batch_norm.batch_norms(model)]
    batch_norm.recalibrate_batch_norm(model, images, 64, seed=0)
    for norm, mean in zip(batch_norm.batch_norms(model), statistics, strict=True):
        np.testing.assert_allclose(norm.moving_mean.numpy(), mean, rtol=1e-5, atol=1e-6)


def test_training_compares_the_last_epoch_when_early_stopping_restored_an_earlier_one(data, monkeypatch, caplog):
    original = callbacks.EpochLog.on_epoch_end

    def worsening_validation(self, epoch, logs=None):
        original(self, epoch, logs)
        logs["val_loss"] = float(epoch)  # epoch 1 stays the best for early stopping

    monkeypatch.setattr(callbacks.EpochLog, "on_epoch_end", worsening_validation)
    seen = []
    original_end = callbacks.EarlyStoppingKeepingLast.on_epoch_end

    def record(self, epoch, logs=None):
        seen.append(self.model.get_weights())
        original_end(self, epoch, logs)

    monkeypatch.setattr(callbacks.EarlyStoppingKeepingLast, "on_epoch_end", record)
    model_options = {**MODEL, "default_cnn": {**MODEL["default_cnn"], "batch_norm": True}}
    params = training_params(epochs=3, early_stopping_patience=5, batch_norm_recalibration=64)
    with caplog.at_level("INFO", logger="face_pipeline"):
        model, *_ = train_model(*data, {"target": "gender"}, model_options, params)
    assert len(seen) == 3
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("Last epoch 3 against"))
    assert "the restored epoch 1" in line
    kept = int(line.rsplit("keeping epoch ", 1)[1].split()[0])
    kernel = model.get_layer("stem").kernel.numpy()
    stem_index = next(i for i, w in enumerate(model.weights) if w is model.get_layer("stem").kernel)
    np.testing.assert_array_equal(kernel, seen[kept - 1][stem_index])


@pytest.mark.parametrize(
    ("epochs", "seconds", "budget", "planned"),
    [(18, 100.0, 34, 18), (18, 340.0, 34, 6), (18, 5000.0, 34, 1), (18, 340.0, None, 18), (4, 0.0, 1, 4)],
)
def test_plan_epochs_fits_the_budget_and_never_adds_epochs(epochs, seconds, budget, planned):
    assert time_budget.plan_epochs(epochs, seconds, budget) == planned


@pytest.mark.parametrize(
    ("epochs", "full", "smaller", "budget", "planned", "probed"),
    [
        (18, 100.0, {}, 34, (1, 18), []),  # every epoch fits at full size
        (18, 150.0, {}, 34, (1, 13), []),  # most epochs fit at full size
        # 6 epochs at full size; 9 of 18 on 80 px faces (downsample 1.6): enough
        (18, 340.0, {1.6: 220.0, 2: 105.0}, 34, (1.6, 9), [1.6]),
        # 8 of 18 on 80 px faces: not enough; every epoch on 64 px faces
        (18, 340.0, {1.6: 250.0, 2: 105.0}, 34, (2, 18), [1.6, 2]),
        (18, 800.0, {1.6: 400.0, 2: 200.0}, 34, (2, 10), [1.6, 2]),  # not even that: epochs are cut
        # a downsampled network that is not faster changes nothing
        (18, 340.0, {1.6: 400.0, 2: 400.0}, 34, (1, 6), [1.6, 2]),
    ],
)
def test_plan_downsample_shrinks_the_faces_before_cutting_epochs(epochs, full, smaller, budget, planned, probed):
    timed = []

    def seconds(factor):
        timed.append(factor)
        return smaller[factor]

    assert time_budget.plan_downsample(epochs, full, seconds, budget) == planned
    # A smaller network is timed only while fewer than half the epochs fit with the last one.
    assert timed == probed


def test_measuring_a_step_times_training_steps(data):
    images, labels = data[0], data[1]
    probe = compile_model(
        build_model("default_cnn", images.shape[1:], "gender", **MODEL["default_cnn"]), "gender", 1e-3
    )
    dataset = make_dataset(images, labels["gender"].to_numpy(np.float32), 8, shuffle=False, seed=0)
    assert time_budget.measure_step_seconds(probe, dataset, probe_steps=4) > 0
    # One batch is timed again and again; no batch at all cannot be timed.
    assert time_budget.measure_step_seconds(probe, dataset.take(1)) > 0
    with pytest.raises(ValueError, match="data set is empty"):
        time_budget.measure_step_seconds(probe, dataset.take(0))


def fake_step_seconds(full: float):
    """A machine where a training step takes ``full`` seconds, ``full / factor**2`` with a downsampling network.

    The test data (64 training and 32 validation images, batches of 16) make an epoch 4 training
    steps and 2 validation steps, each a third of a training step.
    """

    def measure(probe, dataset, **kwargs):
        pooled = [layer.output.shape[1] for layer in probe.layers if layer.name == "downsample"]
        return full * (pooled[0] / probe.input_shape[1]) ** 2 if pooled else full

    return measure


def test_a_time_budget_plans_the_epochs_that_fit(data, tmp_path, monkeypatch, caplog):
    # 6 s per step: 28 s per epoch in a 1-minute budget, 2 of 6 epochs.
    monkeypatch.setattr(run, "measure_step_seconds", fake_step_seconds(6.0))
    params = training_params(
        tmp_path, epochs=6, time_budget_minutes=1, early_stopping_patience=1, early_stopping_start_epoch=3
    )
    with caplog.at_level("INFO", logger="face_pipeline"):
        model, history, _ = train_model(*data, {"target": "gender"}, MODEL, params)
    assert len(history["loss"]) == 2
    assert "2 of 6 epochs fit" in caplog.text
    # The cosine schedule decays over the planned epochs (2 epochs of 4 steps), not the configured 6.
    assert model.optimizer.learning_rate.numpy() == pytest.approx(0.002 * 0.01, rel=1e-3)
    assert not any(path.is_file() for path in (tmp_path / "backup").rglob("*"))  # the plan goes with the backup


def test_a_resumed_run_keeps_its_planned_epochs(data, tmp_path, monkeypatch):
    params = training_params(tmp_path, epochs=6, time_budget_minutes=2)
    monkeypatch.setattr(run, "measure_step_seconds", fake_step_seconds(6.0))  # 28 s epochs: 4 of 6
    train_until_killed_after_second_epoch(data, params, monkeypatch)
    # The machine now seems slower (1 epoch would fit), but the resumed run finishes its plan: epochs 2-4.
    monkeypatch.setattr(run, "measure_step_seconds", fake_step_seconds(30.0))
    _, history, _ = train_model(*data, {"target": "gender"}, MODEL, params)
    assert len(history["loss"]) == 3


def test_time_limit_stops_before_an_epoch_that_would_overrun(monkeypatch, caplog):
    clock = iter([0.0, 0.0, 40.0, 40.0, 90.0, 90.0, 120.0])  # epochs of 40, 50 and 30 s
    monkeypatch.setattr(callbacks.time, "perf_counter", lambda: next(clock))
    limit = callbacks.TimeLimit(seconds=130)
    model = types.SimpleNamespace(stop_training=False)
    limit.set_model(model)
    limit.on_train_begin()
    stopped = []
    for epoch in range(3):
        limit.on_epoch_begin(epoch)
        limit.on_epoch_end(epoch)
        stopped.append(model.stop_training)
    # After 40 s another 40 fits in 130; after 90 s another epoch as long as the longest (50) does not.
    assert stopped == [False, True, True]
    assert "Stopping after epoch 2" in caplog.text


@pytest.mark.parametrize(
    ("full_step", "downsample", "epochs", "log"),
    [
        # Epochs of (4 + 2 / 3) x 6 = 28 s: 2 of 5 fit in a minute; on 20 px faces (downsample
        # 1.6, 39 % of the step) all 5.
        (
            6.0,
            1.6,
            5,
            "2 of 5 epochs fit; faces downsampled by 1.6: 11 s, 5 of 5; training with downsample 1.6, 5 epochs",
        ),
        # Twice as slow: 2 of 5 on 20 px faces, 4 on 16 px faces (downsample 2).
        (
            12.0,
            2,
            4,
            "downsampled by 1.6: 22 s, 2 of 5; faces downsampled by 2: 14 s, 4 of 5; training with downsample 2",
        ),
        # On a fast machine the network stays the full-size one.
        (0.1, 1, 5, "5 of 5 epochs fit\n"),
    ],
)
def test_a_time_budget_trains_on_smaller_faces_on_a_slow_machine(
    data, monkeypatch, caplog, full_step, downsample, epochs, log
):
    monkeypatch.setattr(run, "measure_step_seconds", fake_step_seconds(full_step))
    model_options = {**MODEL, "default_cnn": {**MODEL["default_cnn"], "downsample": "auto"}}
    params = training_params(epochs=5, time_budget_minutes=1)
    with caplog.at_level("INFO", logger="face_pipeline"):
        model, history, _ = train_model(*data, {"target": "gender"}, model_options, params)
    assert len(history["loss"]) == epochs
    assert model.input_shape == (None, SIZE, SIZE, 1)
    assert log in caplog.text
    layers = {layer.name: layer for layer in model.layers}
    assert ("downsample" in layers) == (downsample != 1)
    if downsample != 1:
        assert layers["downsample"].output.shape[1] == round(SIZE / downsample)


def test_a_time_budget_plans_a_network_without_downsampling(data, monkeypatch, caplog):
    # The seed network has no downsample option; its probe is the network as configured.
    monkeypatch.setattr(run, "measure_step_seconds", fake_step_seconds(6.0))
    seed_options = {**MODEL, "architecture": "seed_cnn", "seed_cnn": {"filters": [4], "dense_units": 4}}
    with caplog.at_level("INFO", logger="face_pipeline"):
        _, history, _ = train_model(
            *data, {"target": "gender"}, seed_options, training_params(epochs=5, time_budget_minutes=1)
        )
    assert len(history["loss"]) == 2 and "2 of 5 epochs fit" in caplog.text


def test_a_budget_with_room_for_every_epoch_trains_the_same_model(data):
    params = training_params(epochs=2, deterministic=True)
    unlimited, *_ = train_model(*data, {"target": "age"}, MODEL, params)
    budgeted, *_ = train_model(*data, {"target": "age"}, MODEL, {**params, "time_budget_minutes": 60})
    for a, b in zip(unlimited.get_weights(), budgeted.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_misspelt_training_key_is_an_error_naming_key_block_and_file(data, monkeypatch):
    monkeypatch.chdir(Path(__file__).parents[3])  # files are named as from the project, where kedro runs
    params = {**training_params(), "early_stoping_patience": 3}
    with pytest.raises(ConfigError, match=r"'early_stoping_patience' in parameters 'gender\.training'") as error:
        train_model(*data, {"target": "gender"}, MODEL, params)
    assert "conf/base/parameters_train_gender.yml" in str(error.value)
    assert "early_stopping_patience" in str(error.value)  # the known keys are listed
    with pytest.raises(ConfigError, match="lr_schedule must be one of constant, cosine, plateau"):
        train_model(*data, {"target": "gender"}, MODEL, training_params(lr_schedule="cosin"))
    with pytest.raises(ValueError, match="task must be one of"):
        train_model(*data, {"target": "height"}, MODEL, training_params())


def test_a_re_split_data_set_of_the_same_size_does_not_resume_foreign_weights(data, tmp_path, monkeypatch):
    params = training_params(tmp_path, epochs=4)
    train_until_killed_after_second_epoch(data, params, monkeypatch)
    # The same number of images, the training and validation rows swapped around: a new run.
    train_images, train_labels, val_images, val_labels = data
    mixed_images = np.concatenate([train_images[:32], val_images])
    mixed_labels = pd.concat([train_labels[:32], val_labels], ignore_index=True)
    _, history, decisions = train_model(
        mixed_images, mixed_labels, train_images[32:], train_labels[32:], {"target": "gender"}, MODEL, params
    )
    assert len(history["loss"]) == 4 and decisions["resumed_from_backup"] is False
    # The original data still resumes its own backup.
    _, history, decisions = train_model(*data, {"target": "gender"}, MODEL, params)
    assert len(history["loss"]) == 3 and decisions["resumed_from_backup"] is True


def test_training_decisions_record_what_the_run_chose(data, monkeypatch):
    monkeypatch.setattr(run, "measure_step_seconds", fake_step_seconds(6.0))  # 28 s epochs: 2 of 5 in a minute
    params = training_params(epochs=5, time_budget_minutes=1, early_stopping_patience=3)
    _, history, decisions = train_model(*data, {"target": "gender"}, MODEL, params)
    assert decisions["planned_epochs"] == 2 and decisions["plan"] == "measured"
    assert decisions["epochs_run"] == len(history["loss"]) == 2
    assert decisions["epoch_kept"] in {1, 2} and decisions["epoch_kept_because"]
    assert decisions["precision"] == "float32" and decisions["threads"] >= 1
    assert decisions["distribution_strategy"] == "default" and decisions["workers"] == 1
    assert decisions["train_data_sha1"] == backup.data_fingerprint(data[0], data[1])
    # Another data set, another fingerprint: runs on different data tell apart.
    assert backup.data_fingerprint(data[2], data[3]) != decisions["train_data_sha1"]
