"""Grad-CAM and Grad-CAM++ maps of a model's logit: batched, for plain models, backbones and ensembles (one map per
member, averaged)."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import keras
import numpy as np
import tensorflow as tf

from pneumo_utils.images import resize_all
from pneumo_utils.model import ensemble_members, predict_probabilities, source_of

EPSILON = 1e-8


class ExplainError(ValueError):
    """A model Grad-CAM cannot explain (no convolution, no sigmoid logit, no such layer): one line."""


CONV_TYPES = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.SeparableConv2D)


def _children(layer) -> list:
    return [child for child in getattr(layer, "layers", []) if not isinstance(child, keras.layers.InputLayer)]


def _find_layer(container, name: str):
    """Depth-first search for a layer by name, inside nested models too."""
    for layer in _children(container):
        if layer.name == name:
            return layer
        found = _find_layer(layer, name) if _children(layer) else None
        if found is not None:
            return found
    return None


def last_conv_layer_name(model: keras.Model) -> str:
    """The last convolution of the model (nested backbones searched too): the usual Grad-CAM target."""
    for layer in reversed(_children(model)):
        if isinstance(layer, CONV_TYPES):
            return layer.name
        if _children(layer):
            if not _is_chain(layer) and len(layer.output.shape) == 4:
                return layer.name  # a branched backbone (EfficientNet, DenseNet): its last feature map
            try:
                return last_conv_layer_name(layer)
            except ValueError:
                continue
    raise ExplainError(f"model {model.name!r} has no convolution layer to explain")


def _is_chain(model) -> bool:
    """True when every layer of a functional model feeds only the next one (no branches)."""
    if isinstance(model, keras.Sequential):
        return True
    layers = model.layers
    try:
        for previous, layer in zip(layers, layers[1:], strict=False):
            inputs = layer._inbound_nodes[0].input_tensors
            if len(layer._inbound_nodes) != 1 or len(inputs) != 1 or inputs[0]._keras_history[0] is not previous:
                return False
    except (AttributeError, IndexError):
        return False
    return len(model.inputs) == 1 and len(model.outputs) == 1


def _dense_logit(layer, inputs):
    """The pre-activation output of a Dense layer with a sigmoid activation."""
    logits = keras.ops.matmul(inputs, layer.kernel)
    return logits + layer.bias if layer.use_bias else logits


def _is_sigmoid(layer) -> bool:
    activation = getattr(layer, "activation", None)
    return activation is not None and getattr(activation, "__name__", "") == "sigmoid"


def _walk(container, inputs, target: str, found: dict, last: bool):
    """Call the layers of a chain in order, recording the target's activation; returns the logit when
    ``last`` (the final sigmoid is skipped, or a sigmoid Dense evaluated without its activation)."""
    layers = _children(container)
    x = inputs
    for position, layer in enumerate(layers):
        final = last and position == len(layers) - 1
        if final and isinstance(layer, keras.layers.Activation) and _is_sigmoid(layer):
            return x  # the logit is the input of the final sigmoid
        if final and isinstance(layer, keras.layers.Dense) and _is_sigmoid(layer):
            return _dense_logit(layer, x)
        if layer.name == target:
            x = layer(x, training=False)
            found["activation"] = x
        elif _children(layer) and _find_layer(layer, target) is not None:
            if not _is_chain(layer):
                raise ValueError(f"nested model {layer.name!r} has branches; name a target layer outside it")
            x = _walk(layer, x, target, found, last=final)
        else:
            x = layer(x, training=False)
    if last:
        raise ExplainError("the model does not end in a sigmoid; Grad-CAM here explains a sigmoid head's logit")
    return x


def _functional_split(model: keras.Model, target: str):
    """For branched functional models: one model giving the target activation and the logit."""
    try:
        logit = model.get_layer("logit").output
    except ValueError:
        final = model.layers[-1]
        if not (isinstance(final, keras.layers.Activation) and _is_sigmoid(final)):
            raise ExplainError(f"model {model.name!r}: name the pre-sigmoid layer 'logit' to explain it") from None
        logit = final.input
    return keras.Model(model.inputs, [model.get_layer(target).output, logit])


@dataclass
class CamExplainer:
    """Grad-CAM / Grad-CAM++ for one model and one target layer, compiled once, batched."""

    model: keras.Model
    layer_name: str | None = None

    def __post_init__(self):

        members = ensemble_members(self.model)
        if members:
            # An ensemble's map is the mean of its members' maps, each from that member's own target layer.
            self._members = [CamExplainer(member, self.layer_name) for member in members]
            self.layer_name = self.layer_name or self._members[0].layer_name
            return
        self._members = []
        try:
            self._prepare()
        except ExplainError as error:  # name the file the model came from, where it came from one
            raise ExplainError(f"{source_of(self.model)}: {error}") from None

    def _prepare(self) -> None:
        self.layer_name = self.layer_name or last_conv_layer_name(self.model)
        if _find_layer(self.model, self.layer_name) is None:
            raise ExplainError(f"model {self.model.name!r} has no layer named {self.layer_name!r}")
        if _is_chain(self.model):
            self._forward = self._forward_chain
        else:
            self._split_model = _functional_split(self.model, self.layer_name)
            self._forward = self._forward_functional
        # One graph per method, for any batch size and image size: no retracing between batches.
        signature = [tf.TensorSpec([None, None, None, 1], tf.float32), tf.TensorSpec([], tf.float32)]
        self._compiled = {
            plus_plus: tf.function(
                lambda images, sign, plus_plus=plus_plus: self._maps(images, sign, plus_plus), input_signature=signature
            )
            for plus_plus in (False, True)
        }

    def _forward_chain(self, images):
        found: dict = {}
        logits = _walk(self.model, images, self.layer_name, found, last=True)
        if "activation" not in found:
            raise ExplainError(f"layer {self.layer_name!r} is not on the path to the output")
        return found["activation"], logits

    def _forward_functional(self, images):
        return self._split_model(images, training=False)

    def _maps(self, images, sign, plus_plus: bool):
        with tf.GradientTape() as tape:
            activations, logits = self._forward(images)
            scores = sign * tf.reshape(logits, [-1])
            total = tf.reduce_sum(scores)
        gradients = tape.gradient(total, activations)
        if plus_plus:
            # Grad-CAM++ (Chattopadhay et al. 2018) with the exponential score, whose higher derivatives
            # are powers of the first: alpha = g^2 / (2 g^2 + sum(A) g^3).
            exp_scores = tf.exp(tf.clip_by_value(scores, -50.0, 50.0))[:, None, None, None]
            first = exp_scores * gradients
            second, third = first * gradients, first * gradients * gradients
            activation_sums = tf.reduce_sum(activations, axis=(1, 2), keepdims=True)
            denominator = 2.0 * second + activation_sums * third
            alphas = tf.math.divide_no_nan(second, tf.where(tf.abs(denominator) > EPSILON, denominator, 1.0))
            weights = tf.reduce_sum(alphas * tf.nn.relu(first), axis=(1, 2), keepdims=True)
        else:
            weights = tf.reduce_mean(gradients, axis=(1, 2), keepdims=True)  # per image, per channel
        cams = tf.nn.relu(tf.reduce_sum(weights * activations, axis=-1))
        peaks = tf.reduce_max(cams, axis=(1, 2), keepdims=True)
        return cams / tf.maximum(peaks, EPSILON), tf.sigmoid(tf.reshape(logits, [-1]))

    def explain(
        self,
        images: np.ndarray,
        target_class: int = 1,
        method: str = "gradcam",
        batch_size: int = 32,
        upsample: bool = True,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Maps in [0, 1] (``(n, s, s)`` when upsampled, else the layer's grid) and P(PNEUMONIA) per image.

        ``images`` are uint8-range arrays ``(n, s, s)`` as ``read_image`` returns them. A map with no
        positive evidence stays all zero instead of turning into NaN.
        """
        if target_class not in (0, 1):
            raise ValueError(f"target_class must be 0 (NORMAL) or 1 (PNEUMONIA), got {target_class}")
        if method not in ("gradcam", "gradcam++"):
            raise ValueError(f"unknown method {method!r}; choose gradcam or gradcam++")
        if self._members:
            return self._explain_ensemble(images, target_class, method, batch_size, upsample)
        sign = tf.constant(1.0 if target_class == 1 else -1.0)
        maps, probabilities = [], []
        for start in range(0, len(images), batch_size):
            batch = tf.convert_to_tensor(np.asarray(images[start : start + batch_size], np.float32)[..., None])
            cams, probability = self._compiled[method == "gradcam++"](batch, sign)
            maps.append(cams.numpy())
            probabilities.append(probability.numpy())
        if not maps:
            return np.zeros((0, *images.shape[1:3]), np.float32), np.zeros(0, np.float32)
        cams = np.concatenate(maps).astype(np.float32)
        if upsample:
            height, width = images.shape[1:3]
            cams = np.stack([cv2.resize(cam, (width, height), interpolation=cv2.INTER_LINEAR) for cam in cams])
        return np.clip(cams, 0.0, 1.0), np.concatenate(probabilities).astype(np.float32)

    def _explain_ensemble(self, images, target_class, method, batch_size, upsample):
        """Mean of the members' maps (each member sees the images at its own input size); the
        probability is the ensemble's own (the sigmoid of the mean logit)."""
        images = np.asarray(images)
        height, width = images.shape[1:3]
        maps = []
        for explainer in self._members:
            member_images = resize_all(images.astype(np.float32), explainer.model.input_shape[1])
            maps.append(explainer.explain(member_images, target_class, method, batch_size, upsample)[0])
        grid = (height, width) if upsample else max(cam.shape[1:3] for cam in maps)
        resized = [
            cams
            if cams.shape[1:3] == grid
            else np.stack([cv2.resize(cam, grid[::-1], interpolation=cv2.INTER_LINEAR) for cam in cams])
            for cams in maps
        ]

        probabilities = predict_probabilities(self.model, images.astype(np.float32), batch_size)
        return np.clip(np.mean(resized, axis=0), 0.0, 1.0).astype(np.float32), probabilities


