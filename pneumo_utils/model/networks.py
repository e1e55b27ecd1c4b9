"""The networks: the CNN trained from scratch, ImageNet backbones with a trained head, and ensembles.

Every network takes uint8-range grayscale images ``(size, size, 1)``, augments (in training only) and rescales
inside itself, and ends in a ``logit`` layer followed by the one sigmoid ``probability`` head
(:func:`probability_head`), so Grad-CAM can explain the logit."""

from __future__ import annotations

import os
from pathlib import Path

import keras
from keras import layers

from pneumo_utils.model.layers import GrayscaleToRGB, PerImageStandardization, augmentation_block
from pneumo_utils.model.weights import fetch_imagenet, file_sha256, pinned_imagenet


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

    weights: ``None`` (random start), ``"imagenet"`` (Keras's official file: for a pinned backbone found in
    ``$PNEUMO_WEIGHTS_DIR`` or Keras's cache, else downloaded there, see :mod:`pneumo_utils.model.weights`) or the
    path of a weights file for the backbone. Grad-CAM explains the backbone's last
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
    spec = pinned_imagenet(backbone, alpha) if weights == "imagenet" else None
    if spec is not None:  # Keras's official file, found or downloaded as model/weights.py says, SHA-256 checked
        weights, weights_sha256 = str(fetch_imagenet(spec)), spec.sha256
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
