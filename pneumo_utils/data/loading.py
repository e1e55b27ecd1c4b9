"""From an index slice to arrays and ``tf.data``: images read through the one reader, then batched."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pneumo_utils.images import Preprocessing, load_images


def load_split(
    frame: pd.DataFrame, preprocessing: Preprocessing, population: int | None = None
) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """Read the images of an index slice: ``(images uint8 (n, s, s), targets, rows kept)``.

    Unreadable files are skipped with a warning naming each; more than 1% of ``population`` (the whole
    indexed data set; the slice itself when not given) stops the run.
    """
    images, mask, _ = load_images(list(frame["path"]), preprocessing, population=population)
    kept = frame[mask].reset_index(drop=True)
    return images, kept["target"].to_numpy(dtype=np.float32), kept


def make_dataset(
    images: np.ndarray,
    targets: np.ndarray | None = None,
    batch_size: int = 32,
    shuffle: bool = False,
    seed: int = 42,
):
    """A batched ``tf.data`` pipeline over preloaded images: cached, optionally shuffled, prefetched.

    Images go in as uint8 ``(n, s, s)`` and come out as float32 ``(batch, s, s, 1)`` in 0-255; the
    model rescales them itself, so every caller feeds the same range.
    """
    import tensorflow as tf

    features = tf.data.Dataset.from_tensor_slices(images)
    dataset = (
        features
        if targets is None
        else tf.data.Dataset.zip((features, tf.data.Dataset.from_tensor_slices(np.asarray(targets, dtype=np.float32))))
    )
    dataset = dataset.cache()
    if shuffle:
        dataset = dataset.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)

    def to_float(image, *target):
        image = tf.cast(image, tf.float32)[..., tf.newaxis]
        return (image, *target) if target else image

    dataset = dataset.batch(batch_size).map(to_float, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)
