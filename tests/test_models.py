import warnings
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from face_pipeline.config import ConfigError
from face_pipeline.labels import AGE_BINS
from face_pipeline.modelling import precision
from face_pipeline.modelling.builders import (
    ARCHITECTURES,
    ModelSettings,
    augmentation,
    build_model,
    compile_model,
    default_cnn,
    inference_model,
    seed_cnn,
)
from face_pipeline.modelling.folding import fold_batch_norm
from face_pipeline.modelling.precision import resolve_precision
from face_pipeline.scoring.losses import AgeDistributionLoss


def seed_parameter_count(size: int = 128, filters=(32, 64, 128, 256), dense: int = 256) -> int:
    """Parameters of the seed recipe, counted by hand: valid 3x3 convs, 2x2 pools, Flatten, Dense, 1 output."""
    total, channels, side = 0, 1, size
    for width in filters:
        total += width * (9 * channels + 1)
        channels, side = width, (side - 2) // 2
    flat = side * side * channels
    return total + dense * (flat + 1) + (dense + 1)


def test_seed_profile_is_the_seed_recipe():
    model = seed_cnn((128, 128, 1), "gender")
    assert model.count_params() == seed_parameter_count() == 2_747_649
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [c.filters for c in convs] == [32, 64, 128, 256]
    assert all(c.kernel_size == (3, 3) and c.activation.__name__ == "relu" for c in convs)
    assert sum(isinstance(layer, keras.layers.MaxPooling2D) for layer in model.layers) == 4
    assert any(isinstance(layer, keras.layers.Flatten) for layer in model.layers)
    assert any(isinstance(layer, keras.layers.Dropout) for layer in model.layers)
    assert not model.compiled  # builders leave compiling to training
    compile_model(model, "gender", 1e-3)
    assert isinstance(model.optimizer, keras.optimizers.Adam)
    assert model.loss == "binary_crossentropy"
    assert compile_model(seed_cnn((128, 128, 1), "age"), "age", 1e-3).loss == "mae"


@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
def test_outputs_have_the_right_shape_and_range(architecture):
    images = np.random.default_rng(0).integers(0, 256, (4, 64, 64, 1)).astype(np.uint8)
    gender = build_model(architecture, (64, 64, 1), "gender", filters=[8, 16, 16])
    probabilities = gender.predict(images, verbose=0)
    assert probabilities.shape == (4, 1)
    assert ((probabilities >= 0) & (probabilities <= 1)).all()
    age = build_model(architecture, (64, 64, 1), "age", filters=[8, 16, 16], label_stats={"mean": 40.0, "std": 5.0})
    years = age.predict(images, verbose=0)
    assert years.shape == (4, 1)
    assert np.abs(years - 40.0).max() < 20  # starts near the mean age, not near zero


def test_models_scale_uint8_inputs_themselves():
    model = default_cnn((32, 32, 1), "gender", filters=[8, 8])
    assert isinstance(model.layers[1], keras.layers.Rescaling)
    assert model.layers[1].scale == pytest.approx(1 / 255)


def test_default_is_far_cheaper_than_seed():
    # Early downsampling: the default profile has a quarter of the seed's parameters or fewer.
    assert default_cnn((128, 128, 1), "gender").count_params() * 4 < seed_cnn((128, 128, 1), "gender").count_params()


def test_stem_convs_add_3x3_convolutions_at_half_resolution():
    plain = default_cnn((128, 128, 1), "gender", stem_filters=16, filters=[8, 8])
    deeper = default_cnn((128, 128, 1), "gender", stem_filters=16, stem_convs=3, filters=[8, 8])
    added = [deeper.get_layer(f"stem_conv{index}") for index in (2, 3)]
    assert all(conv.kernel_size == (3, 3) and conv.output.shape[1:] == (64, 64, 16) for conv in added)
    # Two 16 -> 16 3x3 kernels without bias, each with four batch-norm vectors.
    assert deeper.count_params() - plain.count_params() == 2 * (9 * 16 * 16 + 4 * 16)
    assert deeper.get_layer("stem_pool").output.shape[1:] == (32, 32, 16)


