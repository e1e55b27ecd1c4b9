"""Grad-CAM: every model type, batched equals per image, no NaN, and the quantitative checks."""

import cv2
import keras
import numpy as np
import pandas as pd
import pytest
from keras import layers

from pneumo_utils import data, model, plots
from pneumo_utils.explain import cam, overlays, picking, regions
from pneumo_utils.explain import checks as cam_checks

SIZE = 32


def _images(count=5, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (count, SIZE, SIZE)).astype(np.float32)


def _sequential_from_file(tmp_path):
    network = keras.Sequential(
        [
            keras.Input((SIZE, SIZE, 1)),
            layers.Rescaling(1 / 255),
            layers.Conv2D(4, 3, activation="relu"),
            layers.Conv2D(6, 3, activation="relu", name="last_conv"),
            layers.GlobalAveragePooling2D(),
            layers.Dense(1, activation="sigmoid"),
        ]
    )
    network.save(tmp_path / "sequential.keras")
    return keras.models.load_model(tmp_path / "sequential.keras")


def _nested_backbone():
    backbone_input = keras.Input((SIZE, SIZE, 1))
    x = layers.Conv2D(4, 3, activation="relu")(backbone_input)
    x = layers.Conv2D(6, 3, activation="relu", name="backbone_last_conv")(x)
    backbone = keras.Model(backbone_input, x, name="backbone")
    inputs = keras.Input((SIZE, SIZE, 1))
    x = layers.Rescaling(1 / 255)(inputs)
    x = backbone(x)
    x = layers.GlobalAveragePooling2D()(x)
    logit = layers.Dense(1, name="logit")(x)
    return keras.Model(inputs, layers.Activation("sigmoid")(logit))


def _branched():
    inputs = keras.Input((SIZE, SIZE, 1))
    x = layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    y = layers.Conv2D(4, 3, padding="same", activation="relu", name="branch_conv")(x)
    x = layers.Add()([x, y])
    logit = layers.Dense(1, name="logit")(layers.GlobalAveragePooling2D()(x))
    return keras.Model(inputs, layers.Activation("sigmoid")(logit))


@pytest.fixture(params=["project", "sequential_from_keras_file", "nested_backbone", "branched"])
def any_model(request, tmp_path):
    keras.utils.set_random_seed(0)
    return {
        "project": lambda: model.build_model(SIZE, filters=(4, 8), dropout=0.2),
        "sequential_from_keras_file": lambda: _sequential_from_file(tmp_path),
        "nested_backbone": _nested_backbone,
        "branched": _branched,
    }[request.param]()


@pytest.mark.parametrize("method", ["gradcam", "gradcam++"])
def test_maps_have_image_shape_range_and_match_the_model(any_model, method):
    images = _images()
    explainer = cam.CamExplainer(any_model)
    for target_class in (0, 1):
        cams, probabilities = explainer.explain(images, target_class=target_class, method=method)
        assert cams.shape == (5, SIZE, SIZE) and cams.dtype == np.float32
        assert np.isfinite(cams).all() and cams.min() >= 0 and cams.max() <= 1
        np.testing.assert_allclose(
            probabilities, any_model.predict(images[..., None], verbose=0).reshape(-1), atol=1e-5
        )


def test_the_target_layer_is_found_in_nested_models_and_can_be_named():
    network = _nested_backbone()
    assert cam.last_conv_layer_name(network) == "backbone_last_conv"
    with pytest.raises(ValueError, match="no layer named 'nope'"):
        cam.CamExplainer(network, "nope")


@pytest.mark.slow
def test_constant_image_gives_no_nan():
    network = model.build_model(SIZE, filters=(4,), dropout=0.0)
    for method in ("gradcam", "gradcam++"):
        cams = cam.gradcam(network, np.full((2, SIZE, SIZE), 0.0, np.float32), method=method)
        assert np.isfinite(cams).all()


def test_batched_equals_per_image_and_the_keras_io_recipe():
    keras.utils.set_random_seed(1)
    network = model.build_model(SIZE, filters=(4, 8), dropout=0.2)
    images = _images(7, seed=3)
    explainer = cam.CamExplainer(network)
    batched, _ = explainer.explain(images, batch_size=7, upsample=False)
    one_by_one = np.concatenate(
        [explainer.explain(images[i : i + 1], batch_size=1, upsample=False)[0] for i in range(len(images))]
    )
    reference = np.stack(
        [cam.keras_io_gradcam(images[i : i + 1, ..., None], network, explainer.layer_name) for i in range(len(images))]
    )
    np.testing.assert_allclose(batched, one_by_one, atol=1e-5)
    np.testing.assert_allclose(batched, reference, atol=1e-4)


def test_mass_shares_add_up():
    cams = np.zeros((1, 20, 20), np.float32)
    cams[0, 0, 0] = 1.0  # all mass in a corner
    shares = regions.mass_shares(cams)
    assert shares["corners"][0] == 1.0 and shares["border"][0] == 1.0 and shares["central"][0] == 0.0
    assert np.isnan(regions.mass_shares(np.zeros((1, 20, 20)))["central"][0])


@pytest.mark.slow
def test_randomization_drops_the_correlation(tiny_model_path, synthetic_root):
    from pneumo_utils.images import Preprocessing

    network, card = model.load_model(tiny_model_path)
    rows = data.index_dataset(synthetic_root).head(12)
    images, _, _ = data.load_split(rows, Preprocessing.from_dict(card["preprocessing"]))
    same = cam_checks.spearman_per_image(cam.gradcam(network, images), cam.gradcam(network, images))
    check = cam_checks.randomization_check(network, images)
    assert np.nanmean(same) > 0.99
    assert check["spearman_mean"] < 0.9 and check["images"] == 12


