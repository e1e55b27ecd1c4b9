"""Small helpers shared by the tests."""

from pathlib import Path

import numpy as np

SHARED_TRAIN = Path(__file__).resolve().parents[2] / "shared" / "data" / "chest_xray" / "train"


def real_training_files(count_per_class: int = 3) -> list[Path]:
    """A handful of real file names from ../shared when it exists (CI has it), else an empty list."""
    files = []
    for label in ("NORMAL", "PNEUMONIA"):
        folder = SHARED_TRAIN / label
        if folder.is_dir():
            files += sorted(folder.glob("*.jpeg"))[:count_per_class]
    return files


def write_png(path: Path, array: np.ndarray) -> Path:
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), array):
        raise OSError(f"could not write {path}")
    return path
