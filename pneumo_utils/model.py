"""The CNN, its model card, and safe saving and loading.

The model is a functional Keras model that takes uint8-range grayscale images ``(size, size, 1)``: it
augments (in training only) and rescales inside itself, so every caller feeds the output of
:func:`pneumo_utils.images.read_image` unchanged. The head ends in a ``logit`` layer followed by a
sigmoid ``probability`` layer, so Grad-CAM can use the logit.
"""

from __future__ import annotations

import json
import math
import os
import weakref
import zipfile
from pathlib import Path
from typing import Any

import keras
import numpy as np
from keras import layers

from pneumo_utils.config import recorded_settings
from pneumo_utils.data import CLASS_NAMES
from pneumo_utils.outputs import first_line
from pneumo_utils.records import write_json_atomic

CARD_SUFFIX = ".json"


class _TrainingOnlyChange(layers.Layer):
    """A seeded random change of each image, applied in training only; ``factor`` 0 turns it off."""

    def __init__(self, factor: float, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.factor, self.seed = factor, seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=None):
        if not training or not self.factor:
            return inputs
        return self.change(inputs)

    def change(self, inputs):
        raise NotImplementedError

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "factor": self.factor, "seed": self.seed}


@keras.saving.register_keras_serializable(package="pneumo")
class RandomGamma(_TrainingOnlyChange):
    """Random gamma per image in training (``255 * (x / 255) ** g``, log g uniform in +-log(1 + factor)).

    Exposure differences between machines act like a gamma change: bright, washed-out lungs look hazy,
    which is what pneumonia looks like. Training across gammas teaches the model not to read exposure.
    """

    def __init__(self, factor: float = 0.4, seed: int | None = None, **kwargs):
        super().__init__(factor, seed, **kwargs)

    def change(self, inputs):
        limit = float(np.log1p(self.factor))
        batch = keras.ops.shape(inputs)[0]
        log_gamma = keras.random.uniform((batch, 1, 1, 1), -limit, limit, seed=self.seed_generator)
        scaled = keras.ops.clip(inputs / 255.0, 1e-6, 1.0)
        return 255.0 * keras.ops.power(scaled, keras.ops.exp(log_gamma))


@keras.saving.register_keras_serializable(package="pneumo")
class RandomBorderErase(_TrainingOnlyChange):
    """In training, black out a band of random width along each side of an image, each with probability 1/2.

    In ``train/`` the mean share of near-black pixels in the outer 12-pixel side bands is 0.68 and 0.64 for
    the two NORMAL batches and 0.37 for bacterial pneumonia (the shortcut audit of notebook 01,
    ``metrics/eda_summary.json``): framing, not lungs, separates the classes there. Giving both
    classes random dark bands makes that cue worth less to the model. ``factor`` is the widest band, as a
    fraction of the side.
    """

    def __init__(self, factor: float = 0.1, seed: int | None = None, **kwargs):
        super().__init__(factor, seed, **kwargs)

    def change(self, inputs):
        shape = keras.ops.shape(inputs)
        batch, height, width = shape[0], shape[1], shape[2]
        widths = keras.random.uniform((batch, 4), seed=self.seed_generator) * self.factor
        used = keras.random.uniform((batch, 4), seed=self.seed_generator) < 0.5
        bands = keras.ops.where(used, widths, keras.ops.zeros_like(widths))  # top, bottom, left, right
        rows = (keras.ops.cast(keras.ops.arange(height), "float32") + 0.5) / keras.ops.cast(height, "float32")
        columns = (keras.ops.cast(keras.ops.arange(width), "float32") + 0.5) / keras.ops.cast(width, "float32")
        erase_rows = (rows[None, :] < bands[:, 0:1]) | (rows[None, :] > 1.0 - bands[:, 1:2])
        erase_columns = (columns[None, :] < bands[:, 2:3]) | (columns[None, :] > 1.0 - bands[:, 3:4])
        erase = erase_rows[:, :, None, None] | erase_columns[:, None, :, None]
        return keras.ops.where(erase, keras.ops.zeros_like(inputs), inputs)


