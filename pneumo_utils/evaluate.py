"""Probabilities, the decision threshold, metrics and bootstrap confidence intervals."""

from __future__ import annotations

import numpy as np
from sklearn import metrics as skm

METRIC_NAMES = (
    "accuracy", "precision", "recall", "sensitivity", "specificity", "f1", "roc_auc", "pr_auc", "brier",
)


def predict_probabilities(model, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """P(PNEUMONIA) for uint8 images ``(n, s, s)``, in inference mode (no augmentation, no dropout)."""
    from pneumo_utils.data import make_dataset

    if len(images) == 0:
        return np.zeros(0, dtype=np.float32)
    return model.predict(make_dataset(images, batch_size=batch_size), verbose=0).reshape(-1).astype(np.float32)


def choose_threshold(targets: np.ndarray, probabilities: np.ndarray, min_sensitivity: float = 0.95) -> dict:
    """The highest threshold that keeps sensitivity >= ``min_sensitivity`` on these (validation) data.

    Missing pneumonia costs more than a false alarm, so the rule fixes sensitivity first and then
    takes the most specific threshold that still meets it.
    """
    targets = np.asarray(targets).astype(int)
    fpr, tpr, thresholds = skm.roc_curve(targets, probabilities, drop_intermediate=False)
    meets = np.flatnonzero(tpr >= min_sensitivity)
    position = meets[0]  # thresholds decrease along the curve: the first index that meets it is the highest
    threshold = float(min(thresholds[position], 1.0))
    return {
        "threshold": threshold,
        "rule": f"highest threshold with sensitivity >= {min_sensitivity:g} on the validation split",
        "min_sensitivity": min_sensitivity,
    }


def compute_metrics(targets: np.ndarray, probabilities: np.ndarray, threshold: float) -> dict:
    """All reported metrics at ``threshold`` (predicted PNEUMONIA when probability >= threshold)."""
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


def bootstrap_ci(
    targets: np.ndarray,
    probabilities: np.ndarray,
    threshold: float,
    n_resamples: int = 1000,
    seed: int = 0,
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
        values = compute_metrics(targets[picks], probabilities[picks], threshold)
        for name in METRIC_NAMES:
            samples[name].append(values[name])
    tail = (1.0 - level) / 2.0 * 100
    return {
        name: [float(np.nanpercentile(values, tail)), float(np.nanpercentile(values, 100 - tail))]
        for name, values in samples.items()
    }


def evaluate_probabilities(
    targets: np.ndarray, probabilities: np.ndarray, threshold: float, n_resamples: int = 1000, seed: int = 0
) -> dict:
    """Metrics plus their ``ci95`` intervals: the shape of every metrics JSON the project writes."""
    result = compute_metrics(targets, probabilities, threshold)
    result["ci95"] = bootstrap_ci(targets, probabilities, threshold, n_resamples=n_resamples, seed=seed)
    return result


def evaluate_saved_model(model_path, data_dir, split: str = "test", batch_size: int = 64) -> tuple[dict, dict]:
    """Score a saved model on one split with its card's preprocessing and threshold.

    ``split="val"`` rebuilds the patient-grouped validation split with the seed and fraction stored in
    the card, so it is exactly the split the threshold was chosen on. Returns the metrics (the keys of
    every metrics JSON) and a provenance record (model, its commit, data fingerprint, split, versions).
    """
    from pneumo_utils import data
    from pneumo_utils.images import Preprocessing
    from pneumo_utils.model import load_model
    from pneumo_utils.records import provenance

    index = data.index_dataset(data_dir)  # layout errors first: they need no model
    model, card = load_model(model_path)
    preprocessing = Preprocessing.from_dict(card["preprocessing"])
    frame = data.select_split(index, split, card["split"]["val_fraction"], card["split"]["seed"])
    images, targets, kept = data.load_split(frame, preprocessing)
    probabilities = predict_probabilities(model, images, batch_size=batch_size)
    metrics = evaluate_probabilities(targets, probabilities, card["threshold"]["value"])
    record = {"model": str(model_path), "model_git_commit": card.get("git_commit"),
              "model_trained": card.get("date"), "data_dir": str(data_dir),
              "data_fingerprint": data.dataset_fingerprint(index), "split": split,
              "images_in_split": int(len(frame)), "unreadable_skipped": int(len(frame) - len(kept)),
              "threshold_rule": card["threshold"].get("rule"), "bootstrap": {"resamples": 1000, "seed": 0},
              "evaluation": provenance()}
    return metrics, record
