"""Shortcut audit: do cues outside the lungs separate the classes?

A model learns whatever separates the classes in its training images. If the framing of the X-ray (dark
side bands from collimation, borders, text markers) differs between NORMAL and PNEUMONIA images of
``train/``, the model can score well on a random validation split by reading the framing, and fail on
images framed another way. This module measures such cues per image, per class and per acquisition
group, and how well each cue alone separates the classes (ROC-AUC; 0.5 means no signal).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pneumo_utils.data import load_split, normal_batch
from pneumo_utils.images import Preprocessing

AUDIT_SIZE = 224  # the data set's own size: band widths below are in its pixels
BAND_PIXELS = 12  # outer band width, at AUDIT_SIZE
DARK_LEVEL = 20  # "near-black": below this grey level (0-255)
CUES = {
    "side_band_dark_share": "share of near-black pixels in the outer left and right bands",
    "top_bottom_dark_share": "share of near-black pixels in the outer top and bottom bands",
    "side_band_mean": "mean grey level of the left and right bands",
    "centre_mean": "mean grey level of the central half (the lungs)",
    "centre_std": "contrast (standard deviation) of the central half",
    "sharpness": "fine detail: mean absolute difference between the image and its Gaussian blur (sigma 1.5 px)",
}
SHARPNESS_SIGMA = 1.5  # Gaussian blur of the sharpness cue, in pixels at AUDIT_SIZE


def cue_values(images: np.ndarray) -> pd.DataFrame:
    """The cues of :data:`CUES` for uint8 images ``(n, s, s)``; band widths scale with the image side."""
    size = images.shape[1]
    band = max(1, round(BAND_PIXELS * size / AUDIT_SIZE))
    quarter = size // 4
    sides = np.concatenate([images[:, :, :band], images[:, :, -band:]], axis=2).reshape(len(images), -1)
    top_bottom = np.concatenate([images[:, :band], images[:, -band:]], axis=1).reshape(len(images), -1)
    centre = images[:, quarter : size - quarter, quarter : size - quarter].reshape(len(images), -1)
    return pd.DataFrame(
        {
            "side_band_dark_share": (sides < DARK_LEVEL).mean(axis=1),
            "top_bottom_dark_share": (top_bottom < DARK_LEVEL).mean(axis=1),
            "side_band_mean": sides.mean(axis=1),
            "centre_mean": centre.mean(axis=1),
            "centre_std": centre.std(axis=1),
            "sharpness": _sharpness(images),
        }
    )


def _sharpness(images: np.ndarray) -> np.ndarray:
    """Mean absolute difference between each image and its Gaussian blur: low for soft, blurry films."""
    import cv2

    sigma = SHARPNESS_SIGMA * images.shape[1] / AUDIT_SIZE
    return np.array(
        [
            np.abs(image.astype(np.float32) - cv2.GaussianBlur(image.astype(np.float32), (0, 0), sigma)).mean()
            for image in images
        ]
    )


def acquisition_group(row) -> str:
    """NORMAL by batch (``IM`` / ``NORMAL2``), PNEUMONIA by kind (bacteria / virus) where the name says it."""
    name = str(row["path"]).rsplit("/", 1)[-1].lower()
    if row["target"] == 0:
        return f"NORMAL {normal_batch(name)}"
    return "PNEUMONIA " + ("virus" if "virus" in name else "bacteria" if "bacteria" in name else "other")


def shortcut_audit(rows: pd.DataFrame, image_size: int = AUDIT_SIZE) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Cue values for the given index rows: ``(mean per acquisition group, separation table)``.

    The separation table gives, for each cue, the ROC-AUC of the cue alone for PNEUMONIA against NORMAL
    (folded so that >= 0.5; 0.5 is no signal) and for one NORMAL batch against the other, which tells
    whether a cross-batch validation can see that cue at all.
    """
    from sklearn.metrics import roc_auc_score

    images, targets, kept = load_split(rows, Preprocessing(image_size=image_size))
    values = cue_values(images)
    values["group"] = kept.apply(acquisition_group, axis=1).to_numpy()
    groups = values.groupby("group")[list(CUES)].mean().round(3)
    groups["images"] = values.groupby("group").size()
    normal = targets == 0
    batches = values.loc[normal, "group"] == "NORMAL NORMAL2"
    separation = []
    for cue, meaning in CUES.items():
        entry = {"cue": cue, "meaning": meaning}
        for name, truth, scores in (
            ("PNEUMONIA vs NORMAL", targets, values[cue]),
            ("NORMAL2 vs IM normals", batches, values.loc[normal, cue]),
        ):
            if len(np.unique(truth)) == 2:
                auc = roc_auc_score(truth, scores)
                entry[f"AUC {name}"] = round(max(auc, 1 - auc), 3)
        separation.append(entry)
    return groups, pd.DataFrame(separation)
