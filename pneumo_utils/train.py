"""Fitting: class weights, early stopping on validation AUC, best-epoch checkpoints, history."""

from __future__ import annotations

import os
import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and TensorFlow in one call (Keras' own helper)."""
    keras.utils.set_random_seed(seed)


def class_weights(targets: np.ndarray) -> dict[int, float]:
    """Balanced weights ``n / (2 * n_class)``: the rarer class (NORMAL here) counts more in the loss."""
    targets = np.asarray(targets).astype(int)
    counts = np.bincount(targets, minlength=2)
    if (counts == 0).any():
        raise ValueError(f"both classes are needed to train; class counts are {counts.tolist()}")
    return {label: float(len(targets) / (2.0 * count)) for label, count in enumerate(counts)}


def compile_model(model: keras.Model, learning_rate: float) -> keras.Model:
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
        loss=keras.losses.BinaryCrossentropy(),
        metrics=[
            keras.metrics.BinaryAccuracy(name="accuracy"),
            keras.metrics.AUC(name="auc"),
            keras.metrics.Precision(name="precision"),
            keras.metrics.Recall(name="recall"),
        ],
    )
    return model


class _EpochTimer(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["epoch_seconds"] = time.perf_counter() - self._start


def fit(
    model: keras.Model,
    train_dataset,
    val_dataset,
    epochs: int,
    learning_rate: float,
    patience: int,
    class_weight: dict[int, float] | None,
    checkpoint_dir: str | os.PathLike,
    verbose: int = 2,
) -> pd.DataFrame:
    """Train with early stopping on ``val_auc`` (best weights restored); returns the history.

    The best epoch so far is also written to ``checkpoint_dir/best.keras`` so that an interrupted
    run leaves a usable model behind.
    """
    checkpoint_dir = Path(checkpoint_dir)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    compile_model(model, learning_rate)
    callbacks = [
        _EpochTimer(),
        keras.callbacks.EarlyStopping(monitor="val_auc", mode="max", patience=patience, restore_best_weights=True),
        keras.callbacks.ModelCheckpoint(
            checkpoint_dir / "best.keras", monitor="val_auc", mode="max", save_best_only=True
        ),
    ]
    history = model.fit(
        train_dataset,
        validation_data=val_dataset,
        epochs=epochs,
        class_weight=class_weight,
        callbacks=callbacks,
        shuffle=False,  # the tf.data pipeline shuffles, seeded
        verbose=verbose,
    )
    frame = pd.DataFrame(history.history)
    frame.insert(0, "epoch", np.arange(1, len(frame) + 1))
    return frame


def best_epoch(history: pd.DataFrame, monitor: str = "val_auc") -> int:
    """The epoch (1-based) whose weights early stopping kept."""
    return int(history.loc[history[monitor].idxmax(), "epoch"])