@keras.saving.register_keras_serializable(package="pneumo")
class RandomSharpness(_TrainingOnlyChange):
    """In training, blur or sharpen each image by a random amount: ``x + a (x - blur(x))``, ``a`` uniform in
    ``[-factor, factor]`` (``a = -1`` is the Gaussian blur itself, ``a > 0`` an unsharp mask).

    Acquisition systems and their post-processing differ in sharpness, and in ``train/`` sharpness also
    differs by class: the mean absolute difference between an image and its Gaussian blur (sigma 1.5 px,
    the ``sharpness`` cue of :mod:`pneumo_utils.audit`) averages 3.8-3.9 for the normals and 2.8-2.9 for
    pneumonia images, and the held-out NORMAL2 normals that the cross-batch view's e4 model scores above
    0.5 are the softer ones (median 3.0 against 3.9; ``results/experiments_notes.md``). Training across
    sharpness teaches the model not to lean on it.
    """

    SIGMA = 1.5  # in pixels of the model input
    RADIUS = 3

    def __init__(self, factor: float = 1.0, seed: int | None = None, **kwargs):
        super().__init__(factor, seed, **kwargs)
        offsets = np.arange(-self.RADIUS, self.RADIUS + 1, dtype="float32")
        line = np.exp(-0.5 * (offsets / self.SIGMA) ** 2)
        self.kernel_line = (line / line.sum()).astype("float32")

    def change(self, inputs):
        padded = keras.ops.pad(
            inputs, [[0, 0], [self.RADIUS, self.RADIUS], [self.RADIUS, self.RADIUS], [0, 0]], mode="symmetric"
        )  # mirrored edges: no dark rim from zero padding
        line = keras.ops.convert_to_tensor(self.kernel_line)
        blurred = keras.ops.conv(padded, keras.ops.reshape(line, (-1, 1, 1, 1)), padding="valid")
        blurred = keras.ops.conv(blurred, keras.ops.reshape(line, (1, -1, 1, 1)), padding="valid")
        batch = keras.ops.shape(inputs)[0]
        amount = keras.random.uniform((batch, 1, 1, 1), -self.factor, self.factor, seed=self.seed_generator)
        return keras.ops.clip(inputs + amount * (inputs - blurred), 0.0, 255.0)


@keras.saving.register_keras_serializable(package="pneumo")
class PerImageStandardization(layers.Layer):
    """Each image to zero mean and unit variance: the model no longer sees overall brightness or contrast."""

    def call(self, inputs):
        mean = keras.ops.mean(inputs, axis=(1, 2, 3), keepdims=True)
        std = keras.ops.std(inputs, axis=(1, 2, 3), keepdims=True)
        return (inputs - mean) / keras.ops.maximum(std, 1.0)

    def compute_output_shape(self, input_shape):
        return input_shape


def augmentation_block(
    rotation: float = 0.05,
    zoom: float = 0.1,
    shift: float = 0.05,
    contrast: float = 0.1,
    brightness: float = 0.0,
    gamma: float = 0.0,
    border: float = 0.0,
    sharpness: float = 0.0,
):
    """Random geometric and intensity changes, active only while training (Keras preprocessing layers).

    rotation is a fraction of a full turn, zoom and shift fractions of the image side, contrast and
    brightness fractions of the intensity range, gamma the spread of :class:`RandomGamma`, border the
    widest band of :class:`RandomBorderErase`, sharpness the largest blur or sharpening of
    :class:`RandomSharpness`; 0 turns a change off.
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
    if sharpness:
        steps.append(RandomSharpness(sharpness))
    if border:
        steps.append(RandomBorderErase(border))
    return keras.Sequential(steps or [layers.Identity()], name="augmentation")


def _conv_block(inputs, filters: int, name: str, batchnorm_momentum: float = 0.99):
    x = inputs
    for step in (1, 2):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv{step}")(x)
        x = layers.BatchNormalization(momentum=batchnorm_momentum, name=f"{name}_bn{step}")(x)
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
    batchnorm_momentum: float = 0.99,
) -> keras.Model:
    """A from-scratch CNN: strided stem, conv blocks with batch norm, global pooling, dropout, logit.

    normalization: ``rescale`` divides by 255; ``standardize`` gives each image zero mean and unit
    variance (blind to overall brightness and contrast). ``batchnorm_momentum``: how slowly the batch-norm
    statistics used at inference follow the training batches; Keras' 0.99 needs a few hundred steps to
    settle, so a training of a few dozen steps (the smoke profile) needs a lower value or it scores every
    image alike.
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
    x = layers.BatchNormalization(momentum=batchnorm_momentum, name="stem_bn")(x)
    x = layers.Activation("relu", name="stem_relu")(x)
    for number, width in enumerate(filters, start=1):
        x = _conv_block(x, width, name=f"block{number}", batchnorm_momentum=batchnorm_momentum)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    logit = layers.Dense(1, name="logit")(x)
    return keras.Model(inputs, probability_head(logit), name=name)


MEMBER_PREFIX = "member"


