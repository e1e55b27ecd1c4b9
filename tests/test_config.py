"""Settings: profiles, typed and frozen settings checked once, data folders, notebook parameters, and paths
recorded relative to the project."""

import pytest

from pneumo_utils import config
from pneumo_utils.runs import pipeline


def test_command_line_paths_are_taken_from_the_current_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(config.OUTPUT_DIR_ENV, raising=False)
    settings = config.load_config("full", output_dir="relout", data_dir="mydata")
    assert settings["output_dir"] == str(tmp_path / "relout")
    assert settings["data_dir"] == str(tmp_path / "mydata")
    assert settings["model_path"] == str(tmp_path / "relout" / "model" / "pneumonia_cnn.keras")


def test_a_named_data_folder_is_the_data_in_every_profile(tmp_path):
    settings = config.load_config("smoke", data_dir=str(tmp_path / "typo"))
    assert settings["synthetic"] is False and settings["data_dir"] == str(tmp_path / "typo")


def test_notebook_parameters_pass_through_and_unknown_names_are_refused():
    declared = pipeline.notebook_parameters(pipeline.NOTEBOOKS, config.NOTEBOOKS_DIR)
    assert declared["04_gradcam.ipynb"] == {"method"}
    profile_keys = set(config.load_config("smoke"))
    settings, extra = pipeline.split_settings({"epochs": 2, "method": "gradcam++"}, profile_keys, declared)
    assert settings == {"epochs": 2} and extra == {"method": "gradcam++"}
    with pytest.raises(config.SettingsError, match="unknown setting"):
        pipeline.split_settings({"methd": "x"}, profile_keys, declared)


def test_recorded_paths_are_relative_to_the_project():
    assert config.portable_path(config.PROJECT_ROOT / "runs" / "x") == "runs/x"
    assert not config.portable_path(config.PROJECT_ROOT.parent / "shared").startswith("/")


def test_settings_are_typed_frozen_and_checked_once():
    import dataclasses

    settings = config.load_config("smoke", epochs=3)
    assert isinstance(settings, config.Settings) and settings.epochs == 3 and settings["epochs"] == 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.epochs = 4
    assert settings.replace(seed=7).seed == 7 and settings.seed == config.load_config("smoke").seed
    for bad, message in (
        ({"epochs": "many"}, "epochs must be int"),
        ({"val_fraction": 0.7}, "val_fraction"),
        ({"optimizer": "sgd"}, "optimizer must be one of"),
        ({"filters": [8, -1]}, "filters"),
        ({"dropout": True}, "dropout must be float"),
    ):
        with pytest.raises(config.SettingsError, match=message):
            config.load_config("smoke", **bad)
