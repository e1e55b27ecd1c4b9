"""Which images to explain: examples of each outcome (correct, missed, false alarm) and correct ones per class,
picked reproducibly from per-image scores.

The examples a figure shows are spread over their group's probabilities (its least and most confident, and
evenly between), not drawn at random: a random draw from a weak model shows the same p = 0.53 four times,
while a spread shows the reader how the maps change with the model's confidence. The images the Grad-CAM
checks measure are a random sample (:func:`correct_by_class`): they stand for their class."""

from __future__ import annotations

from pneumo_utils.config import CLASS_NAMES
from pneumo_utils.evaluate import outcome_of


def spread_over_probability(rows, count: int, seed: int = 0):
    """Up to ``count`` of ``rows`` spread evenly over their sorted probabilities, from the lowest to the
    highest; rows of equal probability are ordered by a seeded shuffle, so the pick is reproducible."""
    import numpy as np

    if count < 1:
        raise ValueError(f"the number of examples to pick must be at least 1, got {count}")
    if len(rows) <= count:
        return rows.sort_values("probability", kind="stable")
    shuffled = rows.sample(frac=1.0, random_state=seed)
    ordered = shuffled.sort_values("probability", kind="stable")
    positions = np.unique(np.round(np.linspace(0, len(ordered) - 1, count)).astype(int))
    return ordered.iloc[positions]


def correct_by_class(frame, threshold: float, per_class: int, seed: int = 0) -> dict:
    """Up to ``per_class`` random correctly classified rows of each class: ``{label: rows}``. Random, not
    spread: these are the sample the Grad-CAM checks measure, and a random sample stands for its class."""
    correct = frame[(frame["probability"] >= threshold) == (frame["target"] == 1)]
    return {
        label: rows.sample(min(per_class, len(rows)), random_state=seed).reset_index(drop=True)
        for label, rows in correct.groupby("label")
    }


OUTCOMES = ("PNEUMONIA, correct", "PNEUMONIA, missed", "NORMAL, correct", "NORMAL, false alarm")  # grid order


def pick_examples(frame, threshold: float, per_group: int, seed: int = 0):
    """Up to ``per_group`` rows of each outcome (true/false per class), spread over that outcome's
    probabilities, from a frame with ``target`` and ``probability`` columns; the rows get an ``outcome``
    column."""
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
            picked.append(spread_over_probability(rows, per_group, seed).assign(outcome=outcome))
    return pd.concat(picked, ignore_index=True) if picked else frame.iloc[:0].assign(outcome=[])


def probability_texts(probabilities, least: int = 2, most: int = 6) -> list[str]:
    """Each probability with the fewest decimals (from ``least`` to ``most``) that keeps different values
    different: a weak model's 0.52054 and 0.52058 would both read "0.52" and look like one image shown twice."""
    import numpy as np

    values = np.asarray(probabilities, dtype=float)
    distinct = len(np.unique(values))
    for decimals in range(least, most + 1):
        texts = [f"{value:.{decimals}f}" for value in values]
        if len(set(texts)) == distinct:
            return texts
    return [f"{value:.{most}f}" for value in values]
