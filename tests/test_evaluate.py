"""Metrics, threshold choice and bootstrap intervals against hand-computed values."""

import numpy as np
import pytest

from pneumo_utils import evaluate, scores

TARGETS = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
PROBABILITIES = np.array([0.1, 0.2, 0.3, 0.8, 0.4, 0.6, 0.7, 0.9, 0.95, 0.99])


def test_metrics_match_hand_counts():
    result = evaluate.compute_metrics(TARGETS, PROBABILITIES, threshold=0.5)
    # predictions: 0 0 0 1 | 0 1 1 1 1 1  ->  tn=3 fp=1 fn=1 tp=5
    assert result["confusion_matrix"] == [[3, 1], [1, 5]]
    assert result["n"] == 10
    assert result["accuracy"] == pytest.approx(0.8)
    assert result["sensitivity"] == result["recall"] == pytest.approx(5 / 6)
    assert result["specificity"] == pytest.approx(3 / 4)
    assert result["precision"] == pytest.approx(5 / 6)
    assert result["f1"] == pytest.approx(5 / 6)
    assert result["roc_auc"] == pytest.approx(21 / 24)  # 21 of 24 positive/negative pairs ordered right
    assert result["brier"] == pytest.approx(np.mean((PROBABILITIES - TARGETS) ** 2))


def test_threshold_keeps_the_required_sensitivity():
    chosen = evaluate.choose_threshold(TARGETS, PROBABILITIES, min_sensitivity=0.8)
    result = evaluate.compute_metrics(TARGETS, PROBABILITIES, chosen["threshold"])
    assert result["sensitivity"] >= 0.8
    # 0.6 is the highest score that finds 5 of 6; the threshold lies midway to the next score, 0.4, so that
    # no image sits on it and the confusion matrix is the one at 0.6
    assert chosen["threshold"] == pytest.approx(0.5)
    assert result["confusion_matrix"] == evaluate.compute_metrics(TARGETS, PROBABILITIES, 0.6)["confusion_matrix"]
    assert evaluate.compute_metrics(TARGETS, PROBABILITIES, 1.0)["sensitivity"] < 0.8


def test_bootstrap_intervals_are_seeded_and_bracket_the_estimate():
    rng = np.random.default_rng(0)
    targets = rng.integers(0, 2, 300)
    probabilities = np.clip(targets * 0.4 + rng.uniform(0, 0.6, 300), 0, 1)
    result = evaluate.evaluate_probabilities(targets, probabilities, 0.5, n_resamples=200, seed=7)
    again = evaluate.evaluate_probabilities(targets, probabilities, 0.5, n_resamples=200, seed=7)
    assert result["ci95"] == again["ci95"]
    for name in evaluate.METRIC_NAMES:
        low, high = result["ci95"][name]
        assert low <= result[name] <= high and high - low < 0.25


def _scored_frame():
    import pandas as pd

    return pd.DataFrame(
        {"target": TARGETS, "probability": PROBABILITIES, "label": np.where(TARGETS == 1, "PNEUMONIA", "NORMAL")}
    )


def test_confident_mistakes_are_the_wrong_ones_farthest_from_the_threshold():
    mistakes = scores.confident_mistakes(_scored_frame(), threshold=0.5, count=5)
    # wrong at 0.5: the NORMAL at 0.8 (0.3 away) and the PNEUMONIA at 0.4 (0.1 away)
    assert mistakes["probability"].tolist() == [0.8, 0.4]
    assert mistakes["confidence"].round(3).tolist() == [0.3, 0.1]


def test_metrics_table_shows_each_metric_with_its_interval():
    result = evaluate.evaluate_probabilities(TARGETS, PROBABILITIES, 0.5, n_resamples=50)
    table = evaluate.metrics_table({"validation": result})
    assert table.loc["n", "validation"] == 10
    low, high = result["ci95"]["accuracy"]
    assert table.loc["accuracy", "validation"] == f"0.800 [{low:.3f}, {high:.3f}]"
    assert list(table.index[:-1]) == list(evaluate.METRIC_NAMES)


def test_the_bootstraps_fast_metrics_equal_the_reference_ones_with_ties():
    import numpy as np

    from pneumo_utils import evaluate

    rng = np.random.default_rng(7)
    for decimals in (1, 2, 6):  # coarse scores make many ties
        targets = rng.integers(0, 2, 300)
        probabilities = np.round(rng.random(300) * 0.6 + 0.3 * targets, decimals)
        reference = evaluate.compute_metrics(targets, probabilities, 0.5)
        fast = evaluate.fast_metrics(targets, probabilities, 0.5)
        for name in evaluate.METRIC_NAMES:
            assert fast[name] == pytest.approx(reference[name], abs=1e-12), name


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
