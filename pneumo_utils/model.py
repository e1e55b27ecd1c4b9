"""The CNN, its model card, and safe saving and loading.

The model is a functional Keras model that takes uint8-range grayscale images ``(size, size, 1)``: it
augments (in training only) and rescales inside itself, so every caller feeds the output of
:func:`pneumo_utils.images.read_image` unchanged. The head ends in a ``logit`` layer followed by a
sigmoid ``probability`` layer, so Grad-CAM can use the logit.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any

import keras
import numpy as np
from keras import layers

from pneumo_utils.records import write_json_atomic

CARD_SUFFIX = ".json"


@keras.saving.register_keras_serializable(package="pneumo")
class RandomGamma(layers.Layer):
    """Random gamma per image in training (``255 * (x / 255) ** g``, log g uniform in +-log(1 + factor)).

    Exposure differences between machines act like a gamma change: bright, washed-out lungs look hazy,
    which is what pneumonia looks like. Training across gammas teaches the model not to read exposure.
    """

    def __init__(self, factor: float = 0.4, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.factor, self.seed = factor, seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=None):
        if not training or not self.factor:
            return inputs
        limit = float(np.log1p(self.factor))
        batch = keras.ops.shape(inputs)[0]
        log_gamma = keras.random.uniform((batch, 1, 1, 1), -limit, limit, seed=self.seed_generator)
        scaled = keras.ops.clip(inputs / 255.0, 1e-6, 1.0)
        return 255.0 * keras.ops.power(scaled, keras.ops.exp(log_gamma))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "factor": self.factor, "seed": self.seed}


@keras.saving.register_keras_serializable(package="pneumo")
class PerImageStandardization(layers.Layer):
    """Each image to zero mean and unit variance: the model no longer sees overall brightness or contrast."""

    def call(self, inputs):
        mean = keras.ops.mean(inputs, axis=(1, 2, 3), keepdims=True)
        std = keras.ops.std(inputs, axis=(1, 2, 3), keepdims=True)
        return (inputs - mean) / keras.ops.maximum(std, 1.0)

    def compute_output_shape(self, input_shape):
        return input_shape


def augmentation_block(rotation: float = 0.05, zoom: float = 0.1, shift: float = 0.05, contrast: float = 0.1,
                       brightness: float = 0.0, gamma: float = 0.0):
    """Random geometric and intensity changes, active only while training (Keras preprocessing layers).

    rotation is a fraction of a full turn, zoom and shift fractions of the image side, contrast and
    brightness fractions of the intensity range, gamma the spread of :class:`RandomGamma`; 0 turns a
    change off.
    """
    steps = []
    if rotation:
        steps.append(layers.RandomRotation(rotation, fill_mode="constant"))
    if zoom:
        steps.append(layers.RandomZoom(zoom, fill_mode="constant"))
    if shift:
        steps.append(layers.RandomTranslation(shift, shift, fill_mode="constant"))
    if contrast:
        steps.append(layers.RandomContrast(contrast, value_range=(0, 255)))
    if brightness:
        steps.append(layers.RandomBrightness(brightness, value_range=(0, 255)))
    if gamma:
        steps.append(RandomGamma(gamma))
    return keras.Sequential(steps or [layers.Identity()], name="augmentation")


def _conv_block(inputs, filters: int, name: str):
    x = inputs
    for step in (1, 2):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv{step}")(x)
        x = layers.BatchNormalization(name=f"{name}_bn{step}")(x)
        x = layers.Activation("relu", name=f"{name}_relu{step}")(x)
    return layers.MaxPooling2D(2, name=f"{name}_pool")(x)


def build_model(
    image_size: int,
    filters: tuple[int, ...] = (32, 64, 128, 256),
    dropout: float = 0.5,
    augment: bool = True,
    augmentation: dict[str, float] | None = None,
    normalization: str = "rescale",
    name: str = "pneumonia_cnn",
) -> keras.Model:
    """A from-scratch CNN: strided stem, conv blocks with batch norm, global pooling, dropout, logit.

    normalization: ``rescale`` divides by 255; ``standardize`` gives each image zero mean and unit
    variance (blind to overall brightness and contrast).
    """
    if image_size < 32:
        raise ValueError(f"image_size must be at least 32, got {image_size}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    inputs = keras.Input(shape=(image_size, image_size, 1), name="image")
    x = augmentation_block(**(augmentation or {}))(inputs) if augment else inputs
    if normalization == "rescale":
        x = layers.Rescaling(1.0 / 255.0, name="rescale")(x)
    elif normalization == "standardize":
        x = PerImageStandardization(name="standardize")(x)
    else:
        raise ValueError(f"normalization must be rescale or standardize, got {normalization!r}")
    x = layers.Conv2D(filters[0], 5, strides=2, padding="same", use_bias=False, name="stem_conv")(x)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.Activation("relu", name="stem_relu")(x)
    for number, width in enumerate(filters, start=1):
        x = _conv_block(x, width, name=f"block{number}")
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    logit = layers.Dense(1, name="logit")(x)
    probability = layers.Activation("sigmoid", name="probability", dtype="float32")(logit)
    return keras.Model(inputs, probability, name=name)


def card_path(model_path: str | os.PathLike) -> Path:
    """The model card sits beside the model: ``model.keras`` -> ``model.json``."""
    return Path(model_path).with_suffix(CARD_SUFFIX)


def make_card(
    config: dict[str, Any],
    preprocessing: dict[str, Any],
    threshold: dict[str, Any],
    validation_metrics: dict[str, Any],
    training: dict[str, Any],
    data: dict[str, Any],
) -> dict[str, Any]:
    """The model card: everything downstream needs to use the model as it was trained, and provenance."""
    from pneumo_utils.records import provenance

    return {
        "name": "pneumonia_cnn",
        "task": "binary classification of pediatric chest X-rays: NORMAL (0) vs PNEUMONIA (1)",
        "input": {"shape": [preprocessing["image_size"], preprocessing["image_size"], 1], "dtype": "float32",
                  "range": "0-255 (the model rescales itself)"},
        "preprocessing": preprocessing,
        "classes": ["NORMAL", "PNEUMONIA"],
        "output": "probability of PNEUMONIA (sigmoid); the 'logit' layer precedes it",
        "threshold": threshold,
        "split": {"method": "patient-grouped stratified split of train/", "val_fraction": config["val_fraction"],
                  "seed": config["seed"]},
        "validation_metrics": validation_metrics,
        "training": training,
        "data": data,
        "parameters": {key: config[key] for key in sorted(config) if key not in ("output_dir", "data_dir")},
        "intended_use": (
            "Teaching and research on pediatric chest X-rays (Kermany et al. 2018 data). "
            "Not a medical device; not for diagnosis or triage."
        ),
        "limitations": [
            "Trained on one hospital's pediatric anterior-posterior X-rays (Guangzhou, ages 1-5); "
            "performance on adults or other sites is unknown.",
            "Validation figures come from a patient-grouped split of train/, which is easier than the "
            "official test split; expect lower specificity on other data.",
            "Pneumonia labels do not distinguish bacterial from viral.",
        ],
        **provenance(),
    }


def save_model(model: keras.Model, path: str | os.PathLike, card: dict[str, Any]) -> Path:
    """Save the model and its card atomically: a crash leaves the previous model intact, never half a file."""
    path = Path(path)
    if path.suffix != ".keras":
        raise ValueError(f"{path}: model files must end in .keras")
    json.dumps(card, default=str)  # a card that cannot be written fails here, before anything is replaced
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.stem}.tmp{os.getpid()}.keras")
    # An uncompiled view of the same layers: the file holds the weights, not the optimizer's state.
    inference_model = keras.Model(model.inputs, model.outputs, name=model.name)
    try:
        inference_model.save(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    write_json_atomic(card_path(path), card)
    return path


class ModelLoadError(ValueError):
    """A model file that is missing, corrupt or not a Keras model."""


def load_model(path: str | os.PathLike) -> tuple[keras.Model, dict[str, Any]]:
    """Load a ``.keras`` model (safe mode on) and its card; clear one-line errors for bad files."""
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"{path}: model file does not exist")
    if path.suffix != ".keras":
        raise ModelLoadError(f"{path}: not a .keras model file")
    card_file = card_path(path)
    if not card_file.is_file():
        raise ModelLoadError(f"{card_file}: model card missing (it records the preprocessing and threshold)")
    try:
        card = json.loads(card_file.read_text())
    except json.JSONDecodeError as error:
        raise ModelLoadError(f"{card_file}: model card is not valid JSON ({error})") from None
    if not zipfile.is_zipfile(path):
        raise ModelLoadError(f"{path}: not a Keras model archive (a .keras file is a zip; this one is not)")
    try:
        model = keras.models.load_model(path, safe_mode=True, compile=False)
    except Exception as error:  # noqa: BLE001 - Keras raises many types for a bad file
        raise ModelLoadError(f"{path}: cannot load as a Keras model ({type(error).__name__}: {error})") from None
    return model, card