def probability_head(logit, name: str = "probability"):
    """The one head of every model here: the sigmoid of the ``logit`` layer, in float32 (also under mixed
    precision), so Grad-CAM and temperature scaling can always reach the logit just before it."""
    return layers.Activation("sigmoid", name=name, dtype="float32")(logit)


def build_ensemble(members: list[keras.Model], name: str = "pneumonia_ensemble") -> keras.Model:
    """One model whose logit is the mean of its members' logits, saved and loaded as one ``.keras`` file.

    Each member is a trained model of :func:`build_model` (a ``logit`` layer before the sigmoid). The
    ensemble takes the largest member input size; a smaller member gets an area ``Resizing`` in front.
    ``predict``, ``gradcam``, ``evaluate`` and the notebooks use it like a single model.
    """
    if not members:
        raise ValueError("an ensemble needs at least one member model")
    size = max(int(member.input_shape[1]) for member in members)
    inputs = keras.Input(shape=(size, size, 1), name="image")
    logits = []
    for number, member in enumerate(members, start=1):
        member_size = int(member.input_shape[1])
        x = (
            inputs
            if member_size == size
            else layers.Resizing(
                member_size, member_size, interpolation="area", name=f"{MEMBER_PREFIX}{number}_resize"
            )(inputs)
        )
        member_logit = keras.Model(member.inputs, member.get_layer("logit").output, name=f"{MEMBER_PREFIX}{number}")
        logits.append(member_logit(x))
    logit = layers.Average(name="logit")(logits) if len(logits) > 1 else layers.Identity(name="logit")(logits[0])
    return keras.Model(inputs, probability_head(logit), name=name)


def ensemble_members(network: keras.Model) -> list[keras.Model]:
    """The members of an ensemble from :func:`build_ensemble`, each as a model ending in its own sigmoid
    (so it can be explained alone); an empty list for a single model."""
    nested = [
        layer for layer in network.layers if isinstance(layer, keras.Model) and layer.name.startswith(MEMBER_PREFIX)
    ]
    members = []
    for member in nested:
        probability = probability_head(member.outputs[0], name=f"{member.name}_probability")
        members.append(keras.Model(member.inputs, probability, name=f"{member.name}_explained"))
    return members