def test_downsample_is_the_same_network_on_block_averaged_faces():
    images = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 1)).astype(np.uint8)
    full = default_cnn((32, 32, 1), "gender", stem_filters=4, filters=[8, 8], downsample=2)
    half = default_cnn((16, 16, 1), "gender", stem_filters=4, filters=[8, 8])
    assert full.input_shape == (None, 32, 32, 1) and full.count_params() == half.count_params()
    assert full.get_layer("stem").output.shape[1:3] == (8, 8)  # what a 16 px input gives
    half.set_weights(full.get_weights())
    averaged = images.reshape(3, 16, 2, 16, 2, 1).mean(axis=(2, 4))
    np.testing.assert_allclose(full.predict(images, verbose=0), half.predict(averaged, verbose=0), atol=1e-5)


def test_fractional_downsample_resizes_the_faces_inside_the_model(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (3, 40, 40, 1)).astype(np.uint8)
    full = default_cnn((40, 40, 1), "gender", stem_filters=4, filters=[8, 8], downsample=1.6)
    small = default_cnn((25, 25, 1), "gender", stem_filters=4, filters=[8, 8])
    assert full.get_layer("downsample").output.shape[1:] == (25, 25, 1)
    small.set_weights(full.get_weights())
    resized = tf.image.resize(images.astype("float32"), (25, 25), antialias=True).numpy()
    np.testing.assert_allclose(full.predict(images, verbose=0), small.predict(resized, verbose=0), atol=1e-4)
    full.save(tmp_path / "model.keras")
    reloaded = keras.models.load_model(tmp_path / "model.keras")
    np.testing.assert_allclose(reloaded.predict(images, verbose=0), full.predict(images, verbose=0), atol=1e-6)
    with pytest.raises(ValueError, match="fixed input size"):
        default_cnn((None, None, 1), "gender", stem_filters=4, filters=[8, 8], downsample=1.6)


def test_downsampled_network_augments_the_pooled_faces():
    # Augmenting after the pooling costs a quarter of augmenting the full-size faces.
    model = default_cnn((32, 32, 1), "gender", stem_filters=4, filters=[8, 8], downsample=2, augment={"zoom": 0.1})
    names = [layer.name for layer in model.layers]
    assert names.index("downsample") < names.index("augmentation")
    assert model.get_layer("augmentation").output.shape[1:] == (16, 16, 1)


def test_augmentation_changes_training_inputs_only():
    layer = augmentation(flip=True, rotation=0.05, zoom=0.1, translation=0.05, brightness=0.1, contrast=0.1, seed=1)
    images = np.random.default_rng(1).random((2, 32, 32, 1)).astype(np.float32)
    np.testing.assert_allclose(layer(images, training=False), images)
    assert not np.allclose(layer(images, training=True), images)


def test_unknown_options_are_refused():
    with pytest.raises(ValueError, match="architecture"):
        build_model("resnet999", (32, 32, 1), "gender")
    with pytest.raises(ValueError, match="task"):
        build_model("default_cnn", (32, 32, 1), "height")
    with pytest.raises(ValueError, match="loss"):
        build_model("default_cnn", (32, 32, 1), "age", loss="hinge")
    with pytest.raises(ValueError, match="precision"):
        build_model("default_cnn", (32, 32, 1), "age", precision="int8")


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"architecture": "default_cnn", "los": "mae"}, r"unknown key\(s\) 'los' in parameters 'age.model'"),
        ({"architecture": "resnet"}, r"age.model.architecture must be one of default_cnn, seed_cnn"),
        (
            {"architecture": "default_cnn", "default_cnn": {"filter": [8]}},
            r"'filter' in parameters 'age.model.default_cnn'.*known keys: batch_norm",
        ),
        (  # a block not chosen is checked too
            {"architecture": "default_cnn", "seed_cnn": {"dense": 8}},
            r"'dense' in parameters 'age.model.seed_cnn'",
        ),
        (
            {"architecture": "default_cnn", "augment": {"flip": True, "zooom": 0.1}},
            r"'zooom' in parameters 'age.model.augment'",
        ),
    ],
)
def test_model_settings_name_a_misspelt_key_with_its_block_and_file(params, message, monkeypatch):
    monkeypatch.chdir(Path(__file__).parents[1])  # files are named as from the project, where kedro runs
    with pytest.raises(ConfigError, match=message) as error:
        ModelSettings.from_params(params, "age.model")
    if "unknown" in str(error.value):
        assert "conf/base/parameters_train_age.yml" in str(error.value)


def test_model_settings_give_the_chosen_builder_its_block():
    settings = ModelSettings.from_params(
        {"architecture": "seed_cnn", "seed_cnn": {"filters": [4, 8]}, "default_cnn": {"filters": [2]}}, "age.model"
    )
    assert settings.builder_options() == {"filters": (4, 8)}


