"""What every numbered notebook starts with: the run's settings, its output folders and its data root.

A module above ``config``, ``synthetic`` and ``data`` (it writes the synthetic set a smoke profile asks for),
so that ``config`` stays the bottom layer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pneumo_utils import synthetic
from pneumo_utils._quiet import import_tensorflow_quietly
from pneumo_utils.config import Settings, load_config, output_paths, portable_path


def setup(
    profile: str | None, data_dir: str | None, output_dir: str | None, overrides: dict[str, Any] | None = None
) -> tuple[Settings, dict[str, Path], Path]:
    """The set-up every notebook starts with: the run's settings, its output folders and its data root
    (written first when the profile is synthetic), printed with paths relative to the project."""
    import_tensorflow_quietly()  # TensorFlow's start-up lines would otherwise land in the notebook
    settings = load_config(profile, data_dir=data_dir, output_dir=output_dir, **(overrides or {}))
    paths = output_paths(settings)
    data_root = prepare_data_dir(settings)
    print(
        f"profile: {settings['profile']}\ndata:    {portable_path(data_root)}\nresults: {portable_path(paths['root'])}"
    )
    return settings, paths, data_root


def prepare_data_dir(config: Settings) -> Path:
    """Return the run's dataset root, writing the synthetic set first when the profile asks for one."""
    data_dir = Path(config.data_dir)
    if config.synthetic:
        synthetic.ensure_synthetic_dataset(
            data_dir,
            images_per_class=config["synthetic_images_per_class"],
            image_size=config["synthetic_image_size"],
            seed=config["seed"],
        )
    return data_dir
