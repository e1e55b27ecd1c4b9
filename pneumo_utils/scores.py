"""Per-image scores: the one file format in which a model's probabilities for a set of images are kept.

Every scored set (a run's ``metrics/scores_<split>.csv``, an experiment's ``test_dev_scores.csv``, a shift
view's ``scores.csv``) has the same columns, :data:`COLUMNS`. ``file`` is the image's path relative to the data
root (``test/NORMAL/IM-0001-0001.jpeg``), so two models' scores of the same images are matched on it (not on
the bare file name, which is not unique across folders) and the scores stay valid when the data folder moves.
Experiments, evaluation, the explorer and the report all write and read through :func:`write_scores` and
:func:`read_scores`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from pneumo_utils.evaluate import apply_temperature_to_logits, logits_of
from pneumo_utils.records import write_text_atomic

COLUMNS = ("file", "patient", "label", "target", "probability")
SPLIT_SCORES = "scores_{split}.csv"  # a run's per-image scores of one split, in its metrics folder


def split_scores_path(folder: str | os.PathLike, split: str) -> Path:
    """``<metrics folder>/scores_<split>.csv``."""
    return Path(folder) / SPLIT_SCORES.format(split=split)


def relative_file(path: str | os.PathLike) -> str:
    """An indexed image's path relative to its data root, with forward slashes: the index holds
    ``<root>/<split folder>/<class>/<name>`` and nothing deeper, so these are the last three parts."""
    return "/".join(Path(path).parts[-3:])


def scores_frame(rows: pd.DataFrame, probabilities=None) -> pd.DataFrame:
    """Index rows (with ``path``) and their probabilities (a ``probability`` column of ``rows`` when not
    given) in the columns of a scores file."""
    frame = rows.assign(file=[relative_file(path) for path in rows["path"]])
    if probabilities is not None:
        frame = frame.assign(probability=np.asarray(probabilities, dtype=float))
    if "probability" not in frame:
        raise ValueError("per-image scores need a probability for every image")
    return frame[[column for column in COLUMNS if column in frame]]


def write_scores(path: str | os.PathLike, rows: pd.DataFrame, probabilities=None) -> Path:
    """Write the per-image scores of ``rows`` (atomically) to ``path``."""
    return write_text_atomic(path, scores_frame(rows, probabilities).to_csv(index=False))


def read_scores(path: str | os.PathLike, data_root: str | os.PathLike | None = None) -> pd.DataFrame:
    """A scores file as written by :func:`write_scores`; with ``data_root``, a ``path`` column where each
    image is now."""
    frame = pd.read_csv(path)
    missing = [column for column in ("file", "probability") if column not in frame]
    if missing:
        raise ValueError(f"{path}: not a per-image scores file (no {', '.join(missing)} column)")
    if data_root is not None:
        frame["path"] = [str(Path(data_root) / name) for name in frame["file"]]
    return frame


def mean_logit_scores(frames: list[pd.DataFrame], mismatch: str) -> tuple[np.ndarray, np.ndarray]:
    """Targets and the probabilities of the mean logit of several models' scores of the same images (as an
    ensemble averages its members); ``mismatch`` is the error's message when the models scored other files."""
    for frame in frames[1:]:
        if list(frame["file"]) != list(frames[0]["file"]):
            raise ValueError(mismatch)
    logits = np.mean([logits_of(frame["probability"]) for frame in frames], axis=0)
    return frames[0]["target"].to_numpy(), apply_temperature_to_logits(logits, 1.0)


def confident_mistakes(frame: pd.DataFrame, threshold: float, count: int = 8) -> pd.DataFrame:
    """The ``count`` wrong predictions farthest from the threshold, with a ``confidence`` column."""
    wrong = frame[(frame["probability"] >= threshold) != (frame["target"] == 1)]
    return (
        wrong.assign(confidence=(wrong["probability"] - threshold).abs())
        .sort_values("confidence", ascending=False)
        .head(count)
        .reset_index(drop=True)
    )
