"""Issue 9's pieces: shift views, border erasing, ensembles, pretrained backbones, calibration, the
threshold between scores, the shortcut audit and the FLOP count. Real (tiny) models, real files."""

import json
import shutil

import cv2
import keras
import numpy as np
import pandas as pd
import pytest
from helpers import minimal_card

from pneumo_utils import audit, bench, cam, data, evaluate, experiments, model


# ------------------------------------------------------------------------------------------ shift views
@pytest.fixture(scope="module")
def synthetic_index(synthetic_root):
    return data.index_dataset(synthetic_root)


@pytest.mark.parametrize("view", data.SHIFT_VIEWS)
def test_shift_views_keep_patients_and_copies_on_one_side(synthetic_index, view):
    train, inner, shifted = data.shift_view(synthetic_index, view, val_fraction=0.2, seed=0)
    assert len(train) and len(inner) and len(shifted)
    assert data.split_overlap(train, inner) == {"patients": 0, "identical_images": 0}
    if view != "random":
        assert data.split_overlap(pd.concat([train, inner]), shifted) == {"patients": 0, "identical_images": 0}
    assert set(shifted["target"]) == {0, 1}


@pytest.mark.parametrize(
    ("view", "seen", "unseen"),
    [("cross-batch IM->NORMAL2", "IM", "NORMAL2"), ("cross-batch NORMAL2->IM", "NORMAL2", "IM")],
)
def test_cross_batch_view_never_trains_on_the_scored_batch(synthetic_index, view, seen, unseen):
    train, inner, shifted = data.shift_view(synthetic_index, view, val_fraction=0.2, seed=0)
    trained_normals = pd.concat([train, inner]).query("target == 0")["path"].map(data.normal_batch)
    assert set(trained_normals) == {seen}
    assert set(shifted.query("target == 0")["path"].map(data.normal_batch)) == {unseen}


def test_id_range_view_holds_out_the_lowest_and_highest_ids(synthetic_index):
    train, inner, shifted = data.shift_view(synthetic_index, "id-range", val_fraction=0.3, seed=0)
    pneumonia = synthetic_index.query("split == 'train' and target == 1")["patient"].map(data.acquisition_id)
    held = shifted.query("target == 1")["patient"].map(data.acquisition_id)
    assert pneumonia.min() in set(held) and pneumonia.max() in set(held)
    kept = pd.concat([train, inner]).query("target == 1")["patient"].map(data.acquisition_id)
    assert kept.min() > pneumonia.min() and kept.max() < pneumonia.max()


def test_unknown_view_is_refused(synthetic_index):
    with pytest.raises(ValueError, match="unknown shift view"):
        data.shift_view(synthetic_index, "sideways")


def test_shift_view_counts_show_no_overlap(synthetic_index):
    counts = data.shift_view_counts(synthetic_index, val_fraction=0.2, seed=0)
    assert list(counts.index) == list(data.SHIFT_VIEWS)
    assert (counts["shared patients"] == 0).all() and (counts["shared identical images"] == 0).all()


# ------------------------------------------------------------------------------------- border erasing
def test_border_erase_blacks_out_bands_only_in_training():
    layer = model.RandomBorderErase(0.3, seed=3)
    batch = np.full((16, 20, 20, 1), 100.0, np.float32)
    np.testing.assert_array_equal(layer(batch, training=False), batch)
    erased = np.asarray(layer(batch, training=True))[..., 0]
    assert set(np.unique(erased)) <= {0.0, 100.0}
    assert (erased == 0).any() and (erased == 100).any()
    assert (erased[:, 6:14, 6:14] == 100).all()  # the centre (beyond 30% of a side) is never touched


def _edge_contrast(images):
    """Mean absolute step across the vertical edge at column 16 of the test images below."""
    return np.abs(images[:, :, 16, 0] - images[:, :, 15, 0]).mean(axis=1)


