"""Operating modes: the bounded rule keeps its promise on fresh draws (and the empirical rule does not), samples
too small are refused with the size they would need, the modes travel in the card, and predict and evaluate
decide with them."""

import json

import numpy as np
import pytest
from helpers import run_pneumo_here

from pneumo_utils import model, predict
from pneumo_utils.model import operating

REPEATS = 400


def _scores(rng, positives: int, negatives: int) -> tuple[np.ndarray, np.ndarray]:
    """A known score distribution: logits normal, 2.5 apart, through a sigmoid (like a decent model's)."""
    logits = np.r_[rng.normal(-1.25, 1.0, negatives), rng.normal(1.25, 1.0, positives)]
    return np.r_[np.zeros(negatives), np.ones(positives)].astype(int), 1 / (1 + np.exp(-logits))


@pytest.fixture(scope="module")
def fresh_draw():
    """A large fresh draw from the same distribution, sorted per class: the true rates of any threshold."""
    targets, probabilities = _scores(np.random.default_rng(12345), 200_000, 200_000)
    return np.sort(probabilities[targets == 1]), np.sort(probabilities[targets == 0])


def _true_rates(mode: dict, fresh) -> dict[str, float]:
    positives, negatives = fresh
    sensitivity = 1 - np.searchsorted(positives, mode["lo"], side="left") / positives.size  # not NORMAL
    hi = mode.get("hi")
    specificity = 1.0 if hi is None else np.searchsorted(negatives, hi, side="left") / negatives.size
    return {"sensitivity": sensitivity, "specificity": specificity}


def test_the_bounded_promise_holds_on_fresh_draws_and_the_empirical_one_does_not(fresh_draw):
    """400 calibration samples (200 PNEUMONIA, 150 NORMAL, fixed seeds); each mode fitted on each; its true rates
    measured on a fresh draw of 400,000. At confidence 0.95 every promise must hold in at least 93% of samples;
    the plain empirical rule holds about half the time."""
    held = {"bounded": {}, "empirical": {}}
    for repeat in range(REPEATS):
        targets, probabilities = _scores(np.random.default_rng(repeat), 200, 150)
        for rule in held:
            fitted, refused = operating.fit_modes(targets, probabilities, {"split": "synthetic"}, rule=rule)
            assert not refused, refused
            for name, mode in fitted.items():
                true = _true_rates(mode, fresh_draw)
                for promise in mode["promises"]:
                    key = (name, promise["rate"])
                    held[rule].setdefault(key, []).append(true[promise["rate"]] >= promise["target"])
    bounded = {key: float(np.mean(values)) for key, values in held["bounded"].items()}
    empirical = {key: float(np.mean(values)) for key, values in held["empirical"].items()}
    assert set(bounded) == {
        ("single", "sensitivity"),
        ("rule-out", "sensitivity"),
        ("triage", "sensitivity"),
        ("triage", "specificity"),
    }
    for key, share in bounded.items():
        assert share >= 0.93, (key, share)
    for key, share in empirical.items():
        assert share <= 0.75, (key, share)  # about half: the threshold sits on the sample's luckiest side


def test_a_zero_miss_sample_gives_the_closed_form_bound_and_the_minimum_sample():
    for n in (10, 59, 157, 299):
        assert operating.lower_bound(n, n, 0.95) == pytest.approx(0.05 ** (1 / n), rel=1e-9)
    assert operating.minimum_sample(0.99, 0.95) == 299
    assert operating.minimum_sample(0.98, 0.95) == 149
    assert operating.minimum_sample(0.95, 0.95) == 59
    low, high = operating.interval(5, 10)
    assert low < 0.5 < high and low == pytest.approx(0.187, abs=1e-3)


def test_a_sample_too_small_for_a_promise_is_refused_with_the_size_it_needs():
    targets = np.r_[np.zeros(100), np.ones(298)].astype(int)
    probabilities = np.r_[np.linspace(0, 0.4, 100), np.linspace(0.6, 1, 298)]
    with pytest.raises(operating.OperatingPointError) as error:
        operating.sensitivity_threshold(targets, probabilities, 0.99, 0.95, mode="rule-out")
    assert "needs at least 299 PNEUMONIA images" in str(error.value) and "has 298" in str(error.value)
    assert "\n" not in str(error.value)
    # fitted together: the mode the sample cannot support is absent (not a guess), the others are there
    fitted, refused = operating.fit_modes(targets, probabilities, {"split": "x"}, rule_out_sensitivity=0.99)
    assert set(fitted) == {"single", "triage"} and set(refused) == {"rule-out"}
    # the empirical rule is available and names itself
    point = operating.sensitivity_threshold(targets, probabilities, 0.99, rule="empirical")
    assert point["promise"]["rule"] == "empirical" and "no bound" in operating.promise_text(point["promise"])


