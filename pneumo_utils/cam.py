"""Grad-CAM and Grad-CAM++ for the project's models (ensembles included), batched, with overlays and the
example picking of notebook 04. The checks of the maps live in :mod:`pneumo_utils.cam_checks`.

Keras 3 makes the usual keras.io recipe fragile: a ``Sequential`` model loaded from a ``.keras`` file
"has never been called" (no ``model.output``), a target layer inside a nested backbone gives "Graph
disconnected", and the recipe averages gradients over the batch and divides by zero on all-negative maps.
Here the model is *walked* layer by layer (recursing into nested models) so the target activation and the
logit come out of one forward pass whatever the model type; functional models with branches use a
two-output functional model instead.

For the sigmoid head the score is the **logit** (the sigmoid saturates); PNEUMONIA uses the logit,
NORMAL the negated logit. Every image's logit depends only on that image (batch norm and dropout run in
inference mode), so the gradient of the batch's summed scores is every image's own gradient: one
gradient computation per batch gives the same maps as one per image.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import keras
import numpy as np
import tensorflow as tf

from pneumo_utils.images import resize_all

EPSILON = 1e-8
CONV_TYPES = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.SeparableConv2D)


# --------------------------------------------------------------------------------------------- layers
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
    raise ValueError(f"model {model.name!r} has no convolution layer to explain")


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
        raise ValueError("the model does not end in a sigmoid; Grad-CAM here explains a sigmoid head's logit")
    return x


def _functional_split(model: keras.Model, target: str):
    """For branched functional models: one model giving the target activation and the logit."""
    try:
        logit = model.get_layer("logit").output
    except ValueError:
        final = model.layers[-1]
        if not (isinstance(final, keras.layers.Activation) and _is_sigmoid(final)):
            raise ValueError(f"model {model.name!r}: name the pre-sigmoid layer 'logit' to explain it") from None
        logit = final.input
    return keras.Model(model.inputs, [model.get_layer(target).output, logit])


@dataclass
class CamExplainer:
    """Grad-CAM / Grad-CAM++ for one model and one target layer, compiled once, batched."""

    model: keras.Model
    layer_name: str | None = None

    def __post_init__(self):
        from pneumo_utils.model import ensemble_members

        members = ensemble_members(self.model)
        if members:
            # An ensemble's map is the mean of its members' maps, each from that member's own target layer.
            self._members = [CamExplainer(member, self.layer_name) for member in members]
            self.layer_name = self.layer_name or self._members[0].layer_name
            return
        self._members = []
        self.layer_name = self.layer_name or last_conv_layer_name(self.model)
        if _find_layer(self.model, self.layer_name) is None:
            raise ValueError(f"model {self.model.name!r} has no layer named {self.layer_name!r}")
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
            raise ValueError(f"layer {self.layer_name!r} is not on the path to the output")
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
        from pneumo_utils.evaluate import predict_probabilities

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


# ------------------------------------------------------------------------------------------ overlays
def correct_by_class(frame, threshold: float, per_class: int, seed: int = 0) -> dict:
    """Up to ``per_class`` random correctly classified rows of each class: ``{label: rows}``."""
    correct = frame[(frame["probability"] >= threshold) == (frame["target"] == 1)]
    return {
        label: rows.sample(min(per_class, len(rows)), random_state=seed).reset_index(drop=True)
        for label, rows in correct.groupby("label")
    }


def overlay(image: np.ndarray, cam: np.ndarray, alpha: float = 0.4, colormap: int = cv2.COLORMAP_JET) -> np.ndarray:
    """The heatmap over the grayscale X-ray as an RGB uint8 image."""
    cam = cv2.resize(cam, (image.shape[1], image.shape[0])) if cam.shape != image.shape[:2] else cam
    heat = cv2.applyColorMap(np.uint8(255 * np.clip(cam, 0, 1)), colormap)
    base = cv2.cvtColor(image.astype(np.uint8), cv2.COLOR_GRAY2BGR)
    blended = cv2.addWeighted(heat, alpha, base, 1 - alpha, 0)
    return cv2.cvtColor(blended, cv2.COLOR_BGR2RGB)


def side_by_side(image: np.ndarray, cam: np.ndarray, caption: list[str], height: int = 384) -> np.ndarray:
    """The X-ray beside its heatmap overlay, under caption lines: an RGB uint8 picture for a PNG."""
    original = cv2.cvtColor(cv2.resize(image.astype(np.uint8), (height, height)), cv2.COLOR_GRAY2RGB)
    heat = cv2.resize(overlay(image, cam), (height, height))
    banner = np.full((10 + 24 * len(caption), 2 * height, 3), 255, np.uint8)
    for line, text in enumerate(caption):
        cv2.putText(banner, text, (8, 25 + 24 * line), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
    return np.vstack([banner, np.hstack([original, heat])])


def cam_statistics(cam: np.ndarray, border_fraction: float = 0.15) -> dict[str, float]:
    """Where one map's mass lies (central field, border band, corners) and where its peak is (0-1)."""
    shares = mass_shares(cam[None], border_fraction)
    peak_y, peak_x = np.unravel_index(int(np.argmax(cam)), cam.shape)
    return {
        "central_share": float(shares["central"][0]),
        "border_share": float(shares["border"][0]),
        "corner_share": float(shares["corners"][0]),
        "peak_x": round(peak_x / cam.shape[1], 3),
        "peak_y": round(peak_y / cam.shape[0], 3),
        "mean": float(cam.mean()),
    }


OUTCOMES = ("PNEUMONIA, correct", "PNEUMONIA, missed", "NORMAL, correct", "NORMAL, false alarm")  # grid order


def pick_examples(frame, threshold: float, per_group: int, seed: int = 0):
    """Up to ``per_group`` rows of each outcome (true/false per class), from a frame with
    ``target`` and ``probability`` columns; the rows get an ``outcome`` column."""
    import pandas as pd

    from pneumo_utils.config import CLASS_NAMES
    from pneumo_utils.evaluate import outcome_of

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
            picked.append(rows.sample(min(per_group, len(rows)), random_state=seed).assign(outcome=outcome))
    return pd.concat(picked, ignore_index=True) if picked else frame.iloc[:0].assign(outcome=[])


def region_masks(height: int, width: int, border_fraction: float = 0.15) -> dict[str, np.ndarray]:
    """Boolean masks: the central field (inside the border band), the border band, and its four corners.

    Laterality markers, text and burned-in labels sit in the band, mostly in the corners (Zech et al. 2018).
    """
    dy, dx = int(round(height * border_fraction)), int(round(width * border_fraction))
    central = np.zeros((height, width), dtype=bool)
    central[dy : height - dy, dx : width - dx] = True
    corners = np.zeros((height, width), dtype=bool)
    for rows in (slice(0, dy), slice(height - dy, height)):
        for columns in (slice(0, dx), slice(width - dx, width)):
            corners[rows, columns] = True
    return {"central": central, "border": ~central, "corners": corners}


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


def mass_shares(cams: np.ndarray, border_fraction: float = 0.15) -> dict[str, np.ndarray]:
    """Per map, the share of its mass in each region of :func:`region_masks` (NaN for an all-zero map)."""
    masks = region_masks(cams.shape[1], cams.shape[2], border_fraction)
    total = cams.reshape(len(cams), -1).sum(axis=1)
    shares = {}
    for name, mask in masks.items():
        mass = cams[:, mask].sum(axis=1)
        shares[name] = np.where(total > EPSILON, mass / np.maximum(total, EPSILON), np.nan)
    return shares