def test_sharpness_change_blurs_or_sharpens_edges_only_in_training(tmp_path):
    layer = model.RandomSharpness(1.0, seed=5)
    batch = np.zeros((32, 32, 32, 1), np.float32)
    batch[:, :, 16:] = 160.0  # a vertical edge from 0 to 160
    np.testing.assert_array_equal(layer(batch, training=False), batch)
    changed = np.asarray(layer(batch, training=True))
    steps = _edge_contrast(changed)
    assert (steps < 150).any() and (changed.max(axis=(1, 2, 3)) > 160).any()  # some blurred, some sharpened
    assert changed.min() >= 0 and changed.max() <= 255
    np.testing.assert_allclose(changed[:, :, :10], 0, atol=1e-4)  # far from the edge nothing moves
    np.testing.assert_allclose(changed[:, :, 23:], 160, atol=1e-3)
    flat = np.full((4, 20, 20, 1), 90.0, np.float32)  # mirrored padding: no dark rim at the image border
    np.testing.assert_allclose(layer(flat, training=True), flat, atol=1e-3)
    network = model.build_model(32, filters=(4,), augmentation={"sharpness": 0.5})
    assert any(isinstance(item, model.RandomSharpness) for item in network.get_layer("augmentation").layers)
    network.save(tmp_path / "sharp.keras")
    loaded = keras.models.load_model(tmp_path / "sharp.keras")
    assert [
        item.factor for item in loaded.get_layer("augmentation").layers if isinstance(item, model.RandomSharpness)
    ] == [0.5]


# ------------------------------------------------------------------------------------------ ensembles
@pytest.fixture(scope="module")
def two_members():
    keras.utils.set_random_seed(0)
    small = model.build_model(48, filters=(4, 8), augmentation={"border": 0.1}, normalization="standardize")
    large = model.build_model(64, filters=(4, 8), augmentation={})
    return small, large


def _logits(network, images):
    logit_model = keras.Model(network.inputs, network.get_layer("logit").output)
    return logit_model.predict(images[..., None], verbose=0).reshape(-1)


def test_ensemble_logit_is_the_mean_of_member_logits(two_members, tmp_path):
    import cv2

    small, large = two_members
    ensemble = model.build_ensemble([small, large])
    images = np.random.default_rng(0).uniform(0, 255, (4, 64, 64)).astype(np.float32)
    small_images = np.stack([cv2.resize(image, (48, 48), interpolation=cv2.INTER_AREA) for image in images])
    expected = (_logits(small, small_images) + _logits(large, images)) / 2
    np.testing.assert_allclose(_logits(ensemble, images), expected, atol=1e-3)
    path = model.save_model(ensemble, tmp_path / "ensemble.keras", minimal_card(64))
    loaded, _ = model.load_model(path)
    np.testing.assert_allclose(
        loaded.predict(images[..., None], verbose=0), ensemble.predict(images[..., None], verbose=0), atol=1e-6
    )
    assert len(model.ensemble_members(loaded)) == 2


def test_gradcam_of_an_ensemble_is_the_mean_of_its_members_maps(two_members):
    import cv2

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


def test_profile_members_train_into_one_saved_ensemble(synthetic_root, tmp_path):
    from pneumo_utils import config, train

    settings = config.load_config(
        "smoke",
        output_dir=str(tmp_path),
        data_dir=str(synthetic_root),
        image_size=32,
        filters=[4, 8],
        epochs=1,
        val_fraction=0.25,
        seed=0,
        members=[{"seed": 1}, {"seed": 2, "image_size": 40, "augment_border": 0.1}],
    )
    run = train.prepare(settings, synthetic_root)
    assert run.network.input_shape == (None, 40, 40, 1)
    train.fit(run, checkpoint_dir=tmp_path / "checkpoints", verbose=0)
    card = train.finish(run, tmp_path / "ensemble.keras")
    assert card["training"]["members"] == 2 and card["training"]["kept_epochs"] == [1, 1]
    assert card["preprocessing"]["image_size"] == 40
    loaded, _ = model.load_model(tmp_path / "ensemble.keras")
    np.testing.assert_allclose(evaluate.predict_probabilities(loaded, run.val_images), run.val_probabilities, atol=1e-6)


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ([{"val_fraction": 0.3}], "shared by the whole ensemble"),
        ([{"epoch": 3}], "unknown setting"),
        ({"seed": 1}, "list of setting mappings"),
    ],
)
def test_bad_member_settings_are_refused(members, message):
    from pneumo_utils import config, train

    with pytest.raises(ValueError, match=message):
        train.member_settings(config.load_config("smoke", members=members))


# --------------------------------------------------------------------------------- pretrained backbone
def test_backbone_model_without_downloaded_weights(tmp_path):
    network = model.build_backbone_model(64, "efficientnetv2b0", weights=None, augmentation={"border": 0.1})
    images = np.random.default_rng(0).uniform(0, 255, (2, 64, 64)).astype(np.float32)
    probabilities = network.predict(images[..., None], verbose=0).reshape(-1)
    assert ((probabilities > 0) & (probabilities < 1)).all()
    path = model.save_model(network, tmp_path / "backbone.keras", minimal_card(64))
    loaded, _ = model.load_model(path)
    np.testing.assert_allclose(loaded.predict(images[..., None], verbose=0).reshape(-1), probabilities, atol=1e-5)
    explainer = cam.CamExplainer(loaded)
    assert explainer.layer_name.startswith("efficientnetv2")  # the backbone's last feature map
    maps, _ = explainer.explain(images)
    assert maps.shape == (2, 64, 64) and np.isfinite(maps).all()