def test_decisions_follow_the_band():
    probabilities = np.array([0.05, 0.2, 0.5, 0.8, 0.95])
    triage = {"lo": 0.2, "hi": 0.8}
    assert list(operating.decide(probabilities, triage)) == ["NORMAL", "REFER", "REFER", "PNEUMONIA", "PNEUMONIA"]
    assert list(operating.decide(probabilities, {"lo": 0.2, "hi": None})) == ["NORMAL"] + ["REFER"] * 4
    assert list(operating.decide(probabilities, {"lo": 0.5, "hi": 0.5})) == ["NORMAL"] * 2 + ["PNEUMONIA"] * 3
    figures = operating.mode_figures([0, 0, 1, 1, 1], probabilities, triage)
    assert figures["coverage"]["count"] == 3 and figures["referred"]["count"] == 2
    assert figures["decided_accuracy"]["value"] == 1.0  # NORMAL 0.05, PNEUMONIA 0.8 and 0.95: all right
    assert figures["misses"]["count"] == 0 and figures["sensitivity"]["value"] == 1.0  # a REFER is not a miss


def test_every_band_and_rate_is_said_one_way():
    assert operating.band_text({"lo": 0.25, "hi": 0.25}) == "NORMAL below 0.2500, PNEUMONIA from 0.2500"
    assert operating.band_text({"lo": 0.1, "hi": None}, 3) == "NORMAL below 0.100, REFER otherwise"
    triage = operating.band_text({"lo": 0.2, "hi": 0.8}, 1)
    assert triage == "NORMAL below 0.2, REFER from 0.2 to 0.8, PNEUMONIA from 0.8"
    rate = operating.mode_figures([0, 1, 1], [0.1, 0.9, 0.95], {"lo": 0.5, "hi": 0.5})["decided_accuracy"]
    assert operating.rate_text(rate).startswith("1.000 [0.292, 1.000] (3/3)")
    assert operating.rate_text(rate, interval=False) == "1.000 (3/3)"
    assert operating.rate_text({"value": None, "ci95": [None, None], "count": 0, "n": 0}) == "n/a"


def test_the_simulation_uses_a_size_that_supports_the_bound():
    assert operating.simulation_size(200, 0.95) == 200
    assert operating.simulation_size(6, 0.95) == operating.PUBLIC_TEST_DEV_POSITIVES  # a smoke run's test-dev
    simulated = operating.simulate_threshold_rules(positives=60, target=0.95, repeats=50, seed=1)
    lines = operating.simulation_summary(simulated, 0.95)
    assert len(lines) == 2 and all("of 50 samples" in line for line in lines)
    assert lines[0].strip().startswith("bounded") and lines[1].strip().startswith("empirical")


def test_a_card_with_a_band_upside_down_is_refused(tmp_path):
    card = {"preprocessing": {"image_size": 32}, "threshold": {"value": 0.5}}
    model.check_card({**card, "operating_modes": {"triage": {"lo": 0.2, "hi": 0.8}}}, "ok.json")
    for broken in ({"triage": {"lo": 0.8, "hi": 0.2}}, {"guess": {"lo": 0.1}}, {"single": {"lo": "low"}}):
        with pytest.raises(model.ModelLoadError, match="operating_modes"):
            model.check_card({**card, "operating_modes": broken}, "bad.json")
    with pytest.raises(model.ModelLoadError, match="default_mode"):
        model.check_card({**card, "default_mode": "autopilot"}, "bad.json")


def _calibrate(model_path, site, out, *targets):
    """``pneumo calibrate`` of ``model_path`` on the test split of ``site`` into ``out``, with these targets."""
    arguments = ["--model", model_path, "--data-dir", site, "--split", "test", *targets, "--output-dir", out]
    return run_pneumo_here("calibrate", *map(str, arguments))


