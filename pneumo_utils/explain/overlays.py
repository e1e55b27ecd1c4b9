"""Heatmaps drawn over the X-ray: the overlay and the side-by-side picture with a caption."""

from __future__ import annotations

import cv2
import numpy as np


def overlay(image: np.ndarray, cam: np.ndarray, alpha: float = 0.4, colormap: int = cv2.COLORMAP_JET) -> np.ndarray:
    """The heatmap over the grayscale X-ray as an RGB uint8 image."""
    cam = cv2.resize(cam, (image.shape[1], image.shape[0])) if cam.shape != image.shape[:2] else cam
    heat = cv2.applyColorMap(np.uint8(255 * np.clip(cam, 0, 1)), colormap)
    base = cv2.cvtColor(image.astype(np.uint8), cv2.COLOR_GRAY2BGR)
    blended = cv2.addWeighted(heat, alpha, base, 1 - alpha, 0)
    return cv2.cvtColor(blended, cv2.COLOR_BGR2RGB)


def side_by_side(image: np.ndarray, cam: np.ndarray, caption: list[str], height: int = 384) -> np.ndarray:
    """The X-ray beside its heatmap overlay, under caption lines: an RGB uint8 picture for a PNG."""
    original = cv2.cvtColor(cv2.resize(image.astype(np.uint8), (height, height)), cv2.COLOR_GRAY2RGB)
    heat = cv2.resize(overlay(image, cam), (height, height))
    banner = np.full((10 + 24 * len(caption), 2 * height, 3), 255, np.uint8)
    for line, text in enumerate(caption):
        cv2.putText(banner, text, (8, 25 + 24 * line), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
    return np.vstack([banner, np.hstack([original, heat])])
