"""The model's own layers: augmentation that runs in training only, per-image standardization, and grayscale to
RGB for backbones made for colour photographs. Registered with Keras so saved models load in safe mode."""

from __future__ import annotations

import keras
import numpy as np
from keras import layers


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
    the ``sharpness`` cue of :mod:`pneumo_utils.data.audit`) averages 3.8-3.9 for the normals and 2.8-2.9 for
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


@keras.saving.register_keras_serializable(package="pneumo")
class GrayscaleToRGB(layers.Layer):
    """One grayscale channel repeated into three, for backbones made for colour photographs."""

    def call(self, inputs):
        return keras.ops.concatenate([inputs, inputs, inputs], axis=-1)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], 3)
