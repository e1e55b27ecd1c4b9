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

import os
from pathlib import Path
from typing import Any

import yaml

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
DEFAULT_PROFILE = "full"


class SettingsError(ValueError):
    """A setting, profile or option the user gave is not valid; the message says which and why."""


def available_profiles() -> list[str]:
    """Names of the profiles shipped in ``notebooks/profiles``."""
    return sorted(path.stem for path in PROFILES_DIR.glob("*.yaml"))


def load_profile(name: str) -> dict[str, Any]:
    """Read one profile's YAML file into a dict."""
    path = PROFILES_DIR / f"{name}.yaml"
    if not path.is_file():
        raise SettingsError(f"unknown profile {name!r}: {path} does not exist (available: {available_profiles()})")
    with path.open() as handle:
        profile = yaml.safe_load(handle) or {}
    if not isinstance(profile, dict):
        raise SettingsError(f"{path}: a profile must be a mapping of setting: value")
    return profile


def user_path(value: str | os.PathLike) -> Path:
    """A path a user typed (argument or environment variable): relative to the current directory."""
    return Path(value).expanduser().resolve()


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """Where the dataset lives: the argument, else ``$PNEUMO_DATA_DIR``, else ``data/chest_xray``."""
    if data_dir:
        return user_path(data_dir)
    if os.environ.get(DATA_DIR_ENV):
        return user_path(os.environ[DATA_DIR_ENV])
    return DEFAULT_DATA_DIR


def _resolve_path(value: str | os.PathLike, **fields: Any) -> Path:
    """A path written in a profile: ``{output_dir}``-style fields expanded, relative to the project root."""
    path = Path(str(value).format(**fields)).expanduser()
    return path if path.is_absolute() else (PROJECT_ROOT / path).resolve()


def portable_path(path: str | os.PathLike) -> str:
    """A path as recorded in results: relative to the project root (``../shared/data/...`` for a folder
    beside it), so committed files carry no absolute path of the machine that made them."""
    return Path(os.path.relpath(Path(path).resolve(), PROJECT_ROOT)).as_posix()


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
        raise SettingsError(f"unknown setting(s) {unknown} for profile {name!r}; known: {sorted(config)}")
    config.update(given)

    if given.get("output_dir") or os.environ.get(OUTPUT_DIR_ENV):
        config["output_dir"] = str(user_path(given.get("output_dir") or os.environ[OUTPUT_DIR_ENV]))
    else:
        config["output_dir"] = str(_resolve_path(config.get("output_dir", f"runs/{name}")))
    config["model_path"] = str(user_path(given["model_path"]) if given.get("model_path") else
                               _resolve_path(config["model_path"], output_dir=config["output_dir"]))
    if given.get("data_dir"):
        config["synthetic"] = False  # a named folder is the data to use, in every profile
    if config.get("synthetic"):
        config["data_dir"] = str(Path(config["output_dir"]) / "synthetic_data")
    else:
        config["data_dir"] = str(resolve_data_dir(given.get("data_dir")))
    return config


def notebook_setup(profile: str | None, data_dir: str | None, output_dir: str | None,
                   overrides: dict[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, Path], Path]:
    """The set-up every notebook starts with: the run's settings, its output folders and its data root
    (written first when the profile is synthetic), printed with paths relative to the project."""
    from pneumo_utils._quiet import import_tensorflow_quietly

    import_tensorflow_quietly()  # TensorFlow's start-up lines would otherwise land in the notebook
    settings = load_config(profile, data_dir=data_dir, output_dir=output_dir, **(overrides or {}))
    paths = output_paths(settings)
    data_root = prepare_data_dir(settings)
    print(f"profile: {settings['profile']}\ndata:    {portable_path(data_root)}\n"
          f"results: {portable_path(paths['root'])}")
    return settings, paths, data_root


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
