"""The model card beside each saved model: what it was trained on and how it must be fed (input size,
preprocessing, threshold), its validation figures and provenance. One schema (:data:`CARD_FIELDS`) checks every
field the project reads, when the model is loaded."""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pneumo_utils.config import Settings, recorded_settings
from pneumo_utils.data import CLASS_NAMES
from pneumo_utils.images import Preprocessing
from pneumo_utils.model.operating import MODES, mode_of
from pneumo_utils.records import provenance

CARD_SUFFIX = ".json"


def card_path(model_path: str | os.PathLike) -> Path:
    """The model card sits beside the model: ``model.keras`` -> ``model.json``."""
    return Path(model_path).with_suffix(CARD_SUFFIX)


def make_card(
    settings: Settings,
    preprocessing: dict[str, Any],
    threshold: dict[str, Any],
    validation_metrics: dict[str, Any],
    training: dict[str, Any],
    data: dict[str, Any],
) -> dict[str, Any]:
    """The model card: everything downstream needs to use the model as it was trained, and provenance."""
    members = settings.members or []
    kind = (
        f"ensemble of {len(members)} members (the mean of their logits)"
        if members
        else f"{settings.backbone} backbone with a trained head"
        if settings.backbone
        else "CNN trained from scratch"
    )
    return {
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
            "val_fraction": settings.val_fraction,
            "seed": settings.seed,
        },
        "validation_metrics": validation_metrics,
        "training": training,
        "data": data,
        "parameters": recorded_settings(settings),
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


class ModelLoadError(ValueError):
    """A model file that is missing, corrupt or not a Keras model."""


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
    "default_mode": (f"one of {', '.join(MODES)}", lambda v: v in MODES, False),
    "operating_modes": (
        f"an object of modes ({', '.join(MODES)}), each with 0 <= lo <= hi <= 1 (hi null: never PNEUMONIA)",
        lambda v: _valid_modes(v),
        False,
    ),
}


def _valid_modes(modes: Any) -> bool:
    if not isinstance(modes, dict) or not set(modes) <= set(MODES):
        return False
    for mode in modes.values():
        if not isinstance(mode, dict) or not (_number(mode.get("lo")) and 0.0 <= mode["lo"] <= 1.0):
            return False
        hi = mode.get("hi")
        if hi is not None and not (_number(hi) and mode["lo"] <= hi <= 1.0):
            return False
        if not isinstance(mode.get("promises", []), list):
            return False
    return True


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


@dataclass(frozen=True)
class ModelCard(Mapping):
    """A card as the project reads it: checked once, when it is read (:func:`check_card`), with typed fields for
    what every user of a model needs, and the whole card as written.

    The card stays the JSON beside the model; this is its read side. It is also a read-only mapping of that
    JSON (``card["training"]``, ``dict(card)``), so fields only a report shows need no attribute of their own.
    """

    fields: dict[str, Any] = field(repr=False)
    name: str
    kind: str
    preprocessing: Preprocessing  # what the model was trained on: every image it scores is read this way
    threshold: float
    val_fraction: float | None  # the patient-grouped split of train/ the threshold was chosen on
    seed: int | None

    @classmethod
    def read(cls, card: Any, source: str | os.PathLike) -> ModelCard:
        """The card ``card`` (parsed JSON) read from ``source``; :class:`ModelLoadError` names a wrong field."""
        if isinstance(card, ModelCard):
            return card
        check_card(card, source)
        split = card.get("split") if isinstance(card.get("split"), dict) else {}
        return cls(
            fields=card,
            name=card.get("name", Path(source).stem),
            kind=card.get("kind", "model"),
            preprocessing=Preprocessing.from_dict(card["preprocessing"]),
            threshold=float(card["threshold"]["value"]),
            val_fraction=split.get("val_fraction"),
            seed=split.get("seed"),
        )

    @property
    def default_mode(self) -> str:
        """The mode a decision uses when none is asked for (``single`` for a card without fitted modes)."""
        return self.fields.get("default_mode") or "single"

    def mode(self, name: str | None = None) -> tuple[str, dict[str, Any]]:
        """The operating mode ``name`` (the card's default when None) and its thresholds ``lo`` and ``hi``;
        :class:`~pneumo_utils.model.operating.OperatingPointError` names a mode the card does not hold."""
        return mode_of(self.fields, name)

    def __getitem__(self, key: str) -> Any:
        return self.fields[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.fields)

    def __len__(self) -> int:
        return len(self.fields)

    def with_fields(self, **changes: Any) -> dict[str, Any]:
        """The card as written, with ``changes``: a new card to save beside a changed model."""
        return copy.deepcopy(self.fields) | changes
