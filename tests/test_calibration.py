"""Calibration: temperature scaling, threshold choice between scores, site calibration with ``pneumo
calibrate``, and moving a threshold to another period."""

import json
import re

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
def test_calibrate_refits_temperature_and_threshold_and_records_the_sample(site_model_path, site_sample, tmp_path):
    from pneumo_utils.model import load_model

    result = run_pneumo_here(
        "calibrate",
        "--model",
        str(site_model_path),
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
    original, original_card = load_model(site_model_path)
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


def test_calibrate_never_replaces_a_model_without_overwrite(site_model_path, site_sample, tmp_path):
    out = tmp_path / "site"
    out.mkdir()
    (out / "tiny.keras").write_bytes(b"earlier result")
    result = run_pneumo_here(
        "calibrate",
        "--model",
        str(site_model_path),
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


# ---------------------------------------------------------------------- issue 29, class 5: samples that cannot support
def _site_with_test(tmp_path, site_sample, files_by_label):
    """A data folder with the site's train/ and a test/ made of ``{label: [(source, name), ...]}``."""
    import shutil

    root = tmp_path / "chest_xray"
    shutil.copytree(site_sample / "train", root / "train")
    for label, files in files_by_label.items():
        (root / "test" / label).mkdir(parents=True, exist_ok=True)
        for source, name in files:
            shutil.copy(source, root / "test" / label / name)
    return root


def _calibrate(data_dir, model_path, tmp_path, split="test", sensitivity="0.9"):
    return run_pneumo_here(
        "calibrate",
        "--model",
        str(model_path),
        "--data-dir",
        str(data_dir),
        "--split",
        split,
        "--sensitivity",
        sensitivity,
        "--output-dir",
        str(tmp_path / "out"),
    )


@pytest.mark.slow
def test_calibration_counts_distinct_images_not_copies(site_model_path, site_sample, tmp_path):
    normal = sorted((site_sample / "test" / "NORMAL").glob("*.jpeg"))
    pneumonia = sorted((site_sample / "test" / "PNEUMONIA").glob("*.jpeg"))
    for kinds in ((1, 1), (3, 25)):  # one image of each class copied 25 times; three normals copied, 25 real
        files = {
            "NORMAL": [(normal[index % kinds[0]], f"n{index}.jpeg") for index in range(25)],
            "PNEUMONIA": [(pneumonia[index % kinds[1]], f"p{index}.jpeg") for index in range(25)],
        }
        root = _site_with_test(tmp_path / f"copies{kinds[0]}", site_sample, files)
        result = _calibrate(root, site_model_path, tmp_path / f"copies{kinds[0]}")
        assert result.returncode == 2, result.stderr
        (line,) = result.stderr.strip().splitlines()
        copies = 50 - kinds[0] - kinds[1]
        assert f"({copies} copies of other images not counted)" in line and f"{kinds[0]} NORMAL" in line, line
        assert "a threshold needs at least 20 images of each class" in line
        assert not (tmp_path / f"copies{kinds[0]}" / "out").exists()


@pytest.mark.slow
def test_calibration_refuses_the_same_image_under_both_labels(site_model_path, site_sample, tmp_path):
    normal = sorted((site_sample / "test" / "NORMAL").glob("*.jpeg"))
    pneumonia = sorted((site_sample / "test" / "PNEUMONIA").glob("*.jpeg"))
    for conflicts in (1, 4):
        files = {
            "NORMAL": [(path, path.name) for path in normal],
            "PNEUMONIA": [(path, path.name) for path in pneumonia]
            + [(normal[i], f"also_{i}.jpeg") for i in range(conflicts)],
        }
        root = _site_with_test(tmp_path / f"conflict{conflicts}", site_sample, files)
        result = _calibrate(root, site_model_path, tmp_path / f"conflict{conflicts}")
        assert result.returncode == 2, result.stderr
        (line,) = [line for line in result.stderr.strip().splitlines() if line.startswith("error:")]
        assert f"{conflicts} image(s) appear under both labels" in line and "fix the labels" in line, line


@pytest.mark.slow
def test_calibration_refuses_a_sample_the_model_cannot_discriminate(site_model_path, site_sample, tmp_path):
    everything = sorted((site_sample / "test").rglob("*.jpeg"))
    order = np.random.default_rng(3).permutation(len(everything))  # labels that have nothing to do with the images
    files = {"NORMAL": [], "PNEUMONIA": []}
    for rank, index in enumerate(order):
        files["NORMAL" if rank % 2 else "PNEUMONIA"].append((everything[index], f"x{rank}.jpeg"))
    root = _site_with_test(tmp_path, site_sample, files)
    result = _calibrate(root, site_model_path, tmp_path)
    assert result.returncode == 2, result.stderr
    (line,) = [line for line in result.stderr.strip().splitlines() if line.startswith("error:")]
    assert "the model does not tell the classes apart on this sample" in line, line
    assert re.search(r"95% interval \[0\.\d{3}, 0\.\d{3}\] (reaches|lies below) 0\.5", line), line


@pytest.mark.slow
def test_calibration_on_training_images_warns_and_records_it(site_model_path, site_sample, tmp_path):
    result = _calibrate(site_sample, site_model_path, tmp_path, split="train", sensitivity="0.85")
    assert result.returncode == 0, result.stderr
    warning = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert warning and "images are files of train/" in warning[0], result.stderr
    _, card = model.load_model(tmp_path / "out" / "tiny.keras")
    assert card["site_calibration"]["warnings"] and "copies_not_counted" in card["site_calibration"]["sample"]