@pytest.mark.parametrize(
    ("backbone", "weights", "message"),
    [("vgg99", None, "unknown backbone"), ("resnet50v2", "/no/such.h5", "weights must be")],
)
def test_bad_backbone_settings_are_refused(backbone, weights, message):
    with pytest.raises(ValueError, match=message):
        model.build_backbone_model(64, backbone, weights=weights)


# -------------------------------------------------------------------------- calibration and threshold
def test_temperature_scaling_fixes_overconfidence_without_changing_the_ranking():
    rng = np.random.default_rng(0)
    targets = rng.integers(0, 2, 2000)
    true_logits = rng.normal(0, 1.5, 2000) + (targets * 2 - 1) * 1.0
    overconfident = 1 / (1 + np.exp(-3.0 * true_logits))
    temperature = evaluate.fit_temperature(targets, overconfident)
    calibrated = evaluate.apply_temperature(overconfident, temperature)
    assert 2.0 < temperature < 4.5
    assert evaluate.expected_calibration_error(targets, calibrated) < evaluate.expected_calibration_error(
        targets, overconfident
    )
    assert evaluate.compute_metrics(targets, calibrated, 0.5)["roc_auc"] == pytest.approx(
        evaluate.compute_metrics(targets, overconfident, 0.5)["roc_auc"], abs=1e-9
    )


def test_temperature_inside_the_model_matches_the_formula():
    network = model.build_model(32, filters=(4,))
    images = np.random.default_rng(0).uniform(0, 255, (3, 32, 32, 1)).astype(np.float32)
    scaled = model.with_temperature(network, 2.5)
    np.testing.assert_allclose(
        scaled.predict(images, verbose=0).reshape(-1),
        evaluate.apply_temperature(network.predict(images, verbose=0).reshape(-1), 2.5),
        atol=1e-5,
    )
    with pytest.raises(ValueError, match="temperature"):
        model.with_temperature(network, 0.0)


def test_threshold_lies_strictly_between_neighbouring_scores():
    rng = np.random.default_rng(0)
    targets = np.r_[np.zeros(50), np.ones(150)].astype(int)
    scores = np.r_[rng.uniform(0, 0.6, 50), rng.uniform(0.3, 1.0, 150)].astype(np.float32)
    threshold = evaluate.choose_threshold(targets, scores, 0.95)["threshold"]
    assert threshold not in set(scores.astype(np.float64))
    gap = np.min(np.abs(scores.astype(np.float64) - threshold))
    matrix = evaluate.compute_metrics(targets, scores, threshold)["confusion_matrix"]
    for nudge in (-0.9 * gap, 0.9 * gap):  # scores moving less than the gap leave the matrix unchanged
        assert evaluate.compute_metrics(targets, scores + nudge, threshold)["confusion_matrix"] == matrix
    assert evaluate.compute_metrics(targets, scores, threshold)["sensitivity"] >= 0.95


# ------------------------------------------------------------------------- ensembles of recorded views
def _write_view(root, name, view, probabilities, targets):
    folder = root / name / "views" / experiments.view_slug(view)
    folder.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(
        {
            "file": [f"f{i}.jpeg" for i in range(len(targets))],
            "label": "x",
            "target": targets,
            "probability": probabilities,
        }
    )
    for which in ("scores.csv", "inner_scores.csv"):
        frame.to_csv(folder / which, index=False)
    shifted = experiments.score_view(targets, probabilities, 0.5)
    record_path = root / name / experiments.VIEWS_NAME
    record = json.loads(record_path.read_text()) if record_path.exists() else {"name": name, "views": {}}
    record["views"][view] = {"view": view, "shifted": shifted}
    record_path.write_text(json.dumps(record))