@pytest.mark.slow
def test_deletion_and_insertion_scores_are_probabilities(tiny_model_path, synthetic_root):
    from pneumo_utils.images import Preprocessing

    network, card = model.load_model(tiny_model_path)
    rows = data.index_dataset(synthetic_root).head(3)
    images, _, _ = data.load_split(rows, Preprocessing.from_dict(card["preprocessing"]))
    result = cam_checks.deletion_insertion(network, images, cam.gradcam(network, images), steps=4)
    for key in ("deletion_auc", "insertion_auc", "deletion_auc_random", "insertion_auc_random"):
        assert 0.0 <= result[key] <= 1.0


def test_example_pickers_sort_outcomes_and_keep_only_correct_rows():

    frame = pd.DataFrame(
        {
            "target": [1, 1, 0, 0, 0],
            "probability": [0.9, 0.2, 0.1, 0.7, 0.3],
            "label": ["PNEUMONIA", "PNEUMONIA", "NORMAL", "NORMAL", "NORMAL"],
        }
    )
    picked = picking.pick_examples(frame, threshold=0.5, per_group=5)
    assert sorted(picked["outcome"]) == sorted(
        ["PNEUMONIA, correct", "PNEUMONIA, missed", "NORMAL, correct", "NORMAL, correct", "NORMAL, false alarm"]
    )
    correct = picking.correct_by_class(frame, threshold=0.5, per_class=1)
    assert {label: len(rows) for label, rows in correct.items()} == {"NORMAL": 1, "PNEUMONIA": 1}
    assert correct["PNEUMONIA"]["probability"].tolist() == [0.9]
    assert correct["NORMAL"]["probability"].iloc[0] in (0.1, 0.3)


def test_examples_are_spread_over_the_probabilities_not_drawn_at_random():

    # 40 correct pneumonias from p = 0.51 to 0.99: four examples show the lowest, the highest and two between
    probabilities = np.linspace(0.51, 0.99, 40)
    frame = pd.DataFrame({"target": 1, "probability": probabilities[::-1], "label": "PNEUMONIA"})
    picked = picking.pick_examples(frame, threshold=0.5, per_group=4, seed=3)
    assert picked["probability"].round(4).tolist() == [0.51, 0.67, 0.83, 0.99]
    assert picking.pick_examples(frame, threshold=0.5, per_group=4, seed=3).equals(picked)  # reproducible
    drawn = picking.correct_by_class(frame, threshold=0.5, per_class=4, seed=3)["PNEUMONIA"]["probability"]
    assert drawn.tolist() != [0.51, 0.67, 0.83, 0.99]  # the checks' sample is random, not the figure's spread
    with pytest.raises(ValueError, match="at least 1"):
        picking.spread_over_probability(frame, 0)


@pytest.mark.slow
def test_gradcam_of_an_ensemble_is_the_mean_of_its_members_maps(two_members):

    ensemble = model.build_ensemble(list(two_members))
    images = np.random.default_rng(1).uniform(0, 255, (3, 64, 64)).astype(np.float32)
    maps, probabilities = cam.CamExplainer(ensemble).explain(images)
    members = model.ensemble_members(ensemble)
    small_images = np.stack([cv2.resize(image, (48, 48), interpolation=cv2.INTER_AREA) for image in images])
    member_maps = [
        cam.CamExplainer(members[0]).explain(small_images)[0],
        cam.CamExplainer(members[1]).explain(images)[0],
    ]
    resized = [
        np.stack([cv2.resize(cam, (64, 64), interpolation=cv2.INTER_LINEAR) for cam in member_maps[0]]),
        member_maps[1],
    ]
    np.testing.assert_allclose(maps, np.mean(resized, axis=0), atol=1e-5)
    np.testing.assert_allclose(probabilities, ensemble.predict(images[..., None], verbose=0).reshape(-1), atol=1e-6)


def test_every_heatmap_picture_carries_a_colour_bar_from_least_to_most():

    image = np.full((96, 96), 128, np.uint8)
    heat = np.linspace(0, 1, 96 * 96).reshape(96, 96).astype(np.float32)
    picture = overlays.with_colour_bar(overlays.overlay(image, heat))
    assert picture.shape[0] == 96 and picture.shape[1] > 96
    bar = picture[:, 96 + 4 + 8]  # a column inside the strip
    top, bottom = bar[2].astype(int), bar[-3].astype(int)
    assert top[0] > top[2] and bottom[2] > bottom[0]  # red (most) on top, blue (least) below
    side = overlays.side_by_side(image, heat, ["one line"], height=128)
    assert side.shape[1] > 2 * 128  # the bar sits beside the two pictures
    with pytest.raises(ValueError, match="at least 32 pixels"):
        overlays.colour_bar(20)
    grid = plots.sample_grid(
        np.stack([image, image]).astype(np.float32), ["a", "b"], columns=2, cams=heat[None].repeat(2, 0)
    )
    assert any(axis.get_label() == "<colorbar>" for axis in grid.axes)
    plots.plt.close(grid)


def test_probability_texts_keep_different_values_different():
    assert picking.probability_texts([0.26, 0.99, 1.0]) == ["0.26", "0.99", "1.00"]
    assert picking.probability_texts([0.520541, 0.520553, 0.520586]) == ["0.52054", "0.52055", "0.52059"]
    assert picking.probability_texts([0.5, 0.5]) == ["0.50", "0.50"]  # the same value may read the same