@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
@pytest.mark.parametrize(("task", "loss"), [("gender", None), ("age", "distribution")])
def test_mixed_precision_keeps_inputs_weights_and_outputs_in_float32(architecture, task, loss):
    before = keras.config.dtype_policy().name
    model = build_model(
        architecture, (32, 32, 1), task, precision="mixed_bfloat16", filters=[8, 8], loss=loss, augment={"zoom": 0.1}
    )
    assert keras.config.dtype_policy().name == before  # no global state left behind
    hidden = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D | keras.layers.Dense)]
    assert {layer.compute_dtype for layer in hidden if layer.name not in {task, "age_distribution"}} == {"bfloat16"}
    assert {variable.dtype for variable in model.weights} == {"float32"}
    for name in ("rescale", "augmentation"):
        assert model.get_layer(name).compute_dtype == "float32"
    outputs = model(np.zeros((2, 32, 32, 1), "uint8"))
    for output in outputs.values() if isinstance(outputs, dict) else [outputs]:
        assert output.dtype == "float32"


@pytest.mark.parametrize(
    ("cpu_bfloat16", "gpus", "expected"),
    [
        (True, [], "mixed_bfloat16"),
        (False, [], "float32"),
        (False, [(8, 0)], "mixed_bfloat16"),
        (True, [(7, 5)], "mixed_float16"),  # a Turing GPU: fast float16, no bfloat16
        (False, [(6, 1)], "float32"),  # older GPUs: no fast 16-bit arithmetic
    ],
)
def test_precision_auto_picks_bfloat16_only_where_it_runs_natively(monkeypatch, cpu_bfloat16, gpus, expected):
    monkeypatch.setattr(precision, "_cpu_has_bfloat16", lambda: cpu_bfloat16)
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind: list(gpus) if kind == "GPU" else [])
    monkeypatch.setattr(tf.config.experimental, "get_device_details", lambda gpu: {"compute_capability": gpu})
    assert resolve_precision("auto") == expected
    assert resolve_precision(None) == "float32"
    assert resolve_precision("mixed_bfloat16") == "mixed_bfloat16"


def test_age_distribution_loss_is_zero_only_at_the_target_distribution():
    loss = AgeDistributionLoss(sigma=2.0)
    ages = np.array([[30.0], [70.0]], dtype=np.float32)
    target = keras.ops.softmax(-0.5 * ((AGE_BINS - ages) / 2.0) ** 2, axis=-1)
    assert float(loss(ages, target)) == pytest.approx(0.0, abs=1e-4)
    shifted = keras.ops.softmax(-0.5 * ((AGE_BINS - ages - 5) / 2.0) ** 2, axis=-1)
    assert float(loss(ages, shifted)) > 1.0
    assert AgeDistributionLoss.from_config(loss.get_config()).sigma == 2.0


def test_distribution_head_trains_on_bins_and_serves_one_age(tmp_path):
    model = default_cnn(
        (32, 32, 1), "age", filters=[8, 8], loss="distribution", label_stats={"mean": 40.0, "std": 10.0}
    )
    assert set(model.output) == {"age", "age_distribution"}
    images = np.random.default_rng(2).integers(0, 256, (8, 32, 32, 1)).astype(np.uint8)
    outputs = model.predict(images, verbose=0)
    np.testing.assert_allclose(outputs["age_distribution"].sum(axis=1), 1.0, rtol=1e-5)
    assert np.abs(outputs["age"] - 40.0).max() < 1.0  # starts at the prior's mean
    served = inference_model(model, "age")
    assert set(served.output_names) == {"age", "age_distribution"}  # the range is read from the distribution
    np.testing.assert_allclose(_flat(served.predict(images, verbose=0)), _flat(outputs), rtol=1e-5)
    served.save(tmp_path / "age.keras")
    reloaded = keras.saving.load_model(tmp_path / "age.keras")
    np.testing.assert_allclose(_flat(reloaded.predict(images, verbose=0)), _flat(outputs), rtol=1e-5)
    with pytest.raises(ValueError, match="loss for gender must be one of"):
        default_cnn((32, 32, 1), "gender", filters=[8, 8], loss="distribution")


