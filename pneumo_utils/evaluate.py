"""Metrics on arrays: the decision threshold, accuracy to ROC-AUC, bootstrap confidence intervals, calibration
(temperature, expected calibration error) and outcome labels. Pure functions of targets and probabilities: no
model and no file is touched here (scoring a saved model on a split is :mod:`pneumo_utils.predict`)."""

from __future__ import annotations

import numpy as np

METRIC_NAMES = (
    "accuracy",
    "precision",
    "recall",
    "sensitivity",
    "specificity",
    "f1",
    "roc_auc",
    "pr_auc",
    "brier",
)


BOOTSTRAP_RESAMPLES = 1000


BOOTSTRAP_SEED = 0


def outcome_of(label: str, probability: float, threshold: float) -> str:
    """How one image came out at ``threshold``: ``correct``, ``false alarm`` (NORMAL called PNEUMONIA) or
    ``missed`` (PNEUMONIA called NORMAL). The one labeller of outcomes (explorer, Grad-CAM examples)."""
    predicted_pneumonia = probability >= threshold
    if (label == "PNEUMONIA") == predicted_pneumonia:
        return "correct"
    return "false alarm" if predicted_pneumonia else "missed"


def choose_threshold(
    targets: np.ndarray, probabilities: np.ndarray, min_sensitivity: float = 0.95, sample: str = "the validation split"
) -> dict:
    """The highest threshold that keeps sensitivity >= ``min_sensitivity`` on these (validation) data.

    Missing pneumonia costs more than a false alarm, so the rule fixes sensitivity first and then
    takes the most specific threshold that still meets it. The threshold is the midpoint between that
    score and the next lower one, never a score itself: a rounding difference on another machine (scores
    move by ~1e-7) cannot move an image across it, so the confusion matrix reproduces exactly.
    """
    from sklearn import metrics as skm  # here: a page of the explorer reads scores without scikit-learn

    targets = np.asarray(targets).astype(int)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    fpr, tpr, thresholds = skm.roc_curve(targets, probabilities, drop_intermediate=False)
    meets = np.flatnonzero(tpr >= min_sensitivity)
    position = meets[0]  # thresholds decrease along the curve: the first index that meets it is the highest
    score = float(min(thresholds[position], 1.0))
    lower = float(thresholds[position + 1]) if position + 1 < len(thresholds) else 0.0
    return {
        "threshold": (score + lower) / 2.0,
        "rule": f"highest threshold with sensitivity >= {min_sensitivity:g} on {sample} "
        "(midway between neighbouring scores)",
        "min_sensitivity": min_sensitivity,
    }


def expected_calibration_error(targets: np.ndarray, probabilities: np.ndarray, bins: int = 10) -> float:
    """ECE: the mean gap between predicted probability and observed frequency over equal-width bins,
    weighted by the share of images in each bin."""
    targets = np.asarray(targets, dtype=np.float64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(probabilities, edges[1:-1]), 0, bins - 1)
    total = 0.0
    for number in range(bins):
        inside = which == number
        if inside.any():
            total += inside.mean() * abs(probabilities[inside].mean() - targets[inside].mean())
    return float(total)


def logits_of(probabilities: np.ndarray) -> np.ndarray:
    """The logit of each probability (clipped away from 0 and 1)."""
    clipped = np.clip(np.asarray(probabilities, dtype=np.float64), 1e-7, 1 - 1e-7)
    return np.log(clipped / (1 - clipped))


def fit_temperature(targets: np.ndarray, probabilities: np.ndarray) -> float:
    """Temperature scaling (Guo et al. 2017): the T > 0 that minimizes the log loss of sigmoid(logit / T)
    on these (validation) images. T > 1 softens over-confident probabilities. The ranking, and so the
    ROC-AUC, does not change; the threshold moves with the probabilities."""
    return fit_temperature_to_logits(targets, logits_of(probabilities))


