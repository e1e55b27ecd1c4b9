"""Heatmaps drawn over the X-ray: the overlay, its colour bar and the side-by-side picture with a caption."""

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


COLOUR_BAR_LABELS = ("most evidence", "least")  # a map is scaled to its own maximum, so the bar has no units


def colour_bar(height: int, colormap: int = cv2.COLORMAP_JET, width: int = 16) -> np.ndarray:
    """The overlay's colour scale as an RGB strip ``height`` pixels tall, highest evidence at the top, with
    its two labels written beside it (white background)."""
    if height < 32:
        raise ValueError(f"a colour bar needs a picture at least 32 pixels tall, got {height}")
    ramp = np.linspace(255, 0, height).astype(np.uint8)[:, None].repeat(width, axis=1)
    bar = cv2.cvtColor(cv2.applyColorMap(ramp, colormap), cv2.COLOR_BGR2RGB)
    label_width = 8 * max(len(label) for label in COLOUR_BAR_LABELS) + 8
    strip = np.full((height, width + 6 + label_width, 3), 255, np.uint8)
    strip[:, 4 : 4 + width] = bar
    scale = 0.4 if height >= 160 else 0.3
    for text, row in ((COLOUR_BAR_LABELS[0], 12), (COLOUR_BAR_LABELS[1], height - 4)):
        cv2.putText(strip, text, (width + 8, row), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1, cv2.LINE_AA)
    return strip


def with_colour_bar(picture: np.ndarray, colormap: int = cv2.COLORMAP_JET) -> np.ndarray:
    """An RGB overlay with :func:`colour_bar` to its right, so a reader knows which colour means more."""
    return np.hstack([picture, colour_bar(picture.shape[0], colormap)])


def side_by_side(image: np.ndarray, cam: np.ndarray, caption: list[str], height: int = 384) -> np.ndarray:
    """The X-ray beside its heatmap overlay, under caption lines: an RGB uint8 picture for a PNG."""
    original = cv2.cvtColor(cv2.resize(image.astype(np.uint8), (height, height)), cv2.COLOR_GRAY2RGB)
    heat = cv2.resize(overlay(image, cam), (height, height))
    pictures = with_colour_bar(np.hstack([original, heat]))
    banner = np.full((10 + 24 * len(caption), pictures.shape[1], 3), 255, np.uint8)
    for line, text in enumerate(caption):
        cv2.putText(banner, text, (8, 25 + 24 * line), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
    return np.vstack([banner, pictures])
