"""The model: its layers, the networks built from them, the card beside each saved model, saving and loading
with checks, and running a network on images.

Promises: every network takes uint8-range grayscale images of the card's size and gives one probability of
pneumonia through one sigmoid head; a model is only ever loaded with its card checked. May import ``data``,
``evaluate``, ``images``, ``config``, ``outputs`` and ``records``, never ``explain``, ``runs`` or ``cli``.
Training (``train``), calibration (``calibrate``), the out-of-distribution gate (``ood``) and the stress tests
(``robustness``) are modules of their own, imported by name; the rest is re-exported here, so
``model.load_model(...)`` reads as before.

The re-exports are resolved on first use (PEP 562), so ``from pneumo_utils.model import operating`` or
``ModelCard`` does not import TensorFlow: the explorer's page kernels, ``pneumo --help`` and the report read
cards, bands and rates without it. A name from a module that needs Keras imports TensorFlow quietly first.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

from pneumo_utils._quiet import import_tensorflow_quietly

_EXPORTS = {
    "CARD_FIELDS": "card",
    "CARD_SUFFIX": "card",
    "MAX_IMAGE_SIZE": "card",
    "ModelCard": "card",
    "ModelLoadError": "card",
    "card_path": "card",
    "check_card": "card",
    "make_card": "card",
    "InvalidScores": "inference",
    "card_split": "inference",
    "check_scores": "inference",
    "predict_probabilities": "inference",
    "GrayscaleToRGB": "layers",
    "PerImageStandardization": "layers",
    "RandomBorderErase": "layers",
    "RandomGamma": "layers",
    "RandomSharpness": "layers",
    "augmentation_block": "layers",
    "BACKBONES": "networks",
    "MEMBER_PREFIX": "networks",
    "WIDTH_BACKBONES": "networks",
    "WeightsFileError": "networks",
    "build_backbone_model": "networks",
    "build_ensemble": "networks",
    "build_model": "networks",
    "check_weights_file": "networks",
    "ensemble_members": "networks",
    "file_sha256": "networks",
    "probability_head": "networks",
    "with_temperature": "networks",
    "check_model": "store",
    "load_model": "store",
    "save_model": "store",
    "source_of": "store",
}
_WITHOUT_TENSORFLOW = {"card", "operating"}  # modules whose import never reaches Keras
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:  # a submodule by name (model.train, model.ood), imported as an attribute used to be
        if importlib.util.find_spec(f"{__name__}.{name}") is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        if name not in _WITHOUT_TENSORFLOW:
            import_tensorflow_quietly()
        return importlib.import_module(f"{__name__}.{name}")
    if module not in _WITHOUT_TENSORFLOW:
        import_tensorflow_quietly()  # before Keras: TensorFlow's C++ start-up lines stay off the terminal
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
