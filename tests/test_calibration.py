"""Calibration: temperature scaling, threshold choice between scores, site calibration with ``pneumo
calibrate``, and moving a threshold to another period."""

import json

import numpy as np
import pytest
from helpers import run_pneumo_here

from pneumo_utils import evaluate, model, predict


@pytest.fixture(scope="module")
def site_sample(tmp_path_factory):
    """A labelled synthetic "site" with 30 images of each class in test/."""
    from pneumo_utils.data.synthetic import write_synthetic_dataset

    return write_synthetic_dataset(
        tmp_path_factory.mktemp("site") / "chest_xray", images_per_class=60, image_size=64, seed=7, test_fraction=0.5
    )


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


@pytest.mark.slow
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
    metrics, _ = predict.evaluate_saved_model(tmp_path / "site" / "tiny.keras", site_sample, "test")
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


def test_threshold_transfer_puts_both_thresholds_on_the_same_images():
    from pneumo_utils.model import calibrate

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
