"""The model builder, the model card and safe saving and loading."""

import json

import keras
import numpy as np
import pytest
from helpers import minimal_card

from pneumo_utils import model


def test_build_model_shapes_and_named_head():
    network = model.build_model(64, filters=(4, 8), dropout=0.3)
    assert network.input_shape == (None, 64, 64, 1)
    assert network.output_shape == (None, 1)
    assert network.get_layer("logit").output.shape[-1] == 1
    assert isinstance(network.get_layer("dropout"), keras.layers.Dropout)
    probabilities = network.predict(np.full((2, 64, 64, 1), 128, np.float32), verbose=0)
    assert ((probabilities > 0) & (probabilities < 1)).all()


def test_augmentation_only_in_training():
    network = model.build_model(48, filters=(4,), dropout=0.0)
    batch = np.random.default_rng(0).uniform(0, 255, (3, 48, 48, 1)).astype(np.float32)
    augmentation = network.get_layer("augmentation")
    np.testing.assert_array_equal(augmentation(batch, training=False), batch)
    assert not np.allclose(augmentation(batch, training=True), batch)


@pytest.mark.parametrize(("argument", "value"), [("image_size", 8), ("dropout", 1.0)])
def test_build_model_rejects_bad_settings(argument, value):
    settings = {"image_size": 64, "dropout": 0.5} | {argument: value}
    with pytest.raises(ValueError, match=argument):
        model.build_model(settings["image_size"], dropout=settings["dropout"])


def test_save_and_load_round_trip(tmp_path):
    network = model.build_model(32, filters=(4,), dropout=0.1)
    path = model.save_model(network, tmp_path / "m.keras", minimal_card(32, 0.3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "m.keras"]  # no temporary files left
    loaded, card = model.load_model(path)
    batch = np.random.default_rng(1).uniform(0, 255, (2, 32, 32, 1)).astype(np.float32)
    np.testing.assert_allclose(loaded.predict(batch, verbose=0), network.predict(batch, verbose=0), atol=1e-6)
    assert card["threshold"]["value"] == 0.3


def test_failed_save_keeps_the_previous_model(tmp_path):
    network = model.build_model(32, filters=(4,), dropout=0.1)
    path = model.save_model(network, tmp_path / "m.keras", {"version": 1})
    before = path.read_bytes()
    circular = {"version": 2}
    circular["self"] = circular  # a card that cannot be written as JSON
    with pytest.raises(ValueError, match="Circular"):
        model.save_model(model.build_model(32, filters=(8,), dropout=0.1), path, circular)
    assert path.read_bytes() == before
    assert json.loads(model.card_path(path).read_text()) == {"version": 1}
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.keras", None, "model file does not exist"),
        ("model.h5", b"x", "not a .keras model file"),
        ("corrupt.keras", b"not a zip at all", "not a Keras model archive"),
    ],
)
def test_load_model_errors_are_one_clear_line(tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
        model.card_path(path).write_text("{}")
    with pytest.raises(model.ModelLoadError, match=message) as error:
        model.load_model(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_card_records_provenance_and_preprocessing(tiny_model_path):
    card = json.loads(model.card_path(tiny_model_path).read_text())
    for key in (
        "preprocessing",
        "threshold",
        "split",
        "validation_metrics",
        "versions",
        "git_commit",
        "date",
        "intended_use",
        "limitations",
    ):
        assert key in card
    assert card["preprocessing"]["image_size"] == 32 and card["versions"]["keras"].startswith("3.")


def test_gamma_augmentation_and_standardization_survive_a_safe_mode_round_trip(tmp_path):
    network = model.build_model(32, filters=(4,), dropout=0.1, augmentation={"gamma": 0.4}, normalization="standardize")
    batch = np.random.default_rng(2).uniform(0, 255, (2, 32, 32, 1)).astype(np.float32)
    gamma = network.get_layer("augmentation").layers[-1]
    assert isinstance(gamma, model.RandomGamma)
    assert not np.allclose(gamma(batch, training=True), batch) and np.allclose(gamma(batch, training=False), batch)
    # a brighter copy of the same image gives the same output once standardized
    shifted = np.clip(batch * 0.5 + 60, 0, 255)
    standardize = network.get_layer("standardize")
    np.testing.assert_allclose(standardize(batch), standardize(shifted), atol=1e-4)
    loaded, _ = model.load_model(model.save_model(network, tmp_path / "g.keras", minimal_card(network.input_shape[1])))
    np.testing.assert_allclose(loaded.predict(batch, verbose=0), network.predict(batch, verbose=0), atol=1e-6)
