"""A model or card that cannot be right never gives an answer: every card field is checked when the model is
loaded (one line naming the field, exit 2), the model's input size must be the card's, and a batch with a
score that is not a probability stops with one line naming the model (exit 1), never a label."""

import json

import keras
import numpy as np
import pytest
from helpers import minimal_card, pneumo, run_pneumo_here, write_png

from pneumo_utils import model


@pytest.fixture
def an_image(tmp_path):
    return write_png(tmp_path / "x-ray.png", np.random.default_rng(0).integers(0, 255, (40, 40), dtype=np.uint8))


def _save(network, path, card):
    card = {key: value for key, value in card.items() if key != "ood"}  # a new model: no gate of its own
    model.save_model(network, path, card)
    return path


def test_a_model_with_nan_weights_gives_no_label(tiny_model_path, tmp_path, an_image):
    network, card = model.load_model(tiny_model_path)
    network.get_layer("logit").set_weights([np.full_like(w, np.nan) for w in network.get_layer("logit").get_weights()])
    path = _save(network, tmp_path / "nan.keras", card)
    result = run_pneumo_here("predict", str(an_image), "--model", str(path), "--no-ood")
    assert result.returncode == 1 and "nan.keras: gave 1 of 1 scores that are not probabilities" in result.stderr
    assert "NORMAL" not in result.stdout and "PNEUMONIA" not in result.stdout
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_model_whose_output_is_not_a_probability_gives_no_label(tmp_path, an_image):
    inputs = keras.Input((32, 32, 1), name="image")
    pooled = keras.layers.GlobalAveragePooling2D()(keras.layers.Rescaling(1 / 255)(inputs))
    linear = keras.layers.Dense(1, name="logit", bias_initializer=keras.initializers.Constant(-83.0))(pooled)
    path = _save(keras.Model(inputs, linear), tmp_path / "linear.keras", minimal_card(32))
    result = run_pneumo_here("predict", str(an_image), "--model", str(path))
    assert result.returncode == 1 and "linear.keras" in result.stderr and "not a sigmoid" in result.stderr
    assert "NORMAL" not in result.stdout


@pytest.mark.parametrize(
    "field, value, named",
    [
        (("preprocessing", "clahe"), "yes", "preprocessing.clahe must be true or false"),
        (("preprocessing", "image_size"), 60000, "preprocessing.image_size must be an integer from 16 to 1024"),
        (("preprocessing", "image_size"), "32", "preprocessing.image_size must be"),
        (("preprocessing", "interpolation"), "cubic", "preprocessing.interpolation must be 'area'"),
        (("threshold", "value"), float("nan"), "threshold.value must be a number between 0 and 1"),
        (("threshold", "value"), 1.5, "threshold.value must be"),
        (("classes",), ["PNEUMONIA", "NORMAL"], "classes must be ['NORMAL', 'PNEUMONIA']"),
        (("validation_metrics", "calibration", "temperature"), -1, "temperature must be a positive number"),
    ],
)
def test_every_card_field_is_checked_when_the_model_is_loaded(tiny_model_path, tmp_path, an_image, field, value, named):
    path = tmp_path / "model.keras"
    path.write_bytes(tiny_model_path.read_bytes())
    card = json.loads(tiny_model_path.with_suffix(".json").read_text())
    place = card
    for key in field[:-1]:
        place = place.setdefault(key, {})
    place[field[-1]] = value
    path.with_suffix(".json").write_text(json.dumps(card))
    result = run_pneumo_here("predict", str(an_image), "--model", str(path))
    assert result.returncode == 2 and named in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not result.stdout


def test_a_model_that_takes_any_size_is_refused(tmp_path):
    inputs = keras.Input((None, None, 1), name="image")
    pooled = keras.layers.GlobalAveragePooling2D()(inputs)
    path = _save(
        keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(pooled)),
        tmp_path / "any.keras",
        minimal_card(64),
    )
    with pytest.raises(model.ModelLoadError, match="takes NonexNone images but its card says 64"):
        model.load_model(path)


def test_the_card_says_what_kind_of_model_it_describes(tiny_model_path):
    card = model.load_model(tiny_model_path)[1]
    assert card["kind"] == "CNN trained from scratch" and card["name"] == "tiny"  # the file it sits beside


def _image(tmp_path):
    import cv2
    import numpy as np

    path = tmp_path / "x.png"
    cv2.imwrite(str(path), np.random.default_rng(0).integers(0, 255, (40, 40), dtype=np.uint8))
    return path


@pytest.mark.parametrize(
    "card",
    [
        {},
        [],
        {"threshold": {"value": 0.5}},
        {"preprocessing": {"image_size": 32}},
        {"preprocessing": {"image_size": 32}, "threshold": {"value": "high"}},
    ],
)
def test_malformed_cards_are_one_line_and_exit_2(tmp_path, tiny_model_path, card):
    model_path = tmp_path / "m.keras"
    model_path.write_bytes(tiny_model_path.read_bytes())
    model_path.with_suffix(".json").write_text(json.dumps(card))
    result = pneumo("predict", _image(tmp_path), "--model", model_path)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "m.json: model card" in result.stderr


@pytest.mark.parametrize("kind", ["three_channels", "two_outputs", "unknown_layer"])
def test_odd_models_are_one_line_and_exit_2(tmp_path, kind):
    import zipfile

    import keras
    from helpers import minimal_card

    from pneumo_utils import model

    inputs = keras.Input((32, 32, 3 if kind == "three_channels" else 1))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(2, 3)(inputs))
    network = keras.Model(inputs, keras.layers.Dense(2 if kind == "two_outputs" else 1, activation="sigmoid")(x))
    path = model.save_model(network, tmp_path / "odd.keras", minimal_card(32))
    if kind == "unknown_layer":  # rename a layer class inside the archive to one Keras does not know
        with zipfile.ZipFile(path) as archive:
            files = {name: archive.read(name) for name in archive.namelist()}
        files["config.json"] = files["config.json"].replace(b'"Conv2D"', b'"NoSuchLayer"')
        with zipfile.ZipFile(path, "w") as archive:
            for name, payload in files.items():
                archive.writestr(name, payload)
    result = pneumo("predict", _image(tmp_path), "--model", path)
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "odd.keras" in result.stderr
    assert "\x1b[" not in result.stderr
