"""Stress validation: the validation split under seeded acquisition-like changes.

The official test split is known to differ from train/ (other exposure, framing and prevalence), and a
validation split carved from train/ cannot show that. As a proxy that never touches the test split, we
score the validation images again after changes that X-ray acquisition produces: gamma (exposure), lower
contrast, blur, noise, and tighter or looser framing. Each change is applied to the resized grayscale
image *before* the model's own finishing steps (such as CLAHE), so preprocessing that normalizes
exposure gets credit for it.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from pneumo_utils import data, evaluate
from pneumo_utils.config import portable_path
from pneumo_utils.images import Preprocessing, after_resize
from pneumo_utils.model.inference import card_split, predict_probabilities
from pneumo_utils.model.store import load_model
from pneumo_utils.records import write_json_atomic


def _gamma(image, value):
    return np.clip(255.0 * (image / 255.0) ** value, 0, 255)


def _zoom(image, factor):
    size = image.shape[0]
    if factor > 1:  # tighter framing: crop the centre and stretch it back
        crop = int(round(size / factor))
        start = (size - crop) // 2
        return cv2.resize(image[start : start + crop, start : start + crop], (size, size), interpolation=cv2.INTER_AREA)
    small = int(round(size * factor))  # looser framing: shrink and pad with black
    canvas = np.zeros_like(image)
    start = (size - small) // 2
    canvas[start : start + small, start : start + small] = cv2.resize(
        image, (small, small), interpolation=cv2.INTER_AREA
    )
    return canvas


PERTURBATIONS = {
    "gamma 0.6 (overexposed look)": lambda image, rng: _gamma(image, 0.6),
    "gamma 1.6 (underexposed look)": lambda image, rng: _gamma(image, 1.6),
    "contrast x0.6": lambda image, rng: image * 0.6 + 0.2 * 255,
    "blur sigma 1.5 px": lambda image, rng: cv2.GaussianBlur(image, (0, 0), 1.5),
    "noise sd 10": lambda image, rng: image + rng.normal(0, 10, image.shape),
    "zoom in 1.15": lambda image, rng: _zoom(image, 1.15),
    "zoom out 0.85": lambda image, rng: _zoom(image, 0.85),
}


def perturb(raw: np.ndarray, name: str, preprocessing: Preprocessing, seed: int = 0) -> np.ndarray:
    """Apply one named change to raw resized uint8 images, then the model's finishing steps."""
    rng = np.random.default_rng(seed)
    change = PERTURBATIONS[name]
    return np.stack(
        [
            after_resize(np.clip(change(image.astype(np.float32), rng), 0, 255).astype(np.uint8), preprocessing)
            for image in raw
        ]
    )


def stress_validation(model_path: str | os.PathLike, data_dir: str | os.PathLike, seed: int = 0) -> dict:
    """ROC-AUC, sensitivity and specificity (at the stored threshold) on the validation split, clean and
    under each change; plus their means over the changes."""
    network, card = load_model(model_path)
    preprocessing = card.preprocessing
    raw_preprocessing = Preprocessing(image_size=preprocessing.image_size, clahe=False)
    index = data.index_dataset(data_dir)
    raw, targets, _, _ = card_split(card, index, "val", raw_preprocessing)
    threshold = card.threshold
    conditions = {"clean": np.stack([after_resize(image, preprocessing) for image in raw])}
    conditions.update({name: perturb(raw, name, preprocessing, seed) for name in PERTURBATIONS})
    results = {}
    for name, images in conditions.items():
        metrics = evaluate.compute_metrics(targets, predict_probabilities(network, images), threshold)
        results[name] = {key: metrics[key] for key in ("roc_auc", "sensitivity", "specificity", "accuracy")}
    changed = [results[name] for name in PERTURBATIONS]
    summary = {key: float(np.mean([item[key] for item in changed])) for key in changed[0]}
    return {
        "split": "validation (patient-grouped split of train/), clean and perturbed",
        "model": portable_path(model_path),
        "threshold": threshold,
        "conditions": results,
        "mean_over_changes": summary,
        "worst_specificity": float(min(item["specificity"] for item in changed)),
        "worst_sensitivity": float(min(item["sensitivity"] for item in changed)),
    }


def write_stress(folder: str | os.PathLike, data_dir: str | os.PathLike) -> Path:
    """Stress-validate ``folder/model.keras`` and write ``folder/robustness.json``."""
    folder = Path(folder)
    return write_json_atomic(folder / "robustness.json", stress_validation(folder / "model.keras", data_dir))