def gradcam(
    model: keras.Model,
    images: np.ndarray,
    layer_name: str | None = None,
    target_class: int = 1,
    batch_size: int = 32,
    method: str = "gradcam",
) -> np.ndarray:
    """Grad-CAM (or Grad-CAM++) maps in [0, 1], one per image, upsampled to the image size."""
    return CamExplainer(model, layer_name).explain(images, target_class, method, batch_size)[0]


def _gradient_model(model: keras.Model, target: str) -> keras.Model:
    """The recipe's gradient model: inputs -> (target activation, logit). A target that is itself a nested
    model (a ``keras.applications`` backbone inside an ensemble member) is not reachable from ``model.inputs``
    through its ``.output``; for a chain of layers the same layers are then called again on a new input, which
    gives the same computation with the target's activation in reach."""
    try:
        return keras.models.Model(model.inputs, [model.get_layer(target).output, model.get_layer("logit").output])
    except ValueError:
        pass  # a nested target: rebuild the chain below (a branched model fails there with Keras' own error)
    inputs = keras.Input(tuple(model.inputs[0].shape[1:]), name="image")
    x, found = inputs, {}
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        x = found[layer.name] = layer(x)
    return keras.models.Model([inputs], [found[target], found["logit"]])


def keras_io_gradcam(img_array: np.ndarray, model: keras.Model, last_conv_layer_name: str) -> np.ndarray:
    """The per-image keras.io Grad-CAM recipe (``make_gradcam_heatmap``), kept as the benchmark reference.

    As in the recipe: a gradient model built on each call, gradients pooled over axes (0, 1, 2), one
    image per call. Adapted only where the recipe fails here: the score is the ``logit`` layer's output
    (the recipe removes the last activation instead), the division is guarded, and the call passes
    ``training=False``: Keras 3 augmentation layers default to training mode, so the recipe as written
    explains a randomly rotated and zoomed copy of the image; a nested backbone as the target is reached
    through :func:`_gradient_model`.
    """
    grad_model = _gradient_model(model, last_conv_layer_name)
    with tf.GradientTape() as tape:
        last_conv_layer_output, preds = grad_model([img_array], training=False)  # inputs as the model names them
        class_channel = preds[:, 0]
    grads = tape.gradient(class_channel, last_conv_layer_output)
    pooled_grads = tf.reduce_mean(grads, axis=(0, 1, 2))
    heatmap = last_conv_layer_output[0] @ pooled_grads[..., tf.newaxis]
    heatmap = tf.squeeze(heatmap)
    heatmap = tf.maximum(heatmap, 0) / tf.maximum(tf.math.reduce_max(heatmap), EPSILON)
    return heatmap.numpy()


def predicted_class_maps(
    explainer: CamExplainer, images: np.ndarray, probabilities: np.ndarray, threshold: float, method: str = "gradcam"
) -> np.ndarray:
    """For each image, the map of the class the model predicted at ``threshold``."""
    predicted = (np.asarray(probabilities) >= threshold).astype(int)
    cams = np.zeros(images.shape[:3], dtype=np.float32)
    for target_class in (0, 1):
        chosen = predicted == target_class
        if chosen.any():
            cams[chosen] = explainer.explain(images[chosen], target_class=target_class, method=method)[0]
    return cams
