"""Profiles, paths and the resolution order of every run setting.

A run is described by a *profile* (a YAML file in ``notebooks/profiles/``) plus explicit overrides.
Explicit values win, then environment variables, then the profile:

- data directory: ``data_dir`` argument / ``--data-dir`` > ``$PNEUMO_DATA_DIR`` > ``data/chest_xray``
  (a profile with ``synthetic: true`` writes a small synthetic set instead, but only when no folder was
  named: a named folder always means the data to use)
- profile: ``profile`` argument / ``--profile`` > ``$PNEUMO_PROFILE`` > ``full``
- output directory: ``output_dir`` argument / ``--output-dir`` > ``$PNEUMO_OUTPUT_DIR`` > the profile's
  (``runs/<profile>``; ``pneumo run`` makes a new ``runs/<profile>-<time>`` for each run)

Paths given as arguments or environment variables are taken from the current directory, as every
command-line tool does; paths written in a profile are taken from the project root. A run never writes
``saved_models/`` or ``results/``: ``pneumo promote RUN_DIR`` does, when asked.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from pneumo_utils import reading

PROJECT_ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS_DIR = PROJECT_ROOT / "notebooks"
PROFILES_DIR = NOTEBOOKS_DIR / "profiles"
DEFAULT_DATA_DIR = PROJECT_ROOT / "data" / "chest_xray"
RUNS_DIR = PROJECT_ROOT / "runs"
SAVED_MODEL = PROJECT_ROOT / "saved_models" / "pneumonia_cnn.keras"
REFERENCE_RESULTS = PROJECT_ROOT / "results"

DATA_DIR_ENV = "PNEUMO_DATA_DIR"
PROFILE_ENV = "PNEUMO_PROFILE"
OUTPUT_DIR_ENV = "PNEUMO_OUTPUT_DIR"
CLASS_NAMES = ("NORMAL", "PNEUMONIA")  # target 0 and 1: the class folders of every split
DEFAULT_PROFILE = "full"


class SettingsError(ValueError):
    """A setting, profile or option the user gave is not valid; the message says which and why."""


@dataclass(frozen=True)
class Settings(Mapping):
    """The settings of one run: typed, frozen and validated once, when :func:`load_config` builds them.

    Every default lives here (a profile sets what differs). The package and the notebooks read
    ``settings.epochs``; the object is also a read-only mapping (``dict(settings)``, ``"seed" in settings``) so
    that it can be recorded beside a result as it is. :meth:`replace` gives a changed copy (an ensemble
    member's settings).
    """

    profile: str = DEFAULT_PROFILE
    output_dir: str = ""
    model_path: str = ""
    data_dir: str = ""
    synthetic: bool = False
    synthetic_images_per_class: int = 48
    synthetic_image_size: int = 96
    seed: int = 42
    val_fraction: float = 0.15
    image_size: int = 128
    clahe: bool = False
    normalization: str = "standardize"
    filters: list[int] = field(default_factory=lambda: [32, 64, 128, 256])
    backbone: str | None = None
    weights: str | None = None
    alpha: float = 1.0
    weights_sha256: str | None = None
    backbone_trainable: bool = True
    head_l2: float = 0.0
    batchnorm_momentum: float = 0.99
    dropout: float = 0.5
    batch_size: int = 32
    precision: str = "float32"
    epochs: int = 18
    optimizer: str = "adamw"
    weight_decay: float = 0.0001
    lr_schedule: str = "cosine"
    label_smoothing: float = 0.1
    augment_rotation: float = 0.0
    augment_zoom: float = 0.0
    augment_shift: float = 0.0
    augment_contrast: float = 0.0
    augment_brightness: float = 0.0
    augment_gamma: float = 0.0
    augment_border: float = 0.0
    augment_sharpness: float = 0.0
    learning_rate: float = 0.002
    patience: int = 6
    resume: bool = False
    min_sensitivity: float = 0.95
    calibrate: bool = False
    calibration_split: str = "val"
    selection_split: str = "val"
    gradcam_examples_per_group: int = 3
    members: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self):
        problems = []
        for item in fields(self):
            value = getattr(self, item.name)
            expected = {"int": int, "float": (int, float), "bool": bool, "str": str}.get(str(item.type))
            if expected and (
                not isinstance(value, expected) or (expected in (int, (int, float)) and isinstance(value, bool))
            ):
                problems.append(f"{item.name} must be {item.type}, got {value!r}")
        if problems:  # a value of the wrong kind, named by its field, before any range check compares it
            raise SettingsError(f"profile {self.profile!r}: " + "; ".join(problems))
        if not 0.0 < self.val_fraction < 0.5:
            problems.append(f"val_fraction must be in (0, 0.5), got {self.val_fraction}")
        if not 0.0 <= self.dropout < 1.0:
            problems.append(f"dropout must be in [0, 1), got {self.dropout}")
        if isinstance(self.batchnorm_momentum, int | float) and not 0.0 < self.batchnorm_momentum < 1.0:
            problems.append(f"batchnorm_momentum must be in (0, 1), got {self.batchnorm_momentum}")
        if not 0.0 < self.min_sensitivity <= 1.0:
            problems.append(f"min_sensitivity must be in (0, 1], got {self.min_sensitivity}")
        for name in ("image_size", "epochs", "batch_size", "patience"):
            if isinstance(getattr(self, name), int) and getattr(self, name) < 1:
                problems.append(f"{name} must be at least 1, got {getattr(self, name)}")
        choices = {
            "normalization": ("rescale", "standardize"),
            "optimizer": ("adam", "adamw"),
            "lr_schedule": ("constant", "cosine"),
            "precision": ("float32", "mixed_bfloat16"),
            "calibration_split": ("val", "test-dev"),
            "selection_split": ("val", "test-dev"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                problems.append(f"{name} must be one of {list(allowed)}, got {getattr(self, name)!r}")
        if (
            not isinstance(self.filters, list | tuple)
            or not self.filters
            or not all(isinstance(width, int) and not isinstance(width, bool) and width > 0 for width in self.filters)
        ):
            problems.append(f"filters must be a non-empty list of positive integers, got {self.filters!r}")
        if isinstance(self.image_size, int) and not 32 <= self.image_size <= 1024:
            problems.append(f"image_size must be from 32 to 1024, got {self.image_size}")
        if isinstance(self.alpha, int | float) and not 0.0 < self.alpha <= 1.4:
            problems.append(f"alpha must be in (0, 1.4], got {self.alpha}")
        if self.weights_sha256 is not None and not (
            isinstance(self.weights_sha256, str) and re.fullmatch(r"[0-9a-f]{64}", self.weights_sha256)
        ):
            problems.append(f"weights_sha256 must be 64 lowercase hexadecimal digits, got {self.weights_sha256!r}")
        if not isinstance(self.members, list) or not all(isinstance(entry, dict) for entry in self.members):
            problems.append(f"members must be a list of setting mappings, got {self.members!r}")
        else:
            problems += self._member_problems()
        if problems:
            raise SettingsError(f"profile {self.profile!r}: " + "; ".join(problems))

    @classmethod
    def names(cls) -> list[str]:
        return [item.name for item in fields(cls)]

    def _member_problems(self) -> list[str]:
        """Each ensemble member's changes must name known settings and give a valid whole."""
        problems = []
        known = set(self.names()) - {"members", "profile", "output_dir", "model_path", "data_dir"}
        for number, entry in enumerate(self.members, start=1):
            unknown = sorted(set(entry) - known)
            if unknown:
                problems.append(f"member {number}: unknown setting(s) {unknown}")
                continue
            try:
                dataclasses.replace(self, members=[], **entry)
            except SettingsError as error:
                problems.append(f"member {number}: " + str(error).split(": ", 1)[-1])
        return problems

    def replace(self, **changes: Any) -> Settings:
        """A copy with some settings changed, validated again."""
        unknown = sorted(set(changes) - set(self.names()))
        if unknown:
            raise SettingsError(f"unknown setting(s) {unknown}")
        return dataclasses.replace(self, **changes)

    def __getitem__(self, name: str) -> Any:
        if name not in self.names():
            raise KeyError(name)
        return getattr(self, name)

    def __iter__(self):
        return iter(self.names())

    def __len__(self) -> int:
        return len(fields(self))


def available_profiles() -> list[str]:
    """Names of the profiles shipped in ``notebooks/profiles``."""
    return sorted(path.stem for path in PROFILES_DIR.glob("*.yaml"))


def load_profile(name: str) -> dict[str, Any]:
    """Read one profile's YAML file into a dict."""
    path = PROFILES_DIR / f"{name}.yaml"
    if reading.kind_of(path) == "missing":
        raise SettingsError(f"unknown profile {name!r}: {path} does not exist (available: {available_profiles()})")
    try:
        profile = reading.parse_yaml(reading.read_text(path, reading.PROFILE_LIMIT, "the profile"), str(path))
    except reading.FileRefused as error:
        raise SettingsError(str(error)) from None
    if profile is None:
        raise SettingsError(f"{path}: the profile is empty; it must be a mapping of setting: value")
    if not isinstance(profile, dict):
        raise SettingsError(f"{path}: a profile must be a mapping of setting: value")
    return profile


def user_path(value: str | os.PathLike) -> Path:
    """A path a user typed (argument or environment variable): relative to the current directory."""
    return Path(value).expanduser().resolve()


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """Where the dataset lives: the argument, else ``$PNEUMO_DATA_DIR``, else ``data/chest_xray``."""
    if data_dir:
        return _data_folder(user_path(data_dir), "--data-dir")
    if os.environ.get(DATA_DIR_ENV):
        return _data_folder(user_path(os.environ[DATA_DIR_ENV]), f"${DATA_DIR_ENV}")
    return DEFAULT_DATA_DIR


def _data_folder(path: Path, named_by: str) -> Path:
    """A data folder the user named; one that exists but is a file (or a device) is refused here, in one line,
    rather than reported later as missing or, where no data are needed, ignored in silence."""
    if path.exists() and not path.is_dir():
        raise SettingsError(f"{path}: {named_by} must name the data set's folder; this is a file")
    return path


def _resolve_path(value: str | os.PathLike, **fields: Any) -> Path:
    """A path written in a profile: ``{output_dir}``-style fields expanded, relative to the project root."""
    path = Path(str(value).format(**fields)).expanduser()
    return path if path.is_absolute() else (PROJECT_ROOT / path).resolve()


def resolve_profile_path(value: str | os.PathLike) -> Path:
    """A path written in a profile (or a member entry of one): relative to the project root."""
    return _resolve_path(value)


def recorded_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The settings as a result records them (model card, experiment record): the run's own paths left out
    (they say where this machine wrote, not what was trained) and a backbone weights file recorded by its file
    name (its SHA-256 goes into the card beside it), so results carry no path of the machine that made them."""
    recorded = {key: settings[key] for key in sorted(settings) if key not in ("output_dir", "data_dir", "model_path")}
    if recorded.get("weights") not in (None, "imagenet"):
        recorded["weights"] = Path(recorded["weights"]).name
    if isinstance(recorded.get("members"), list):
        recorded["members"] = [
            {**entry, "weights": Path(entry["weights"]).name}
            if isinstance(entry, dict) and entry.get("weights") not in (None, "imagenet")
            else entry
            for entry in recorded["members"]
        ]
    return recorded


def portable_path(path: str | os.PathLike) -> str:
    """A path as recorded in results and shown on the terminal: relative to the project root when it lies
    inside the project or in a folder beside it (``runs/x``, ``../shared/data/...``), so committed files
    carry no absolute path of the machine that made them; anywhere else, absolute as the user would type it
    (``/tmp/x``, never ``../../tmp/x``)."""
    resolved = Path(path).resolve()
    relative = Path(os.path.relpath(resolved, PROJECT_ROOT))
    if relative.parts[:2] == ("..", "..") or (relative.parts[:1] == ("..",) and len(relative.parts) == 1):
        return Path(os.path.abspath(path)).as_posix()  # as typed, symbolic links kept
    return relative.as_posix()


def load_config(profile: str | None = None, **overrides: Any) -> Settings:
    """The settings of one run: the profile, then environment variables, then explicit overrides.

    ``None`` values in ``overrides`` mean "not given" so that a notebook can pass its whole parameters
    cell through. Unknown keys raise, so that a typo such as ``epoch=3`` does not go unnoticed; the values
    are checked once, here (:class:`Settings`).
    """
    name = profile or os.environ.get(PROFILE_ENV) or DEFAULT_PROFILE
    config = load_profile(name)
    config["profile"] = name
    known = Settings.names()
    unknown_in_profile = sorted(set(config) - set(known))
    if unknown_in_profile:
        raise SettingsError(f"profile {name!r}: unknown setting(s) {unknown_in_profile}")
    given = {key: value for key, value in overrides.items() if value is not None}
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise SettingsError(f"unknown setting(s) {unknown} for profile {name!r}; known: {known}")
    config.update(given)

    if given.get("output_dir") or os.environ.get(OUTPUT_DIR_ENV):
        config["output_dir"] = str(user_path(given.get("output_dir") or os.environ[OUTPUT_DIR_ENV]))
    else:
        config["output_dir"] = str(_resolve_path(config.get("output_dir", f"runs/{name}")))
    config["model_path"] = str(
        user_path(given["model_path"])
        if given.get("model_path")
        else _resolve_path(config["model_path"], output_dir=config["output_dir"])
    )
    weights = config.get("weights")
    if weights not in (None, "imagenet") and isinstance(weights, str):
        # a weights file: taken from the current directory when given, from the project root in a profile
        config["weights"] = str(user_path(weights) if given.get("weights") else _resolve_path(weights))
    if "weights" in given and isinstance(config.get("members"), list):
        # -p weights=... sets the start of every pretrained member too (they sit in the profile's members list)
        config["members"] = [
            {**entry, "weights": config["weights"]}
            if isinstance(entry, dict) and entry.get("backbone", config.get("backbone"))
            else entry
            for entry in config["members"]
        ]
    if given.get("data_dir"):
        config["synthetic"] = False  # a named folder is the data to use, in every profile
    if config.get("synthetic"):
        if os.environ.get(DATA_DIR_ENV):  # not used by a synthetic profile, but a file there is still a mistake
            resolve_data_dir()
        config["data_dir"] = str(Path(config["output_dir"]) / "synthetic_data")
    else:
        config["data_dir"] = str(resolve_data_dir(given.get("data_dir")))
    try:
        return Settings(**config)
    except TypeError as error:  # a value of the wrong kind for a field Settings builds on (e.g. a list)
        raise SettingsError(f"profile {name!r}: {error}") from None


def output_paths(config: Settings) -> dict[str, Path]:
    """The run's artefact folders, created on demand."""
    root = Path(config["output_dir"])
    paths = {"root": root, "figures": root / "figures", "metrics": root / "metrics"}
    for path in paths.values():
        path.mkdir(parents=True, exist_ok=True)
    return paths