def fit_temperature_to_logits(targets: np.ndarray, logits: np.ndarray) -> float:
    """:func:`fit_temperature` on the model's logits themselves (no clipping of confident probabilities)."""
    from scipy.optimize import minimize_scalar

    targets = np.asarray(targets, dtype=np.float64)
    logits = np.asarray(logits, dtype=np.float64)

    def log_loss(log_temperature):
        scaled = apply_temperature_to_logits(logits, np.exp(log_temperature))
        scaled = np.clip(scaled, 1e-12, 1 - 1e-12)
        return -np.mean(targets * np.log(scaled) + (1 - targets) * np.log(1 - scaled))

    return float(np.exp(minimize_scalar(log_loss, bounds=(-3.0, 3.0), method="bounded").x))


def apply_temperature_to_logits(logits: np.ndarray, temperature: float) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64) / temperature))


def apply_temperature(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """Probabilities after temperature scaling: sigmoid(logit / T)."""
    return apply_temperature_to_logits(logits_of(probabilities), temperature)


def compute_metrics(targets: np.ndarray, probabilities: np.ndarray, threshold: float) -> dict:
    """All reported metrics at ``threshold`` (predicted PNEUMONIA when probability >= threshold)."""
    from sklearn import metrics as skm  # here: a page of the explorer reads scores without scikit-learn

    targets = np.asarray(targets).astype(int)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    predictions = (probabilities >= threshold).astype(int)
    tn, fp, fn, tp = skm.confusion_matrix(targets, predictions, labels=[0, 1]).ravel()
    both_classes = len(np.unique(targets)) == 2

    def ratio(numerator, denominator):
        return float(numerator / denominator) if denominator else float("nan")

    sensitivity = ratio(tp, tp + fn)
    precision = ratio(tp, tp + fp)
    return {
        "n": int(len(targets)),
        "accuracy": ratio(tp + tn, len(targets)),
        "precision": precision,
        "recall": sensitivity,
        "sensitivity": sensitivity,
        "specificity": ratio(tn, tn + fp),
        "f1": ratio(2 * tp, 2 * tp + fp + fn),
        "roc_auc": float(skm.roc_auc_score(targets, probabilities)) if both_classes else float("nan"),
        "pr_auc": float(skm.average_precision_score(targets, probabilities)) if both_classes else float("nan"),
        "brier": float(np.mean((probabilities - targets) ** 2)),
        "threshold": float(threshold),
        "confusion_matrix": [[int(tn), int(fp)], [int(fn), int(tp)]],
    }


def fast_metrics(targets: np.ndarray, probabilities: np.ndarray, threshold: float) -> dict[str, float]:
    """The metrics of :func:`compute_metrics` for a sample holding both classes, in plain NumPy: the same
    definitions (ROC-AUC as the trapezoid under the ROC curve, PR-AUC as scikit-learn's average precision,
    ties kept together), about fifty times faster, for the thousand resamples of a bootstrap."""
    predicted = probabilities >= threshold
    positives = targets == 1
    tp = float(np.sum(predicted & positives))
    fp = float(np.sum(predicted & ~positives))
    fn = float(np.sum(~predicted & positives))
    tn = float(len(targets) - tp - fp - fn)

    def ratio(numerator, denominator):
        return numerator / denominator if denominator else float("nan")

    order = np.argsort(-probabilities, kind="mergesort")
    ranked = probabilities[order]
    last_of_each_score = np.r_[np.flatnonzero(np.diff(ranked)), len(ranked) - 1]
    true_positives = np.cumsum(positives[order])[last_of_each_score].astype(np.float64)
    false_positives = 1.0 + last_of_each_score - true_positives
    recall = true_positives / true_positives[-1]
    fall_out = false_positives / false_positives[-1]
    precision = true_positives / (true_positives + false_positives)
    sensitivity = ratio(tp, tp + fn)
    return {
        "accuracy": ratio(tp + tn, len(targets)),
        "precision": ratio(tp, tp + fp),
        "recall": sensitivity,
        "sensitivity": sensitivity,
        "specificity": ratio(tn, tn + fp),
        "f1": ratio(2 * tp, 2 * tp + fp + fn),
        "roc_auc": float(np.trapezoid(np.r_[0.0, recall], np.r_[0.0, fall_out])),
        "pr_auc": float(np.sum(np.diff(np.r_[0.0, recall]) * precision)),
        "brier": float(np.mean((probabilities - targets) ** 2)),
    }


def bootstrap_ci(
    targets: np.ndarray,
    probabilities: np.ndarray,
    threshold: float,
    n_resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    level: float = 0.95,
) -> dict[str, list[float]]:
    """Seeded percentile bootstrap interval ``[low, high]`` for each metric (resampling images)."""
    targets = np.asarray(targets).astype(int)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    rng = np.random.default_rng(seed)
    samples = {name: [] for name in METRIC_NAMES}
    for _ in range(n_resamples):
        picks = rng.integers(0, len(targets), len(targets))
        if len(np.unique(targets[picks])) < 2:
            continue
        values = fast_metrics(targets[picks], probabilities[picks], threshold)
        for name in METRIC_NAMES:
            samples[name].append(values[name])
    tail = (1.0 - level) / 2.0 * 100
    return {
        name: [float(np.nanpercentile(values, tail)), float(np.nanpercentile(values, 100 - tail))]
        for name, values in samples.items()
    }


def evaluate_probabilities(
    targets: np.ndarray,
    probabilities: np.ndarray,
    threshold: float,
    n_resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> dict:
    """Metrics plus their ``ci95`` intervals: the shape of every metrics JSON the project writes."""
    result = compute_metrics(targets, probabilities, threshold)
    result["ci95"] = bootstrap_ci(targets, probabilities, threshold, n_resamples=n_resamples, seed=seed)
    return result


def paired_bootstrap_difference(
    targets: np.ndarray,
    first: np.ndarray,
    second: np.ndarray,
    metric: str = "roc_auc",
    threshold: float = 0.5,
    n_resamples: int = 2000,
    seed: int = BOOTSTRAP_SEED,
    level: float = 0.95,
) -> dict[str, float | list[float]]:
    """``metric(first) - metric(second)`` on the same images, with a percentile bootstrap interval that
    resamples images once for both models (paired), so what they share does not count as a difference.

    A recipe beats another only when this interval excludes 0.
    """
    targets = np.asarray(targets).astype(int)
    first, second = (np.asarray(values, dtype=np.float64) for values in (first, second))
    if not len(targets) == len(first) == len(second):
        raise ValueError(f"paired scores must cover the same images: {len(targets)}, {len(first)}, {len(second)}")
    if metric not in METRIC_NAMES:
        raise ValueError(f"unknown metric {metric!r}; choose one of {', '.join(METRIC_NAMES)}")
    rng = np.random.default_rng(seed)
    differences = []
    for _ in range(n_resamples):
        picks = rng.integers(0, len(targets), len(targets))
        if len(np.unique(targets[picks])) < 2:
            continue
        differences.append(
            fast_metrics(targets[picks], first[picks], threshold)[metric]
            - fast_metrics(targets[picks], second[picks], threshold)[metric]
        )
    tail = (1.0 - level) / 2.0 * 100
    observed = fast_metrics(targets, first, threshold)[metric] - fast_metrics(targets, second, threshold)[metric]
    return {
        "metric": metric,
        "difference": float(observed),
        "ci95": [float(np.nanpercentile(differences, tail)), float(np.nanpercentile(differences, 100 - tail))],
        "resamples": n_resamples,
        "seed": seed,
    }


def with_ci(result: dict, metric: str) -> str:
    """``"0.961 [0.946, 0.975]"``: a metric with its bootstrap interval, as every table shows it."""
    low, high = result["ci95"][metric]
    return f"{result[metric]:.3f} [{low:.3f}, {high:.3f}]"


def metrics_table(results: dict[str, dict]):
    """One column per named result (split or experiment), one row per metric with its interval, and n."""
    import pandas as pd

    return pd.DataFrame(
        {
            name: {metric: with_ci(result, metric) for metric in METRIC_NAMES} | {"n": result["n"]}
            for name, result in results.items()
        }
    )
