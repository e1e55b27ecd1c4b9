"""The shortcut audit: the cues (dark side bands, sharpness) a model could read instead of the lungs."""

import cv2
import numpy as np
import pytest

from pneumo_utils import data
from pneumo_utils.data import audit


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
