"""Every parameter block is checked before a run: a misspelt key names itself, its block and its file."""

from __future__ import annotations

import copy

import pytest
from conftest import PROJECT_ROOT
from kedro.config import OmegaConfigLoader

from face_pipeline.config import ConfigError, parameter_files
from face_pipeline.hooks import check_parameters
from face_pipeline.parameters import IngestionSettings, PredictSettings, PreprocessingSettings


@pytest.fixture(scope="module")
def parameters() -> dict:
    """The project's own parameters, as Kedro merges them (base environment)."""
    from face_pipeline.settings import CONFIG_LOADER_ARGS  # noqa: PLC0415

    return OmegaConfigLoader(str(PROJECT_ROOT / "conf"), **CONFIG_LOADER_ARGS)["parameters"]


def misspelt(parameters: dict, path: str, value=1) -> dict:
    """``parameters`` with one more key at ``path`` (``gender.training.early_stoping_patience``)."""
    changed = copy.deepcopy(parameters)
    *blocks, key = path.split(".")
    target = changed
    for block in blocks:
        target = target[block]
    target[key] = value
    return changed


def test_the_project_parameters_pass(parameters):
    check_parameters(parameters)
    settings = IngestionSettings.from_params(parameters["ingestion"])
    assert settings.split.fractions["train"] == 0.8 and settings.labels.source == "filename"
    assert PreprocessingSettings.from_params(parameters["preprocessing"]).image.size == 128
    assert PredictSettings.from_params(parameters["predict"]).detection.mode == "auto"


@pytest.mark.parametrize(
    ("path", "block", "file"),
    [
        ("gender.training.early_stoping_patience", "gender.training", "parameters_train_gender.yml"),
        ("age.model.default_cnn.filter", "age.model.default_cnn", "parameters_train_age.yml"),
        ("ingestion.split.sed", "ingestion.split", "parameters_ingestion.yml"),
        ("ingestion.labels.manifest", "ingestion.labels", "parameters_ingestion.yml"),
        ("preprocessing.image.colour_mode", "preprocessing.image", "parameters_preprocessing.yml"),
        ("predict.detection.min_scor", "predict.detection", "parameters_predict.yml"),
        ("predict.detection.chip.sise", "predict.detection.chip", "parameters_predict.yml"),
        ("evaluation.min_group", "evaluation", "parameters_evaluation.yml"),
        ("external_preprocessing.worker", "external_preprocessing", "parameters_evaluation.yml"),
        ("finetuning.learningrate", "finetuning", "parameters_finetuning.yml"),
        ("registry.names.gendr", "registry.names", "parameters_predict.yml"),
    ],
)
def test_a_misspelt_key_names_itself_its_block_and_its_file(parameters, path, block, file, monkeypatch):
    monkeypatch.chdir(PROJECT_ROOT)  # files are named as from the project, where kedro runs
    key = path.rsplit(".", 1)[1]
    with pytest.raises(ConfigError) as error:
        check_parameters(misspelt(parameters, path))
    message = str(error.value)
    assert f"'{key}' in parameters '{block}'" in message
    assert f"conf/base/{file}" in message


def test_an_unknown_block_or_wrong_choice_is_refused(parameters):
    with pytest.raises(ConfigError, match=r"'gendr' in parameters '\(top level\)'"):
        check_parameters({**parameters, "gendr": {"training": {"epochs": 3}}})
    with pytest.raises(ConfigError, match=r"ingestion\.labels\.source must be one of filename, manifest"):
        check_parameters(misspelt(parameters, "ingestion.labels.source", "csv"))
    with pytest.raises(ConfigError, match=r"predict\.detection\.mode must be one of"):
        check_parameters(misspelt(parameters, "predict.detection.mode", "sometimes"))
    with pytest.raises(ConfigError, match=r"gender.task.target must be 'gender'"):
        check_parameters(misspelt(parameters, "gender.task.target", "age"))


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("gender.training.epochs", 0, r"gender\.training\.epochs must be at least 1; got 0"),
        ("age.training.learning_rate", 0.0, r"age\.training\.learning_rate must be positive; got 0\.0"),
        ("predict.detection.crop_border", -0.1, r"predict\.detection\.crop_border must be at least 0; got -0\.1"),
        ("predict.detection.context_tolerance", 1.5, r"context_tolerance must be at least 0 and below 1; got 1\.5"),
    ],
)
def test_a_value_out_of_range_is_refused_with_its_key(parameters, path, value, message):
    with pytest.raises(ConfigError, match=message):
        check_parameters(misspelt(parameters, path, value))


