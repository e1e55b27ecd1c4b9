"""Which images to explain: examples of each outcome (correct, missed, false alarm) and correct ones per class,
picked reproducibly from per-image scores."""

from __future__ import annotations

from pneumo_utils.config import CLASS_NAMES
from pneumo_utils.evaluate import outcome_of


def correct_by_class(frame, threshold: float, per_class: int, seed: int = 0) -> dict:
    """Up to ``per_class`` random correctly classified rows of each class: ``{label: rows}``."""
    correct = frame[(frame["probability"] >= threshold) == (frame["target"] == 1)]
    return {
        label: rows.sample(min(per_class, len(rows)), random_state=seed).reset_index(drop=True)
        for label, rows in correct.groupby("label")
    }


OUTCOMES = ("PNEUMONIA, correct", "PNEUMONIA, missed", "NORMAL, correct", "NORMAL, false alarm")  # grid order


def pick_examples(frame, threshold: float, per_group: int, seed: int = 0):
    """Up to ``per_group`` rows of each outcome (true/false per class), from a frame with
    ``target`` and ``probability`` columns; the rows get an ``outcome`` column."""
    import pandas as pd

    labels = [CLASS_NAMES[int(target)] for target in frame["target"]]
    outcomes = pd.Series(
        [
            f"{label}, {outcome_of(label, probability, threshold)}"
            for label, probability in zip(labels, frame["probability"], strict=True)
        ],
        index=frame.index,
    )
    picked = []
    for outcome in OUTCOMES:
        rows = frame[outcomes == outcome]
        if len(rows):
            picked.append(rows.sample(min(per_group, len(rows)), random_state=seed).assign(outcome=outcome))
    return pd.concat(picked, ignore_index=True) if picked else frame.iloc[:0].assign(outcome=[])
