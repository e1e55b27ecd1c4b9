"""Saving and loading a model with its card: atomic saves, safe-mode loads, and one-line errors for bad files."""

from __future__ import annotations

import hashlib
import json
import os
import weakref
import zipfile
from pathlib import Path
from typing import Any

import keras

from pneumo_utils import reading
from pneumo_utils.model import layers as _layers  # noqa: F401 - registers the project's layers, so files load
from pneumo_utils.model.card import ModelCard, ModelLoadError, card_path
from pneumo_utils.outputs import JOURNAL_NAME, first_line, refuse_committed
from pneumo_utils.records import write_json_atomic


def save_model(model: keras.Model, path: str | os.PathLike, card: dict[str, Any]) -> Path:
    """Save the model and its card atomically: a crash leaves the previous model intact, never half a file.

    The card's ``name`` is the model file's (``site.keras`` -> ``site``): a calibrated or gated copy is another
    model, and an ensemble is named as its file is, its ``kind`` saying what it is."""
    path = Path(path)
    if path.suffix != ".keras":
        raise ValueError(f"{path}: model files must end in .keras")
    # the committed model changes only through pneumo promote, whatever named this path (flag, -p, profile, env)
    refuse_committed(path, "the model to write")
    card = {"name": path.stem, **{key: value for key, value in card.items() if key != "name"}}
    json.dumps(card, default=str)  # a card that cannot be written fails here, before anything is replaced
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.stem}.tmp{os.getpid()}.keras")
    # An uncompiled view of the same layers: the file holds the weights, not the optimizer's state.
    inference_model = keras.Model(model.inputs, model.outputs, name=model.name)
    try:
        inference_model.save(temporary)
        # the card names the exact file it describes: a model and a card from two runs never load as a pair
        card["model_sha256"] = hashlib.sha256(temporary.read_bytes()).hexdigest()
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    write_json_atomic(card_path(path), card)
    return path


def load_model(path: str | os.PathLike) -> tuple[keras.Model, ModelCard]:
    """Load a ``.keras`` model (safe mode on) and its card; clear one-line errors for bad files.

    Nothing is read before it is known to be a regular file of bounded size: the card (at most
    ``reading.CARD_LIMIT``), the archive (at most ``reading.MODEL_LIMIT``, its members inflating to at most
    ``reading.ARCHIVE_INFLATED_LIMIT``, its ``config.json`` to far less)."""
    path = Path(path)
    kind = reading.kind_of(path)
    if kind == "missing":
        raise ModelLoadError(f"{path}: model file does not exist")
    if kind is not None:
        raise ModelLoadError(f"{path}: the model must be a .keras file; this is {kind}")
    if path.suffix != ".keras":
        raise ModelLoadError(f"{path}: not a .keras model file")
    if (path.parent / JOURNAL_NAME).exists():
        raise ModelLoadError(
            f"{path}: a pneumo promote into this folder stopped midway; run any pneumo command (pneumo --version "
            "is enough) to finish or undo it"
        )
    card_file = card_path(path)
    if reading.kind_of(card_file) == "missing":
        raise ModelLoadError(f"{card_file}: model card missing (it records the preprocessing and threshold)")
    try:
        card = reading.read_json(card_file, reading.CARD_LIMIT, "the model card")
        if not zipfile.is_zipfile(path):
            raise ModelLoadError(f"{path}: not a Keras model archive (a .keras file is a zip; this one is not)")
        size = os.stat(path).st_size
        if size > reading.MODEL_LIMIT:
            raise ModelLoadError(f"{path}: {size / 2**20:,.0f} MB, more than a model file this project reads")
        reading.check_archive(path, "the model archive")
    except reading.FileRefused as error:
        raise ModelLoadError(str(error)) from None
    card = ModelCard.read(card, card_file)
    try:
        model = keras.models.load_model(path, safe_mode=True, compile=False)
    except Exception as error:  # noqa: BLE001 - Keras raises many types for a bad file
        raise ModelLoadError(
            f"{path}: cannot load as a Keras model ({type(error).__name__}: {first_line(error)})"
        ) from None
    recorded = card.get("model_sha256")
    if recorded and hashlib.sha256(path.read_bytes()).hexdigest() != recorded:
        raise ModelLoadError(
            f"{path}: does not match its card ({card_file.name} was written for another model file); copy a "
            "model with its card and gate, or promote the run again"
        )
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


def check_model(network: keras.Model, card: dict[str, Any], path: str | os.PathLike) -> None:
    """The model must take one grayscale image of the card's size and give one probability."""
    if len(network.inputs) != 1 or len(network.outputs) != 1:
        raise ModelLoadError(
            f"{path}: the model must have one input and one output "
            f"(it has {len(network.inputs)} and {len(network.outputs)})"
        )
    shape = tuple(network.inputs[0].shape)
    size = card.preprocessing.image_size
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
