"""Grad-CAM heatmaps for the project's CNN, batched, and overlays on the X-ray.

For the sigmoid head the gradient is taken of the *logit* (before the sigmoid, which saturates), for
PNEUMONIA; for NORMAL of the negated logit. The per-image logit depends only on that image's features
(batch norm runs in inference mode), so the gradient of the batch's summed logits gives every image's
own gradient in one pass.
"""

from __future__ import annotations

import cv2
import keras
import numpy as np
import tensorflow as tf

EPSILON = 1e-8


def last_conv_layer_name(model: keras.Model) -> str:
    """The last 4-D convolution output of a functional model: the usual Grad-CAM target."""
    for layer in reversed(model.layers):
        if isinstance(layer, keras.layers.Conv2D | keras.layers.DepthwiseConv2D | keras.layers.SeparableConv2D):
            return layer.name
    raise ValueError(f"model {model.name!r} has no convolution layer to explain")


def _logit_output(model: keras.Model):
    try:
        return model.get_layer("logit").output
    except ValueError:
        raise ValueError(f"model {model.name!r} has no layer named 'logit'") from None


def gradcam(
    model: keras.Model,
    images: np.ndarray,
    layer_name: str | None = None,
    target_class: int = 1,
    batch_size: int = 32,
) -> np.ndarray:
    """Grad-CAM maps in [0, 1], one per image, upsampled to the image size: ``(n, s, s)`` float32.

    ``images`` are uint8-range arrays ``(n, s, s)`` as returned by ``read_image``. A map that is zero
    everywhere (no positive evidence) stays zero instead of turning into NaN.
    """
    if target_class not in (0, 1):
        raise ValueError(f"target_class must be 0 (NORMAL) or 1 (PNEUMONIA), got {target_class}")
    layer_name = layer_name or last_conv_layer_name(model)
    cam_model = keras.Model(model.inputs, [model.get_layer(layer_name).output, _logit_output(model)])
    sign = 1.0 if target_class == 1 else -1.0
    size = images.shape[1:3]
    maps = []
    for start in range(0, len(images), batch_size):
        batch = tf.convert_to_tensor(images[start : start + batch_size, ..., None], dtype=tf.float32)
        with tf.GradientTape() as tape:
            activations, logits = cam_model(batch, training=False)
            score = tf.reduce_sum(sign * logits)
        gradients = tape.gradient(score, activations)
        weights = tf.reduce_mean(gradients, axis=(1, 2), keepdims=True)  # per image, per channel
        cams = tf.nn.relu(tf.reduce_sum(weights * activations, axis=-1)).numpy()
        peaks = cams.reshape(len(cams), -1).max(axis=1)[:, None, None]
        cams = cams / np.maximum(peaks, EPSILON)
        maps.extend(cv2.resize(cam, (size[1], size[0]), interpolation=cv2.INTER_LINEAR) for cam in cams)
    return np.clip(np.stack(maps), 0.0, 1.0).astype(np.float32) if maps else np.zeros((0, *size), np.float32)


OUTCOMES = {
    "PNEUMONIA, correct": (1, 1),
    "PNEUMONIA, missed": (1, 0),
    "NORMAL, correct": (0, 0),
    "NORMAL, false alarm": (0, 1),
}


def pick_examples(frame, threshold: float, per_group: int, seed: int = 0):
    """Up to ``per_group`` rows of each outcome (true/false per class), from a frame with
    ``target`` and ``probability`` columns; the rows get an ``outcome`` column."""
    import pandas as pd

    predicted = (frame["probability"] >= threshold).astype(int)
    picked = []
    for outcome, (target, prediction) in OUTCOMES.items():
        rows = frame[(frame["target"] == target) & (predicted == prediction)]
        if len(rows):
            picked.append(rows.sample(min(per_group, len(rows)), random_state=seed).assign(outcome=outcome))
    return pd.concat(picked, ignore_index=True) if picked else frame.iloc[:0].assign(outcome=[])


def overlay(image: np.ndarray, cam: np.ndarray, alpha: float = 0.4, colormap: int = cv2.COLORMAP_JET) -> np.ndarray:
    """The heatmap over the grayscale X-ray as an RGB uint8 image."""
    heat = cv2.applyColorMap(np.uint8(255 * np.clip(cam, 0, 1)), colormap)
    base = cv2.cvtColor(image.astype(np.uint8), cv2.COLOR_GRAY2BGR)
    blended = cv2.addWeighted(heat, alpha, base, 1 - alpha, 0)
    return cv2.cvtColor(blended, cv2.COLOR_BGR2RGB)


def border_mass_share(cams: np.ndarray, border_fraction: float = 0.15) -> np.ndarray:
    """Share of each map's mass within ``border_fraction`` of the edges, where markers and text live."""
    n, height, width = cams.shape
    inner = np.zeros((height, width), dtype=bool)
    dy, dx = int(height * border_fraction), int(width * border_fraction)
    inner[dy : height - dy, dx : width - dx] = True
    total = cams.reshape(n, -1).sum(axis=1)
    border = cams[:, ~inner].sum(axis=1)
    return np.where(total > 0, border / np.maximum(total, EPSILON), np.nan)
