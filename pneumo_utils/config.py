"""Profiles, paths and the resolution order of every run setting.

A run is described by a *profile* (a YAML file in ``notebooks/profiles/``) plus explicit overrides.
Explicit values win, then environment variables, then the profile:

- data directory: ``data_dir`` argument / ``--data-dir`` > ``$PNEUMO_DATA_DIR`` > ``data/chest_xray``
- profile: ``profile`` argument / ``--profile`` > ``$PNEUMO_PROFILE`` > ``full``
- output directory: ``output_dir`` argument / ``--output-dir`` > ``$PNEUMO_OUTPUT_DIR`` > the profile's
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

PROJECT_ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS_DIR = PROJECT_ROOT / "notebooks"
PROFILES_DIR = NOTEBOOKS_DIR / "profiles"
DEFAULT_DATA_DIR = PROJECT_ROOT / "data" / "chest_xray"

DATA_DIR_ENV = "PNEUMO_DATA_DIR"
PROFILE_ENV = "PNEUMO_PROFILE"
OUTPUT_DIR_ENV = "PNEUMO_OUTPUT_DIR"
DEFAULT_PROFILE = "full"


def available_profiles() -> list[str]:
    """Names of the profiles shipped in ``notebooks/profiles``."""
    return sorted(path.stem for path in PROFILES_DIR.glob("*.yaml"))


def load_profile(name: str) -> dict[str, Any]:
    """Read one profile's YAML file into a dict."""
    path = PROFILES_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ValueError(f"unknown profile {name!r}: {path} does not exist (available: {available_profiles()})")
    with path.open() as handle:
        profile = yaml.safe_load(handle) or {}
    if not isinstance(profile, dict):
        raise ValueError(f"{path}: a profile must be a mapping of setting: value")
    return profile


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """Where the dataset lives: the argument, else ``$PNEUMO_DATA_DIR``, else ``data/chest_xray``."""
    if data_dir:
        return Path(data_dir).expanduser().resolve()
    if os.environ.get(DATA_DIR_ENV):
        return Path(os.environ[DATA_DIR_ENV]).expanduser().resolve()
    return DEFAULT_DATA_DIR


def _resolve_path(value: str | os.PathLike, **fields: Any) -> Path:
    """Expand ``{output_dir}``-style fields; relative paths are taken from the project root."""
    path = Path(str(value).format(**fields)).expanduser()
    return path if path.is_absolute() else (PROJECT_ROOT / path).resolve()


def load_config(profile: str | None = None, **overrides: Any) -> dict[str, Any]:
    """The settings of one run: the profile, then environment variables, then explicit overrides.

    ``None`` values in ``overrides`` mean "not given" so that a notebook can pass its whole parameters
    cell through. Unknown keys raise, so that a typo such as ``epoch=3`` does not go unnoticed.
    """
    name = profile or os.environ.get(PROFILE_ENV) or DEFAULT_PROFILE
    config = load_profile(name)
    config["profile"] = name
    given = {key: value for key, value in overrides.items() if value is not None}
    unknown = sorted(set(given) - set(config) - {"data_dir", "output_dir", "model_path"})
    if unknown:
        raise ValueError(f"unknown setting(s) {unknown} for profile {name!r}; known: {sorted(config)}")
    config.update(given)

    output_dir = given.get("output_dir") or os.environ.get(OUTPUT_DIR_ENV) or config.get("output_dir", "results")
    config["output_dir"] = str(_resolve_path(output_dir))
    config["model_path"] = str(_resolve_path(config["model_path"], output_dir=config["output_dir"]))
    if config.get("synthetic"):
        # The synthetic set is generated inside the run's output directory unless a path is given.
        config["data_dir"] = str(_resolve_path(given.get("data_dir") or Path(config["output_dir"]) / "synthetic_data"))
    else:
        config["data_dir"] = str(resolve_data_dir(given.get("data_dir")))
    return config


def prepare_data_dir(config: dict[str, Any]) -> Path:
    """Return the run's dataset root, writing the synthetic set first when the profile asks for one."""
    data_dir = Path(config["data_dir"])
    if config.get("synthetic"):
        from pneumo_utils import synthetic

        synthetic.ensure_synthetic_dataset(
            data_dir,
            images_per_class=config["synthetic_images_per_class"],
            image_size=config["synthetic_image_size"],
            seed=config["seed"],
        )
    return data_dir


def output_paths(config: dict[str, Any]) -> dict[str, Path]:
    """The run's artefact folders, created on demand."""
    root = Path(config["output_dir"])
    paths = {"root": root, "figures": root / "figures", "metrics": root / "metrics"}
    for path in paths.values():
        path.mkdir(parents=True, exist_ok=True)
    return paths