def with_temperature(network: keras.Model, temperature: float) -> keras.Model:
    """The same model with its logit divided by ``temperature`` before the sigmoid (temperature scaling).

    The ``logit`` layer and everything before it are shared, so Grad-CAM, which explains the logit, and
    the ranking of images are unchanged; only the probabilities are recalibrated.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    logit = network.get_layer("logit").output
    scaled = layers.Rescaling(1.0 / float(temperature), name="temperature")(logit)
    return keras.Model(network.inputs, probability_head(scaled), name=network.name)


@keras.saving.register_keras_serializable(package="pneumo")
class GrayscaleToRGB(layers.Layer):
    """One grayscale channel repeated into three, for backbones made for colour photographs."""

    def call(self, inputs):
        return keras.ops.concatenate([inputs, inputs, inputs], axis=-1)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], 3)


# name: (constructor, the input scaling its ImageNet weights expect, as layers applied to a 0-255 image)
BACKBONES = {
    "efficientnetv2b0": ("EfficientNetV2B0", "own"),  # rescales inside itself (include_preprocessing)
    "densenet121": ("DenseNet121", "torch"),  # /255, then ImageNet mean and standard deviation
    "resnet50v2": ("ResNet50V2", "tf"),  # to [-1, 1]
    "mobilenetv3small": ("MobileNetV3Small", "own"),
    "mobilenetv2": ("MobileNetV2", "tf"),  # to [-1, 1]; width set by alpha (0.35, 0.5, ...)
}
WIDTH_BACKBONES = ("mobilenetv2", "mobilenetv3small")  # the ones whose constructor takes alpha


class WeightsFileError(ValueError):
    """A backbone weights file that is missing or is not the file the settings name by its SHA-256."""


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file, read in 1 MiB blocks."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_weights_file(weights: str | os.PathLike, expected_sha256: str | None = None) -> str:
    """The SHA-256 of a backbone weights file; raises when the file is missing or differs from
    ``expected_sha256`` (the card records it, so a model says which ImageNet bytes it started from)."""
    path = Path(weights)
    if not path.is_file():
        raise WeightsFileError(f"{path}: weights file does not exist")
    digest = file_sha256(path)
    if expected_sha256 and digest != expected_sha256.lower():
        raise WeightsFileError(f"{path}: SHA-256 is {digest}, not the expected {expected_sha256}")
    return digest


_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def build_backbone_model(
    image_size: int,
    backbone: str,
    weights: str | None = None,
    dropout: float = 0.3,
    augment: bool = True,
    augmentation: dict[str, float] | None = None,
    name: str = "pneumonia_cnn",
    alpha: float = 1.0,
    weights_sha256: str | None = None,
    trainable: bool = True,
    head_l2: float = 0.0,
) -> keras.Model:
    """A ``keras.applications`` backbone with the project's head: augmentation, grayscale to three
    channels, the backbone's own input scaling, global pooling, dropout, ``logit``, sigmoid.

    weights: ``None`` (random start), ``"imagenet"`` (Keras downloads and caches them on first use; needs
    internet) or the path of a weights file for the backbone. Grad-CAM explains the backbone's last
    feature map (the nested backbone layer itself). ``alpha`` is the width multiplier of the MobileNets
    (Keras ships ImageNet weights for MobileNetV2 at 0.35, 0.5, 0.75, 1.0, 1.3, 1.4); a weights file is
    checked against ``weights_sha256`` when that is given.

    ``trainable=False`` freezes the backbone (its batch-norm statistics included: it always runs in inference
    mode) and trains only the head, whose pooled features are batch-normalized and whose ``logit`` weights get
    an L2 penalty ``head_l2``: a regularized linear probe of the ImageNet features, which keeps them as they
    were instead of bending them to the training period.
    """
    if backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {backbone!r}; choose one of {', '.join(sorted(BACKBONES))}")
    if weights not in (None, "imagenet"):
        if not Path(str(weights)).is_file():
            raise ValueError(f"weights must be null, imagenet or an existing weights file; {weights} does not exist")
        check_weights_file(weights, weights_sha256)
    constructor_name, scaling = BACKBONES[backbone]
    constructor = getattr(keras.applications, constructor_name)
    extra = {"include_preprocessing": True} if scaling == "own" else {}
    if backbone in WIDTH_BACKBONES:
        extra["alpha"] = float(alpha)
    elif alpha != 1.0:
        raise ValueError(f"alpha (a width multiplier) applies to {', '.join(WIDTH_BACKBONES)}, not {backbone}")
    network = constructor(
        include_top=False, weights=weights, input_shape=(image_size, image_size, 3), pooling=None, **extra
    )
    inputs = keras.Input(shape=(image_size, image_size, 1), name="image")
    x = augmentation_block(**(augmentation or {}))(inputs) if augment else inputs
    x = GrayscaleToRGB(name="to_rgb")(x)
    if scaling == "tf":
        x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="backbone_scaling")(x)
    elif scaling == "torch":
        x = layers.Rescaling(1.0 / 255.0, name="backbone_rescale")(x)
        x = layers.Normalization(
            mean=_IMAGENET_MEAN, variance=[value**2 for value in _IMAGENET_STD], name="backbone_scaling"
        )(x)
    if not trainable:
        network.trainable = False
    x = network(x, training=False) if not trainable else network(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    if not trainable:
        x = layers.BatchNormalization(name="feature_norm")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    regularizer = keras.regularizers.L2(head_l2) if head_l2 else None
    logit = layers.Dense(1, kernel_regularizer=regularizer, name="logit")(x)
    return keras.Model(inputs, probability_head(logit), name=name)


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

    members = config.get("members") or []
    kind = (
        f"ensemble of {len(members)} members (the mean of their logits)"
        if members
        else f"{config['backbone']} backbone with a trained head"
        if config.get("backbone")
        else "CNN trained from scratch"
    )
    return {
        "name": Path(config.get("model_path") or "pneumonia_cnn").stem,
        "kind": kind,
        "task": "binary classification of pediatric chest X-rays: NORMAL (0) vs PNEUMONIA (1)",
        "input": {
            "shape": [preprocessing["image_size"], preprocessing["image_size"], 1],
            "dtype": "float32",
            "range": "0-255 (the model rescales itself)",
        },
        "preprocessing": preprocessing,
        "classes": list(CLASS_NAMES),
        "output": "probability of PNEUMONIA (sigmoid); the 'logit' layer precedes it",
        "threshold": threshold,
        "split": {
            "method": "patient-grouped stratified split of train/",
            "val_fraction": config["val_fraction"],
            "seed": config["seed"],
        },
        "validation_metrics": validation_metrics,
        "training": training,
        "data": data,
        "parameters": recorded_settings(config),
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
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ModelLoadError(f"{card_file}: model card is not valid JSON ({error})") from None
    if not zipfile.is_zipfile(path):
        raise ModelLoadError(f"{path}: not a Keras model archive (a .keras file is a zip; this one is not)")
    check_card(card, card_file)
    try:
        model = keras.models.load_model(path, safe_mode=True, compile=False)
    except Exception as error:  # noqa: BLE001 - Keras raises many types for a bad file
        raise ModelLoadError(
            f"{path}: cannot load as a Keras model ({type(error).__name__}: {first_line(error)})"
        ) from None
    check_model(model, card, path)
    _SOURCES[model] = str(path)
    return model, card


_SOURCES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def source_of(network) -> str:
    """The file a loaded model came from (for messages), or its name for a model built in memory."""
    try:
        return _SOURCES.get(network) or f"model {network.name!r}"
    except TypeError:
        return f"model {getattr(network, 'name', '?')!r}"


MAX_IMAGE_SIZE = 1024  # the largest input side a card may ask for (memory grows with its square)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


# card field -> (what it must be, the check); a field that is present must pass, a required one must be present
CARD_FIELDS: dict[str, tuple[str, Any, bool]] = {
    "preprocessing.image_size": (
        f"an integer from 16 to {MAX_IMAGE_SIZE}",
        lambda v: isinstance(v, int) and not isinstance(v, bool) and 16 <= v <= MAX_IMAGE_SIZE,
        True,
    ),
    "preprocessing.clahe": ("true or false", lambda v: isinstance(v, bool), False),
    "preprocessing.color_mode": ("'grayscale'", lambda v: v == "grayscale", False),
    "preprocessing.interpolation": ("'area'", lambda v: v == "area", False),
    "preprocessing.high_bit_depth": ("'min-max to 8 bit'", lambda v: v == "min-max to 8 bit", False),
    "threshold.value": ("a number between 0 and 1", lambda v: _number(v) and 0.0 <= v <= 1.0, True),
    "threshold.min_sensitivity": ("a number in (0, 1]", lambda v: _number(v) and 0.0 < v <= 1.0, False),
    "classes": ("['NORMAL', 'PNEUMONIA']", lambda v: v == ["NORMAL", "PNEUMONIA"], False),
    "name": ("a string", lambda v: isinstance(v, str), False),
    "kind": ("a string", lambda v: isinstance(v, str), False),
    "validation_metrics.calibration.temperature": ("a positive number", lambda v: _number(v) and v > 0, False),
    "site_calibration.temperature": ("a positive number", lambda v: _number(v) and v > 0, False),
}
_MISSING = object()


def _field(card: dict[str, Any], dotted: str) -> Any:
    value: Any = card
    for key in dotted.split("."):
        if not isinstance(value, dict) or key not in value:
            return _MISSING
        value = value[key]
    return value


def check_card(card: Any, card_file: str | os.PathLike) -> None:
    """Every field the project reads from a card is checked when the model is loaded: its type, range or
    allowed values (:data:`CARD_FIELDS`). The first field that is wrong stops the load in one line naming it,
    before any image is read: a card that says ``"clahe": "yes"`` must not quietly change what the model sees."""
    if not isinstance(card, dict):
        raise ModelLoadError(f"{card_file}: model card must be a JSON object, not {type(card).__name__}")
    for dotted, (expected, valid, required) in CARD_FIELDS.items():
        value = _field(card, dotted)
        if value is _MISSING:
            if required:
                raise ModelLoadError(f"{card_file}: model card lacks {dotted} ({expected})")
            continue
        if not valid(value):
            raise ModelLoadError(f"{card_file}: model card field {dotted} must be {expected}, got {value!r:.60}")


def check_model(network: keras.Model, card: dict[str, Any], path: str | os.PathLike) -> None:
    """The model must take one grayscale image of the card's size and give one probability."""
    if len(network.inputs) != 1 or len(network.outputs) != 1:
        raise ModelLoadError(
            f"{path}: the model must have one input and one output "
            f"(it has {len(network.inputs)} and {len(network.outputs)})"
        )
    shape = tuple(network.inputs[0].shape)
    size = card["preprocessing"]["image_size"]
    if len(shape) != 4 or shape[-1] != 1:
        raise ModelLoadError(
            f"{path}: the model takes input of shape {shape[1:]}; this project feeds grayscale "
            f"images ({size}, {size}, 1)"
        )
    if shape[1:3] != (size, size):  # also a model that takes any size: the card alone must not decide memory
        raise ModelLoadError(f"{path}: the model takes {shape[1]}x{shape[2]} images but its card says {size}")
    if tuple(network.outputs[0].shape)[-1] != 1:
        raise ModelLoadError(
            f"{path}: the model gives {tuple(network.outputs[0].shape)[-1]} outputs per image; "
            "this project expects one probability of pneumonia"
        )
