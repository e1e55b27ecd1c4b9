"""Where a heatmap's mass lies: the lung-field centre against the border (where text markers and devices sit), as
per-image shares and summary statistics."""

from __future__ import annotations

import numpy as np

from pneumo_utils.explain.cam import EPSILON


def cam_statistics(cam: np.ndarray, border_fraction: float = 0.15) -> dict[str, float]:
    """Where one map's mass lies (central field, border band, corners) and where its peak is (0-1)."""
    shares = mass_shares(cam[None], border_fraction)
    peak_y, peak_x = np.unravel_index(int(np.argmax(cam)), cam.shape)
    return {
        "central_share": float(shares["central"][0]),
        "border_share": float(shares["border"][0]),
        "corner_share": float(shares["corners"][0]),
        "peak_x": round(peak_x / cam.shape[1], 3),
        "peak_y": round(peak_y / cam.shape[0], 3),
        "mean": float(cam.mean()),
    }


def region_masks(height: int, width: int, border_fraction: float = 0.15) -> dict[str, np.ndarray]:
    """Boolean masks: the central field (inside the border band), the border band, and its four corners.

    Laterality markers, text and burned-in labels sit in the band, mostly in the corners (Zech et al. 2018).
    """
    dy, dx = int(round(height * border_fraction)), int(round(width * border_fraction))
    central = np.zeros((height, width), dtype=bool)
    central[dy : height - dy, dx : width - dx] = True
    corners = np.zeros((height, width), dtype=bool)
    for rows in (slice(0, dy), slice(height - dy, height)):
        for columns in (slice(0, dx), slice(width - dx, width)):
            corners[rows, columns] = True
    return {"central": central, "border": ~central, "corners": corners}


def mass_shares(cams: np.ndarray, border_fraction: float = 0.15) -> dict[str, np.ndarray]:
    """Per map, the share of its mass in each region of :func:`region_masks` (NaN for an all-zero map)."""
    masks = region_masks(cams.shape[1], cams.shape[2], border_fraction)
    total = cams.reshape(len(cams), -1).sum(axis=1)
    shares = {}
    for name, mask in masks.items():
        mass = cams[:, mask].sum(axis=1)
        shares[name] = np.where(total > EPSILON, mass / np.maximum(total, EPSILON), np.nan)
    return shares