@pytest.mark.parametrize(("task", "loss"), [("gender", None), ("age", "distribution")])
def test_mirror_average_is_the_mean_over_the_face_and_its_mirror(tmp_path, task, loss):
    stats = {"mean": 40.0, "std": 10.0} if task == "age" else None
    model = default_cnn((24, 24, 1), task, filters=[8, 8], loss=loss, label_stats=stats)
    rng = np.random.default_rng(4)
    for variable in model.trainable_variables:  # as if trained: the age bins start out constant
        variable.assign(variable + rng.normal(0, 0.1, variable.shape).astype("float32"))
    compile_model(model, task, 1e-3, loss)
    model.optimizer.build(model.trainable_variables)
    plain = inference_model(model, task)
    averaged = inference_model(model, task, mirror_average=True)
    images = np.random.default_rng(3).integers(0, 256, (6, 24, 24, 1)).astype(np.uint8)
    expected = (_flat(plain.predict(images, verbose=0)) + _flat(plain.predict(images[:, :, ::-1], verbose=0))) / 2
    assert not np.allclose(_flat(plain.predict(images, verbose=0)), expected)
    np.testing.assert_allclose(_flat(averaged.predict(images, verbose=0)), expected, rtol=1e-5, atol=1e-5)
    # The same for a mirrored face: the prediction no longer depends on which way it looks.
    mirrored = _flat(averaged.predict(images[:, :, ::-1], verbose=0))
    np.testing.assert_allclose(mirrored, expected, rtol=1e-5, atol=1e-5)
    averaged.save(tmp_path / "model.keras")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reloaded = keras.saving.load_model(tmp_path / "model.keras")
    assert not [str(w.message) for w in caught if "Skipping variable loading" in str(w.message)]
    np.testing.assert_allclose(_flat(reloaded.predict(images, verbose=0)), expected, rtol=1e-5, atol=1e-5)
    assert reloaded.input_shape == model.input_shape


def _flat(outputs) -> np.ndarray:
    """A model's outputs as one array per image: a dict's entries side by side, by name."""
    if isinstance(outputs, dict):
        return np.concatenate(
            [np.asarray(outputs[name]).reshape(len(outputs[name]), -1) for name in sorted(outputs)], 1
        )
    return np.asarray(outputs).reshape(len(outputs), -1)


def _nested(model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _nested(layer)


@pytest.mark.parametrize(("task", "loss", "mirror_average"), [("gender", None, False), ("age", "distribution", True)])
def test_folded_batch_norms_give_the_same_outputs_with_fewer_layers(task, loss, mirror_average):
    stats = {"mean": 40.0, "std": 10.0} if task == "age" else None
    model = default_cnn((32, 32, 1), task, filters=[8, 16], stem_convs=2, loss=loss, label_stats=stats)
    rng = np.random.default_rng(5)
    for variable in model.variables:  # trained-looking weights and batch-norm statistics, all different
        if "variance" in variable.path:
            variable.assign(rng.uniform(0.2, 3.0, variable.shape).astype("float32"))
        else:
            variable.assign(variable + rng.normal(0, 0.1, variable.shape).astype("float32"))
    served = inference_model(model, task, mirror_average=mirror_average)
    folded = fold_batch_norm(served)
    images = np.random.default_rng(6).integers(0, 256, (8, 32, 32, 1)).astype(np.float32)
    expected = _flat(served.predict_on_batch(images))
    assert np.ptp(expected[:, 0]) > (0.01 if task == "gender" else 0.1)  # answers that a wrong fold would change
    np.testing.assert_allclose(_flat(folded.predict_on_batch(images)), expected, rtol=1e-4, atol=1e-6)
    norms = [layer for layer in _nested(served) if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(norms) == 6  # stem, stem_conv2 and two per stage: all follow a convolution
    assert not [layer for layer in _nested(folded) if isinstance(layer, keras.layers.BatchNormalization)]
    # The original is untouched and still predicts as before.
    np.testing.assert_array_equal(_flat(served.predict_on_batch(images)), expected)


def test_a_batch_norm_that_follows_no_convolution_is_kept():
    inputs = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(3, 3, activation="relu")(inputs)  # activation first: cannot fold
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.BatchNormalization()(keras.layers.Dense(4)(x))
    model = keras.Model(inputs, x)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.moving_mean.assign(np.full(layer.moving_mean.shape, 0.5, "float32"))
    folded = fold_batch_norm(model)
    assert sum(isinstance(layer, keras.layers.BatchNormalization) for layer in folded.layers) == 2
    images = np.random.default_rng(1).normal(size=(3, 6, 6, 2)).astype("float32")
    np.testing.assert_allclose(folded.predict_on_batch(images), model.predict_on_batch(images), rtol=1e-6)
