"""A small, seeded, X-ray-like data set in the standard layout, for tests and the smoke profile.

Each image is a dark field with a bright body, two darker lung fields, ribs and noise. PNEUMONIA images
carry diffuse opacities (soft bright blobs) inside the lungs, so a small CNN can learn the classes.
File names follow the public data set's patterns, a few patients have two images, one image is stored
twice byte for byte, and a ``.DS_Store`` sits beside the images, as in the real download.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np

from pneumo_utils.config import CLASS_NAMES

MARKER = ".synthetic.json"


def synthetic_xray(rng: np.random.Generator, size: int, pneumonia: bool) -> np.ndarray:
    """One X-ray-like uint8 image; ``pneumonia`` adds diffuse opacities to the lung fields."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    body = np.exp(-((((xx - 0.5) / 0.42) ** 2 + ((yy - 0.55) / 0.55) ** 2) ** 2)) * 150 + 30
    lungs = np.zeros_like(body)
    for center_x in (0.32, 0.68):
        center_x += rng.normal(0, 0.015)
        lungs += np.exp(-((((xx - center_x) / 0.13) ** 2 + ((yy - 0.5) / 0.25) ** 2) ** 1.5))
    image = body - 95 * np.clip(lungs, 0, 1)
    ribs = 0.5 + 0.5 * np.sin((yy * 18 + 3 * np.abs(xx - 0.5)) * np.pi + rng.uniform(0, np.pi))
    image += 18 * ribs * np.clip(lungs, 0, 1)
    if pneumonia:
        for _ in range(rng.integers(2, 5)):
            center_x = rng.choice([0.32, 0.68]) + rng.normal(0, 0.05)
            center_y = rng.uniform(0.35, 0.7)
            radius = rng.uniform(0.06, 0.12)
            blob = np.exp(-(((xx - center_x) ** 2 + (yy - center_y) ** 2) / (2 * radius**2)))
            image += rng.uniform(45, 75) * blob * np.clip(lungs, 0, 1)
    image += rng.normal(0, 6, image.shape)
    image = cv2.GaussianBlur(image, (0, 0), sigmaX=size / 160)
    return np.clip(image, 0, 255).astype(np.uint8)


def write_synthetic_dataset(
    root: str | os.PathLike,
    images_per_class: int = 40,
    image_size: int = 96,
    seed: int = 0,
    test_fraction: float = 0.25,
) -> Path:
    """Write ``<root>/{train,test}/{NORMAL,PNEUMONIA}`` and return ``root``.

    ``images_per_class`` is the number per class before the train/test split (patients never span it).
    """
    if images_per_class < 8:
        raise ValueError(f"images_per_class must be at least 8, got {images_per_class}")
    root = Path(root)
    rng = np.random.default_rng(seed)
    for target, class_name in enumerate(CLASS_NAMES):
        n_test = max(2, round(images_per_class * test_fraction))
        for index in range(images_per_class):
            pair = index % 5 in (0, 1)  # images 5k and 5k+1 belong to one patient (two images)
            first_of_patient = index - 1 if index % 5 == 1 else index
            split = "test" if first_of_patient < n_test else "train"  # a patient never spans splits
            patient = 100 + index // 5 if pair else 1000 + index
            if class_name == "NORMAL":
                batch = "NORMAL2-" if patient % 2 else ""  # two acquisition batches, as in the real set
                name = f"{batch}IM-{patient:04d}-{index + 1:04d}.jpeg"
            else:
                kind = "virus" if index % 3 == 0 else "bacteria"
                name = f"person{patient}_{kind}_{index + 1}.jpeg"
            folder = root / split / class_name
            folder.mkdir(parents=True, exist_ok=True)
            image = synthetic_xray(rng, image_size, pneumonia=bool(target))
            if index % 4 == 0:  # the real copy stores 3-channel JPEGs; mix both
                image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
            cv2.imwrite(str(folder / name), image, [cv2.IMWRITE_JPEG_QUALITY, 92])
        train_folder = root / "train" / class_name
        first = sorted(train_folder.iterdir())[0]
        (train_folder / f"copy_of_{first.name}").write_bytes(first.read_bytes())  # a byte-identical duplicate
        (train_folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (root / MARKER).write_text(
        json.dumps({"images_per_class": images_per_class, "image_size": image_size, "seed": seed})
    )
    return root


def ensure_synthetic_dataset(root: str | os.PathLike, images_per_class: int, image_size: int, seed: int) -> Path:
    """Write the synthetic set unless the same one (same settings) is already at ``root``."""
    root = Path(root)
    wanted = {"images_per_class": images_per_class, "image_size": image_size, "seed": seed}
    marker = root / MARKER
    if marker.is_file() and json.loads(marker.read_text()) == wanted:
        return root
    if marker.is_file():  # our own synthetic set with other settings: replace it whole
        shutil.rmtree(root)
    elif root.exists() and any(root.iterdir()):
        raise ValueError(f"{root}: exists and is not a synthetic data set; refusing to write into it")
    return write_synthetic_dataset(root, images_per_class, image_size, seed)