def test_views_table_scores_ensembles_from_recorded_member_scores(tmp_path):
    rng = np.random.default_rng(0)
    targets = np.r_[np.zeros(40), np.ones(60)].astype(int)
    for name in ("a", "b"):
        for view in data.SHIFT_VIEWS:
            noisy = 1 / (1 + np.exp(-((targets * 2 - 1) * 1.0 + rng.normal(0, 1.5, len(targets)))))
            _write_view(tmp_path, name, view, noisy, targets)
    table = experiments.views_table(tmp_path, ensembles=[["a", "b"]])
    assert list(table["recipe"]) == ["a", "b", "a + b"]
    assert table["worst AUC"].notna().all()
    # averaging two independent noisy scorers ranks better than either alone
    assert table.loc[2, "worst AUC"] > table.loc[:1, "worst AUC"].min()
    # a member's view recorded elsewhere (figures kept, per-image scores not committed) is left out of the
    # ensemble's row instead of failing the whole table
    (tmp_path / "b" / "views" / "random" / "inner_scores.csv").unlink()
    partial = experiments.views_table(tmp_path, ensembles=[["a", "b"]]).set_index("recipe")
    assert partial.loc["a + b", "random AUC"] == "not trained" and partial.loc["b", "random AUC"] != "not trained"
    assert partial.loc["a + b", "worst AUC"] == table.loc[2, "worst AUC"]
    # columns follow the views' order (random first, worst last) even when the first recipe lacks a view
    expected = [f"{view} {short}" for view in data.SHIFT_VIEWS for short in ("AUC", "sens", "spec")]
    assert list(partial.columns) == expected + ["worst AUC", "worst sens", "worst spec"]
    shutil.rmtree(tmp_path / "a" / "views" / "random")
    record = json.loads((tmp_path / "a" / experiments.VIEWS_NAME).read_text())
    del record["views"]["random"]
    (tmp_path / "a" / experiments.VIEWS_NAME).write_text(json.dumps(record))
    assert list(experiments.views_table(tmp_path).columns)[1:4] == ["random AUC", "random sens", "random spec"]


# ------------------------------------------------------------------------------ audit and FLOP count
def test_cue_values_see_dark_side_bands():
    framed = np.full((2, 224, 224), 150, np.uint8)
    framed[0, :, :12] = 0  # one image with a black left band
    cues = audit.cue_values(framed)
    assert cues.loc[0, "side_band_dark_share"] == pytest.approx(0.5)
    assert cues.loc[1, "side_band_dark_share"] == 0.0
    assert cues["centre_mean"].tolist() == [150.0, 150.0]
    assert cues.loc[1, "sharpness"] == pytest.approx(0.0, abs=1e-4)  # a flat image has no fine detail
    noisy = np.random.default_rng(0).integers(0, 255, (1, 224, 224)).astype(np.uint8)
    blurred = np.stack([cv2.GaussianBlur(noisy[0], (0, 0), 2.0)])
    assert audit.cue_values(noisy)["sharpness"][0] > 5 * audit.cue_values(blurred)["sharpness"][0]


def test_shortcut_audit_on_the_synthetic_set(synthetic_index):
    rows = synthetic_index[synthetic_index["split"] == "train"]
    groups, separation = audit.shortcut_audit(rows, image_size=64)
    assert {"NORMAL IM", "NORMAL NORMAL2"} <= set(groups.index)
    assert groups["images"].sum() == len(rows)  # every image in exactly one acquisition group
    normals = rows[rows["target"] == 0]
    assert groups.loc["NORMAL IM", "images"] == normals["path"].map(data.normal_batch).eq("IM").sum()
    assert set(separation["cue"]) == set(audit.CUES)
    # the synthetic pneumonia images carry brighter, blurrier opacities in the lung field: the central
    # brightness must separate the classes clearly there (a broken cue or label mapping would not)
    assert separation.set_index("cue").loc["centre_mean", "AUC PNEUMONIA vs NORMAL"] > 0.6


def test_forward_flops_counts_convolutions_and_dense_layers():
    inputs = keras.Input((10, 10, 1))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    network = keras.Model(inputs, keras.layers.Dense(2)(x))
    assert bench.forward_flops(network) == 2 * 10 * 10 * 4 * 1 * 9 + 2 * 4 * 2


def test_worst_views_reads_the_recorded_table(tmp_path):
    assert experiments.worst_views(tmp_path / "missing.csv") is None
    table = pd.DataFrame(
        {
            "recipe": ["a"],
            "random AUC": ["0.99 [0.98, 1.00]"],
            "worst AUC": [0.97],
            "worst sens": [0.94],
            "worst spec": [0.9],
        }
    )
    table.to_csv(tmp_path / "views.csv", index=False)
    worst = experiments.worst_views(tmp_path / "views.csv")
    assert list(worst.columns) == ["worst AUC", "worst sens", "worst spec"] and worst.loc["a", "worst spec"] == 0.9
