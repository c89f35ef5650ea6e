import keras
import numpy as np
import pytest

from face_pipeline.models import ARCHITECTURES, augmentation, build_model, default_cnn, seed_cnn


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
    assert isinstance(model.optimizer, keras.optimizers.Adam)
    assert model.loss == "binary_crossentropy"
    assert seed_cnn((128, 128, 1), "age").loss == "mae"


@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
def test_outputs_have_the_right_shape_and_range(architecture):
    images = np.random.default_rng(0).integers(0, 256, (4, 64, 64, 1)).astype(np.uint8)
    gender = build_model(architecture, (64, 64, 1), "gender", filters=[8, 16, 16])
    probabilities = gender.predict(images, verbose=0)
    assert probabilities.shape == (4, 1)
    assert ((probabilities >= 0) & (probabilities <= 1)).all()
    age = build_model(architecture, (64, 64, 1), "age", filters=[8, 16, 16], age_mean=40.0, age_std=5.0)
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