def test_keys_only_set_on_the_command_line_are_known(parameters):
    # `--params=predict.input_path=...` is read by the catalog; the predict block accepts it, and
    # still refuses a misspelt one.
    check_parameters(misspelt(parameters, "predict.input_path", "photos/"))
    with pytest.raises(ConfigError, match="'input_pth'"):
        check_parameters(misspelt(parameters, "predict.input_pth", "photos/"))


def test_parameter_files_are_found_by_their_top_level_key():
    found = parameter_files("gender.training", PROJECT_ROOT / "conf")
    assert str(PROJECT_ROOT / "conf/base/parameters_train_gender.yml") == found[0]
    assert str(PROJECT_ROOT / "conf/seed/parameters_train_gender.yml") in found
    assert not any("parameters_train_age" in path for path in found)
    assert parameter_files("nothing", PROJECT_ROOT / "conf") == []


@pytest.mark.parametrize("env", ["seed", "gpu", "team", "quick"])
def test_every_environment_passes(env, monkeypatch):
    from face_pipeline.settings import CONFIG_LOADER_ARGS  # noqa: PLC0415

    monkeypatch.setenv("FACE_PIPELINE_BUCKET", "bucket")  # the team environment reads it
    loader = OmegaConfigLoader(str(PROJECT_ROOT / "conf"), **{**CONFIG_LOADER_ARGS, "default_run_env": env})
    parameters = loader["parameters"]
    check_parameters(parameters)
    if env == "gpu":  # only the keys it names differ from base
        assert parameters["gender"]["training"]["time_budget_minutes"] is None
        assert parameters["gender"]["model"]["architecture"] == "default_cnn"
    if env == "quick":  # a first look: a sample, small networks, minutes; and it says so
        from face_pipeline.parameters import profile_name  # noqa: PLC0415

        assert parameters["ingestion"]["max_images"] and parameters["ingestion"]["split"]["seed"] == 42
        assert parameters["gender"]["training"]["time_budget_minutes"] <= 3
        assert profile_name(parameters) == "quick" and "first look" in parameters["run"]["note"]


def test_the_profile_is_the_architectures_unless_named():
    from face_pipeline.parameters import profile_name  # noqa: PLC0415

    seed = {"gender": {"model": {"architecture": "seed_cnn"}}, "age": {"model": {"architecture": "default_cnn"}}}
    assert profile_name(seed) == "default+seed"
    assert profile_name({**seed, "run": {"profile": None, "note": None}}) == "default+seed"
    assert profile_name({**seed, "run": {"profile": "quick"}}) == "quick"


def test_model_card_and_sample_settings_are_checked(parameters):
    with pytest.raises(ConfigError, match=r"model_card\.confidence must be positive and below 1; got 95"):
        check_parameters(misspelt(parameters, "model_card.confidence", 95))
    with pytest.raises(ConfigError, match=r"ingestion\.max_images must be at least 1; got 0"):
        check_parameters(misspelt(parameters, "ingestion.max_images", 0))
    with pytest.raises(ConfigError, match=r"'profil' in parameters 'run'"):
        check_parameters(misspelt(parameters, "run.profil", "quick"))


def test_a_block_built_as_kedro_builds_a_typed_parameter_is_the_checked_one(parameters):
    """Kedro's own parameter validation builds a dataclass with ``Settings(**block)``: the same
    object as ``from_params``, nested blocks read and values checked."""
    for settings in (IngestionSettings, PreprocessingSettings, PredictSettings):
        block = settings.__name__.removesuffix("Settings").lower()
        assert settings(**parameters[block]) == settings.from_params(parameters[block])
    assert PredictSettings(**parameters["predict"]).detection.mode == "auto"
    with pytest.raises(ConfigError, match=r"predict\.mode must be one of"):
        PredictSettings(**{**parameters["predict"], "mode": "slow"})
    with pytest.raises(ConfigError, match=r"ingestion\.labels\.source must be one of"):
        IngestionSettings(**{**parameters["ingestion"], "labels": {"source": "csv"}})
