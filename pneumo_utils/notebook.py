"""What every numbered notebook starts with: the run's settings, its output folders and its data root; and, for
notebooks 03 and 04, the run's model as its card says to feed it.

It sits above ``config``, ``data`` and ``model`` (it writes the synthetic set a smoke profile asks for and loads
models), so that ``config`` stays the bottom layer and imports nothing else of the package.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd

from pneumo_utils.config import Settings, load_config, output_paths, portable_path
from pneumo_utils.data import index_dataset, synthetic
from pneumo_utils.images import Preprocessing
from pneumo_utils.model import load_model


def setup(
    profile: str | None, data_dir: str | None, output_dir: str | None, overrides: dict[str, Any] | None = None
) -> tuple[Settings, dict[str, Path], Path]:
    """The set-up every notebook starts with: the run's settings, its output folders and its data root
    (written first when the profile is synthetic), printed with paths relative to the project."""
    settings = load_config(profile, data_dir=data_dir, output_dir=output_dir, **(overrides or {}))
    paths = output_paths(settings)
    data_root = prepare_data_dir(settings)
    print(f"profile: {settings.profile}\ndata:    {portable_path(data_root)}\nresults: {portable_path(paths['root'])}")
    return settings, paths, data_root


def prepare_data_dir(settings: Settings) -> Path:
    """Return the run's dataset root, writing the synthetic set first when the profile asks for one."""
    data_dir = Path(settings.data_dir)
    if settings.synthetic:
        synthetic.ensure_synthetic_dataset(
            data_dir,
            images_per_class=settings.synthetic_images_per_class,
            image_size=settings.synthetic_image_size,
            seed=settings.seed,
        )
    return data_dir


class RunModel(NamedTuple):
    """What notebooks 03 and 04 work with: the run's model and card, how the card says to feed it, and the
    data index. The preprocessing and threshold come from the card, never from the profile's settings: the
    settings may have changed since the model was trained, and the model must see what it was trained on."""

    network: Any
    card: dict[str, Any]
    preprocessing: Preprocessing
    threshold: float
    index: pd.DataFrame


def load_run_model(settings: Settings, data_root: str | Path) -> RunModel:
    """Load ``settings.model_path`` with its card (one-line errors for a bad model) and index ``data_root``."""
    network, card = load_model(settings.model_path)
    return RunModel(
        network=network,
        card=card,
        preprocessing=card.preprocessing,
        threshold=card.threshold,
        index=index_dataset(data_root),
    )
