"""Scoring new files: collect inputs, read them with the model card's preprocessing, predict in batches.

A file that cannot be read gets an error message (naming the file and the problem) instead of a
probability; the other files are still scored.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pneumo_utils.images import ImageReadError, Preprocessing, is_image_file, read_image

LABELS = ("NORMAL", "PNEUMONIA")


class InputPathError(ValueError):
    """A path given on the command line that does not exist (a usage error)."""


@dataclass
class Scored:
    path: str
    probability: float | None = None
    label: str | None = None
    error: str = ""
    image: np.ndarray | None = None


def collect_inputs(paths: list[str | os.PathLike]) -> tuple[list[Path], list[str]]:
    """Files as given, folders searched recursively for images (sorted).

    Returns the files and one message per folder that holds no image. A path that does not exist
    raises :class:`InputPathError`.
    """
    files, messages = [], []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            found = sorted(item for item in path.rglob("*") if item.is_file() and is_image_file(item))
            if not found:
                messages.append(f"{path}: folder holds no .jpeg/.jpg/.png images")
            files.extend(found)
        elif path.exists():
            files.append(path)
        else:
            raise InputPathError(f"{path}: no such file or folder")
    return files, messages


def read_inputs(files: list[Path], preprocessing: Preprocessing) -> list[Scored]:
    """Read every file; unreadable ones carry their error message."""
    records = []
    for path in files:
        try:
            records.append(Scored(str(path), image=read_image(path, preprocessing)))
        except ImageReadError as error:
            records.append(Scored(str(path), error=str(error)))
        except OSError as error:
            records.append(Scored(str(path), error=f"{path}: {error.strerror or error}"))
    return records


def score(network, records: list[Scored], threshold: float, batch_size: int = 64) -> list[Scored]:
    """Fill in probability and label for the readable records, predicting in batches."""
    from pneumo_utils.evaluate import predict_probabilities

    readable = [record for record in records if record.image is not None]
    if readable:
        probabilities = predict_probabilities(network, np.stack([r.image for r in readable]), batch_size)
        for record, probability in zip(readable, probabilities, strict=True):
            record.probability = float(probability)
            record.label = LABELS[int(probability >= threshold)]
    return records
