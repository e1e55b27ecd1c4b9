"""Running a network on images: probabilities in inference mode, checked so that a broken model never yields a
label."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pneumo_utils import data
from pneumo_utils.data import make_dataset
from pneumo_utils.images import Preprocessing
from pneumo_utils.model.card import ModelCard
from pneumo_utils.model.store import source_of


class InvalidScores(RuntimeError):
    """A model gave scores that are not probabilities (NaN, infinite, or outside [0, 1]): no label may come
    from it. The message names the model."""


def check_scores(probabilities: np.ndarray, source: str) -> np.ndarray:
    """``probabilities`` unchanged when every one is a finite number in [0, 1]; else :class:`InvalidScores`."""
    bad = ~np.isfinite(probabilities) | (probabilities < 0.0) | (probabilities > 1.0)
    if bad.any():
        example = probabilities[bad][0]
        raise InvalidScores(
            f"{source}: gave {int(bad.sum())} of {len(probabilities)} scores that are not "
            f"probabilities (e.g. {example:.4g}); the model is broken or its output is not a "
            "sigmoid, so no label is given"
        )
    return probabilities


def predict_probabilities(model, images: np.ndarray, batch_size: int = 64, source: str | None = None) -> np.ndarray:
    """P(PNEUMONIA) for uint8 images ``(n, s, s)``, in inference mode (no augmentation, no dropout); checked
    (:func:`check_scores`) so that a broken model never yields a label. ``source`` names the model in errors."""
    if len(images) == 0:
        return np.zeros(0, dtype=np.float32)
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    scores = model.predict(make_dataset(images, batch_size=batch_size), verbose=0).reshape(-1).astype(np.float32)
    if source is None:
        source = source_of(model)
    return check_scores(scores, source)


def card_split(
    card: ModelCard, index: pd.DataFrame, split: str, preprocessing: Preprocessing | None = None
) -> tuple[np.ndarray, np.ndarray, pd.DataFrame, int]:
    """One split of the index as the model's card says: selected with the card's seed and validation fraction
    (so ``val`` is exactly the split its threshold was chosen on) and read with the card's preprocessing (or
    ``preprocessing``). Returns ``(images, targets, rows read, rows in the split)``; unreadable files are
    skipped as :func:`pneumo_utils.data.load_split` says."""
    rows = data.select_split(index, split, card.val_fraction, card.seed)
    preprocessing = preprocessing or card.preprocessing
    images, targets, kept = data.load_split(rows, preprocessing, population=len(index))
    return images, targets, kept, len(rows)