@pytest.fixture(scope="module")
def calibrated(site_model_path, tmp_path_factory):
    """The tiny model calibrated on a synthetic site large enough for every mode at lowered targets."""
    from pneumo_utils.data.synthetic import write_synthetic_dataset

    site = write_synthetic_dataset(
        tmp_path_factory.mktemp("site") / "chest_xray", images_per_class=80, image_size=64, seed=11, test_fraction=0.5
    )
    out = tmp_path_factory.mktemp("calibrated")
    result = _calibrate(
        site_model_path,
        site,
        out,
        "--sensitivity",
        "0.85",
        "--rule-out-sensitivity",
        "0.9",
        "--triage-specificity",
        "0.85",
    )
    assert result.returncode == 0, result.stderr
    return out / "tiny.keras", site, result


@pytest.mark.slow
def test_calibrate_writes_the_three_modes_into_the_card_and_predict_and_evaluate_use_them(calibrated, tmp_path):
    path, site, result = calibrated
    assert "rule-out promises: sensitivity >= 0.9" in result.stdout
    _, card = model.load_model(path)
    modes = card["operating_modes"]
    assert set(modes) == {"single", "rule-out", "triage"} and card.default_mode == "single"
    for mode in modes.values():
        assert mode["sample"]["split"] == "test" and mode["sample"]["n"] == 80
        assert len(mode["sample"]["fingerprint"]) == 16 and mode["on_sample"]["coverage"]["ci95"][0] is not None
        for promise in mode["promises"]:
            assert promise["confidence"] == 0.95 and promise["lower_bound"] >= promise["target"]
    assert card.threshold == modes["single"]["lo"] and modes["rule-out"]["hi"] is None
    # predict decides with the asked mode: NORMAL only below the rule-out threshold, REFER for every other image
    output = tmp_path / "rule-out.csv"
    predicted = run_pneumo_here(
        "predict", str(site / "test"), "--model", str(path), "--mode", "rule-out", "--no-ood", "--output", str(output)
    )
    assert predicted.returncode == 0, predicted.stderr
    import pandas as pd

    rows = pd.read_csv(output)
    lo = modes["rule-out"]["lo"]
    assert set(rows["mode"]) == {"rule-out"} and set(rows["decision"]) <= {"NORMAL", "REFER"}
    assert (rows["decision"] == "NORMAL").equals(rows["probability"] < lo)
    assert f"mode rule-out: NORMAL below {lo:.4f}" in predicted.stderr
    # evaluate writes each mode's figures, from the same rule
    metrics, _ = predict.evaluate_saved_model(path, site, "test")
    assert set(metrics["modes"]) == {"single", "rule-out", "triage"}
    for name, mode in metrics["modes"].items():
        assert mode["coverage"] == modes[name]["on_sample"]["coverage"]
        assert mode["interval_method"].startswith("exact Clopper-Pearson")
    evaluated = run_pneumo_here(
        "evaluate",
        "--model",
        str(path),
        "--data-dir",
        str(site),
        "--split",
        "test",
        "--output",
        str(tmp_path / "m.json"),
    )
    assert evaluated.returncode == 0, evaluated.stderr
    written = json.loads((tmp_path / "m.json").read_text())
    assert set(written["modes"]["triage"]) >= {"coverage", "decided_accuracy", "sensitivity", "specificity", "misses"}
    assert "operating modes" in evaluated.stdout and "rule-out" in evaluated.stdout


def test_a_mode_the_card_does_not_hold_is_one_line(tiny_model_path, synthetic_root):
    image = sorted((synthetic_root / "test" / "NORMAL").glob("*.jpeg"))[0]
    result = run_pneumo_here("predict", str(image), "--model", str(tiny_model_path), "--mode", "triage")
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert "holds no triage mode" in line and "pneumo calibrate" in line


def test_calibrate_refuses_a_promise_the_sample_cannot_support(site_model_path, tmp_path, calibrated):
    _, site, _ = calibrated
    result = _calibrate(site_model_path, site, tmp_path / "out", "--sensitivity", "0.99")
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert "needs at least 299 PNEUMONIA images" in line and "has 40" in line
    assert not (tmp_path / "out" / "tiny.keras").exists()
