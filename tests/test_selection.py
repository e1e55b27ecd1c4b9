"""Selection on the test period: the test-dev / test-final rule, paired comparisons, site calibration
(``pneumo calibrate``) and the pretrained MobileNetV2 backbone whose weights file is checked by SHA-256."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import run_pneumo_here

from pneumo_utils import data, evaluate

SHARED = Path(__file__).resolve().parents[2] / "shared"
SHARED_TEST = SHARED / "data" / "chest_xray" / "test"
WEIGHTS_035 = SHARED / "weights" / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5"
SHA_035 = "df1c3db1d0d9193719c4c70f707c56f7021f999f825bdc57454c275cf6def19f"


@pytest.mark.parametrize(
    ("filename", "half"),
    [
        ("IM-0001-0001.jpeg", "test-dev"),
        ("NORMAL2-IM-0007-0001.jpeg", "test-dev"),
        ("person100_bacteria_475.jpeg", "test-dev"),
        ("person3_virus_15.jpeg", "test-dev"),
        ("person1_virus_6.jpeg", "test-final"),
        ("person101_bacteria_485.jpeg", "test-final"),
    ],
)
def test_split_rule_puts_known_file_names_on_their_side(filename, half):
    assert data.test_half(data.parse_patient_id(filename)) == half


def test_the_rule_is_the_published_one():
    import hashlib

    for patient in ("person1", "IM-0001", "NORMAL2-IM-0007", "person1500"):
        value = int(hashlib.sha256(patient.encode("utf-8")).hexdigest(), 16)
        assert data.test_half(patient) == ("test-dev" if value % 5 < 2 else "test-final")


@pytest.mark.skipif(not SHARED_TEST.is_dir(), reason="../shared/data/chest_xray/test is not beside the checkout")
def test_every_image_of_the_shared_test_folder_is_test_dev():
    names = [path.name for path in SHARED_TEST.rglob("*.jpeg")]
    assert len(names) == 263
    assert {data.test_half(data.parse_patient_id(name)) for name in names} == {"test-dev"}


def test_the_two_halves_partition_the_test_folder_by_patient(synthetic_root):
    index = data.index_dataset(synthetic_root)
    whole = data.select_split(index, "test", 0.25, 0)
    dev = data.select_split(index, "test-dev", 0.25, 0)
    final = data.select_split(index, "test-final", 0.25, 0)
    assert len(dev) + len(final) == len(whole) and len(dev) and len(final)
    assert not set(dev["patient"]) & set(final["patient"])
    assert set(dev["path"]) | set(final["path"]) == set(whole["path"])
    counts = data.test_half_counts(index)
    assert sum(counts["test-dev"].values()) == len(dev) and sum(counts["test-final"].values()) == len(final)


@pytest.fixture(scope="module")
def test_dev_only_copy(synthetic_root, tmp_path_factory):
    """The synthetic set with test/ cut down to its test-dev half, as the shared copy of the real data is."""
    root = tmp_path_factory.mktemp("dev_only") / "chest_xray"
    shutil.copytree(synthetic_root, root)
    for path in (root / "test").rglob("*.jpeg"):
        if data.test_half(data.parse_patient_id(path.name)) == "test-final":
            path.unlink()
    return root


def test_a_missing_test_final_is_one_line_and_exit_2(tiny_model_path, test_dev_only_copy):
    result = run_pneumo_here(
        "evaluate", "--model", str(tiny_model_path), "--data-dir", str(test_dev_only_copy), "--split", "test-final"
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: no test-final images here:"), result.stderr


def test_index_shows_the_two_halves(test_dev_only_copy):
    result = run_pneumo_here("index", "--data-dir", str(test_dev_only_copy))
    assert result.returncode == 0, result.stderr
    halves = json.loads(result.stdout)["test_halves"]
    assert sum(halves["test-dev"].values()) > 0 and sum(halves["test-final"].values()) == 0


def test_paired_bootstrap_of_a_model_against_itself_is_zero():
    rng = np.random.default_rng(0)
    targets = rng.integers(0, 2, 200)
    scores = np.clip(targets * 0.3 + rng.random(200) * 0.7, 0, 1)
    result = evaluate.paired_bootstrap_difference(targets, scores, scores, n_resamples=200)
    assert result["difference"] == 0.0 and result["ci95"] == [0.0, 0.0]


def test_paired_bootstrap_finds_a_real_difference_and_not_a_tiny_one():
    rng = np.random.default_rng(1)
    targets = rng.integers(0, 2, 300)
    good = np.clip(targets * 0.6 + rng.random(300) * 0.4, 0, 1)
    poor = np.clip(targets * 0.1 + rng.random(300) * 0.9, 0, 1)
    better = evaluate.paired_bootstrap_difference(targets, good, poor, n_resamples=300)
    assert better["difference"] > 0 and better["ci95"][0] > 0
    nudged = good + rng.normal(0, 1e-3, 300)
    tie = evaluate.paired_bootstrap_difference(targets, good, nudged, n_resamples=300)
    assert tie["ci95"][0] <= 0 <= tie["ci95"][1]
    with pytest.raises(ValueError, match="same images"):
        evaluate.paired_bootstrap_difference(targets, good, poor[:-1])


@pytest.fixture(scope="module")
def site_sample(tmp_path_factory):
    """A labelled synthetic "site" with 30 images of each class in test/."""
    from pneumo_utils.synthetic import write_synthetic_dataset

    return write_synthetic_dataset(
        tmp_path_factory.mktemp("site") / "chest_xray", images_per_class=60, image_size=64, seed=7, test_fraction=0.5
    )


def test_calibrate_refits_temperature_and_threshold_and_records_the_sample(tiny_model_path, site_sample, tmp_path):
    from pneumo_utils.model import load_model

    result = run_pneumo_here(
        "calibrate",
        "--model",
        str(tiny_model_path),
        "--data-dir",
        str(site_sample),
        "--split",
        "test",
        "--sensitivity",
        "0.9",
        "--output-dir",
        str(tmp_path / "site"),
    )
    assert result.returncode == 0, result.stderr
    assert "temperature" in result.stdout and "threshold" in result.stdout
    network, card = load_model(tmp_path / "site" / "tiny.keras")
    site = card["site_calibration"]
    assert site["sample"]["n"] == 60 and site["sample"]["counts"] == {"NORMAL": 30, "PNEUMONIA": 30}
    assert site["sample"]["split"] == "test" and len(site["sample"]["fingerprint"]) == 16
    assert site["temperature"] > 0 and "ci95" in site["before"] and "ci95" in site["after"]
    assert card["threshold"]["value"] == site["after"]["threshold"]
    assert "on test" in card["threshold"]["rule"] and card["threshold"]["min_sensitivity"] == 0.9
    assert site["after"]["sensitivity"] >= 0.9
    original, original_card = load_model(tiny_model_path)
    assert site["previous_threshold"] == original_card["threshold"]
    # the calibrated file, scored again on the same sample, gives exactly the figures its card records
    metrics, _ = evaluate.evaluate_saved_model(tmp_path / "site" / "tiny.keras", site_sample, "test")
    assert metrics["confusion_matrix"] == site["after"]["confusion_matrix"]
    # predict (and every command with --model) takes the calibrated model and decides at its new threshold
    image = sorted((site_sample / "test" / "NORMAL").glob("*.jpeg"))[0]
    predicted = run_pneumo_here(
        "predict",
        str(image),
        "--model",
        str(tmp_path / "site" / "tiny.keras"),
        "--output",
        str(tmp_path / "predicted.json"),
    )
    assert predicted.returncode == 0, predicted.stderr
    (row,) = json.loads((tmp_path / "predicted.json").read_text())
    assert row["label"] == ("PNEUMONIA" if row["probability"] >= card["threshold"]["value"] else "NORMAL")
    # the weights are unchanged: the ranking (ROC-AUC) is the one of the model it came from (up to ties that
    # the saved model's float32 sigmoid makes where the refit used float64)
    assert metrics["roc_auc"] == pytest.approx(site["before"]["roc_auc"], abs=0.01)


def test_calibrate_refuses_a_sample_too_small_to_fix_a_threshold(tiny_model_path, synthetic_root, tmp_path):
    result = run_pneumo_here(
        "calibrate",
        "--model",
        str(tiny_model_path),
        "--data-dir",
        str(synthetic_root),
        "--split",
        "test-dev",
        "--output-dir",
        str(tmp_path / "out"),
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "a threshold needs at least 20 images of each class" in lines[0]
    assert not (tmp_path / "out").exists()


def test_calibrate_never_replaces_a_model_without_overwrite(tiny_model_path, site_sample, tmp_path):
    out = tmp_path / "site"
    out.mkdir()
    (out / "tiny.keras").write_bytes(b"earlier result")
    result = run_pneumo_here(
        "calibrate",
        "--model",
        str(tiny_model_path),
        "--data-dir",
        str(site_sample),
        "--split",
        "test",
        "--output-dir",
        str(out),
    )
    assert result.returncode == 2 and "--overwrite" in result.stderr
    assert (out / "tiny.keras").read_bytes() == b"earlier result"


def test_mobilenetv2_takes_a_width_and_refuses_a_weights_file_with_another_sha256(tmp_path):
    from pneumo_utils import model

    network = model.build_backbone_model(32, "mobilenetv2", weights=None, alpha=0.35, augment=False)
    assert network.output_shape == (None, 1) and network.input_shape == (None, 32, 32, 1)
    impostor = tmp_path / "weights.h5"
    impostor.write_bytes(b"not the ImageNet weights")
    with pytest.raises(model.WeightsFileError, match="SHA-256"):
        model.build_backbone_model(32, "mobilenetv2", weights=str(impostor), alpha=0.35, weights_sha256=SHA_035)
    with pytest.raises(ValueError, match="alpha"):
        model.build_backbone_model(32, "densenet121", weights=None, alpha=0.5)


def test_a_frozen_backbone_trains_only_its_regularized_head():
    import keras

    from pneumo_utils import model

    network = model.build_backbone_model(32, "mobilenetv2", weights=None, alpha=0.35, trainable=False, head_l2=0.01)
    trainable = sum(int(np.prod(weight.shape)) for weight in network.trainable_weights)
    assert trainable == 2 * 1280 + 1280 + 1  # feature batch norm (scale, offset) and the logit's weights and bias
    before = [weight.numpy().copy() for weight in network.non_trainable_weights]
    network.compile(optimizer=keras.optimizers.Adam(0.01), loss="binary_crossentropy")
    images = np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 1)).astype("float32")
    network.fit(images, np.r_[np.zeros(4), np.ones(4)], epochs=1, verbose=0)
    moving = [name for name in (weight.path for weight in network.non_trainable_weights) if "feature_norm" in name]
    unchanged = [
        np.array_equal(old, weight.numpy())
        for old, weight in zip(before, network.non_trainable_weights, strict=True)
        if "feature_norm" not in weight.path
    ]
    assert moving and all(unchanged)  # the backbone, its batch-norm statistics included, did not move
    assert network.losses  # the L2 penalty of the head is part of the loss


@pytest.mark.skipif(not WEIGHTS_035.is_file(), reason="../shared/weights is not beside the checkout")
def test_imagenet_weights_load_from_a_path_and_the_card_records_their_sha256():
    from pneumo_utils import config, model, train

    settings = config.load_config(
        "smoke", backbone="mobilenetv2", alpha=0.35, weights=str(WEIGHTS_035), weights_sha256=SHA_035, image_size=64
    )
    network = train.build_from_config(settings)
    backbone = next(layer for layer in network.layers if layer.name.startswith("mobilenet"))
    first = backbone.get_layer("Conv1").get_weights()[0]
    assert np.abs(first).mean() > 0.05  # trained filters, not a fresh initialization
    assert train.pretrained_weights(settings) == [
        {
            "member": 1,
            "backbone": "mobilenetv2",
            "alpha": 0.35,
            "weights": config.portable_path(WEIGHTS_035),
            "sha256": SHA_035,
        }
    ]
    assert model.check_weights_file(WEIGHTS_035) == SHA_035
    # a card or an experiment record names the file relative to the project, never by this machine's path
    assert config.recorded_settings(settings)["weights"] == config.portable_path(WEIGHTS_035)
    assert not any(str(value).startswith("/") for value in config.recorded_settings(settings).values())


def test_training_can_choose_the_epoch_and_calibrate_on_test_dev_without_a_gradient_step_on_it(tmp_path):
    """``selection_split`` and ``calibration_split: test-dev``: early stopping watches test-dev, and the run's
    model is calibrated as pneumo calibrate does, after training on train/ only; the validation figures in its
    card are at the new threshold."""
    from pneumo_utils import config, train
    from pneumo_utils.model import load_model
    from pneumo_utils.synthetic import write_synthetic_dataset

    root = write_synthetic_dataset(
        tmp_path / "chest_xray", images_per_class=100, image_size=48, seed=3, test_fraction=0.6
    )  # test-dev: 27 NORMAL, 22 PNEUMONIA (names fix the halves)
    settings = config.load_config(
        "smoke",
        output_dir=str(tmp_path / "run"),
        data_dir=str(root),
        image_size=32,
        filters=[4, 8],
        epochs=1,
        seed=0,
        calibration_split="test-dev",
        selection_split="test-dev",
    )
    run = train.prepare(settings, root)
    assert not set(run.train_rows["path"]) & set(data.select_split(run.index, "test", 0.2, 0)["path"])
    assert len(run.monitor_images) == 49 and len(run.val_images) != 49  # early stopping watches test-dev
    train.fit(run, checkpoint_dir=tmp_path / "checkpoints", verbose=0)
    card = train.finish(run, tmp_path / "model.keras")
    site = card["site_calibration"]
    assert site["sample"]["split"] == "test-dev" and site["sample"]["counts"] == {"NORMAL": 27, "PNEUMONIA": 22}
    assert card["validation_metrics"]["threshold"] == card["threshold"]["value"] == site["after"]["threshold"]
    assert card["validation_metrics"]["calibration"]["temperature"] == site["temperature"]
    assert card["training"]["epoch_chosen_on"].startswith("test-dev (used for selection")
    _, saved = load_model(tmp_path / "model.keras")
    assert saved["threshold"] == card["threshold"]


def test_the_test_dev_table_shows_each_seed_their_mean_and_the_paired_comparison(tmp_path):
    import pandas as pd

    from pneumo_utils import experiments
    from pneumo_utils.records import write_json_atomic

    rng = np.random.default_rng(2)
    targets = np.r_[np.zeros(60), np.ones(90)].astype(int)
    rows = pd.DataFrame(
        {
            "path": [f"/d/test/{'NORMAL' if t == 0 else 'PNEUMONIA'}/img{i}.jpeg" for i, t in enumerate(targets)],
            "label": np.where(targets == 1, "PNEUMONIA", "NORMAL"),
            "target": targets,
        }
    )
    strengths = {"good_s1": 0.6, "good_s2": 0.55, "poor_s1": 0.05, "poor_s2": 0.08}
    for name, strength in strengths.items():
        scores = np.clip(targets * strength + rng.random(len(targets)) * (1 - strength), 0.001, 0.999)
        experiments.write_scores(tmp_path / name / experiments.TEST_DEV_SCORES, rows, scores)
        write_json_atomic(
            tmp_path / name / experiments.TEST_DEV_NAME, {"name": name, **experiments.score_view(targets, scores, 0.5)}
        )
    table = experiments.test_dev_table(tmp_path, [["good_s1", "good_s2"], ["poor_s1", "poor_s2"]])
    table = table.set_index("recipe / seed")
    assert {"good_s1", "good_s2", "poor_s1", "poor_s2", "mean of good_s1 + good_s2"} <= set(table.index)
    seeds = [
        json.loads((tmp_path / name / experiments.TEST_DEV_NAME).read_text())["roc_auc"]
        for name in ("good_s1", "good_s2")
    ]
    assert float(table.loc["mean of good_s1 + good_s2", "test-dev AUC"]) == pytest.approx(np.mean(seeds), abs=5e-4)
    assert table.loc["ensemble good_s1 + good_s2", "AUC difference from best [95% CI]"] == "best"
    comparison = table.loc["ensemble poor_s1 + poor_s2", "AUC difference from best [95% CI]"]
    low = float(comparison.split("[")[1].split(",")[0])
    assert comparison.startswith("-") and low < 0  # the poor recipe is worse, and its whole interval says so
    assert float(comparison.split(",")[1].rstrip("]")) < 0


def test_a_missing_backbone_weights_file_stops_a_run_before_any_kernel(tmp_path):
    result = run_pneumo_here(
        "run",
        "--profile",
        "smoke",
        "--output-dir",
        str(tmp_path / "out"),
        "-p",
        "members=[{seed: 1}, {seed: 2, backbone: mobilenetv2, weights: no/such.h5}]",
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "member 2: weights file" in lines[0] and "no/such.h5 does not exist" in lines[0]
    assert not (tmp_path / "out" / "executed").exists()


def test_a_regenerated_views_table_keeps_rows_this_machine_cannot_score(tmp_path):
    import pandas as pd

    from pneumo_utils import experiments

    previous = tmp_path / "experiments_views.csv"
    pd.DataFrame(
        [
            {"recipe": "a + b", "id-range AUC": "0.995 [0.99, 0.998]", "worst AUC": 0.984},
            {"recipe": "c", "id-range AUC": "0.990 [0.98, 0.995]", "worst AUC": 0.97},
        ]
    ).to_csv(previous, index=False)
    now = pd.DataFrame(
        [
            {"recipe": "a + b", "id-range AUC": "not trained", "worst AUC": None},
            {"recipe": "c", "id-range AUC": "0.991 [0.98, 0.996]", "worst AUC": 0.971},
        ]
    )
    kept = experiments._keep_recorded_rows(now, previous).set_index("recipe")
    assert kept.loc["a + b", "id-range AUC"] == "0.995 [0.99, 0.998]" and kept.loc["a + b", "worst AUC"] == 0.984
    assert kept.loc["c", "id-range AUC"] == "0.991 [0.98, 0.996]"  # what was scored now wins


def test_threshold_transfer_puts_both_thresholds_on_the_same_images():
    from pneumo_utils import calibrate

    targets = np.r_[np.zeros(40), np.ones(60)].astype(int)
    probabilities = np.r_[np.linspace(0.05, 0.8, 40), np.linspace(0.5, 0.99, 60)]
    # a card calibrated elsewhere: its validation threshold (logit 1 at temperature 1) in today's scale (T = 2)
    site_card = {
        "threshold": {"value": 0.7, "min_sensitivity": 0.95},
        "site_calibration": {
            "previous_threshold": {"value": 1 / (1 + np.exp(-1.0))},
            "previous_temperature": 1.0,
            "temperature": 2.0,
        },
    }
    table = calibrate.threshold_transfer(targets, probabilities, site_card)
    assert list(table["threshold"]) == [round(1 / (1 + np.exp(-0.5)), 4), 0.7]
    # a card calibrated on validation: the sample's own threshold is fitted with the same rule
    table = calibrate.threshold_transfer(targets, probabilities, {"threshold": {"value": 0.3}})
    fitted = evaluate.choose_threshold(targets, probabilities, 0.95)["threshold"]
    assert list(table["threshold"]) == [0.3, round(fitted, 4)]
    assert table.iloc[1]["sensitivity"] >= 0.95 and table.iloc[0]["specificity"] <= table.iloc[1]["specificity"]
