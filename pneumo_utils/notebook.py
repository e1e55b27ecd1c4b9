"""What every numbered notebook starts with: the run's settings, its output folders and its data root; and, for
notebooks 03 and 04, the run's model as its card says to feed it.

It sits above ``config``, ``data`` and ``model`` (it writes the synthetic set a smoke profile asks for and loads
models), so that ``config`` stays the bottom layer and imports nothing else of the package.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd

from pneumo_utils.config import SAVED_MODEL, Settings, load_config, output_paths, portable_path
from pneumo_utils.data import index_dataset, synthetic
from pneumo_utils.images import Preprocessing
from pneumo_utils.model import card_path, load_model


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


def _split_name(split: str | None) -> str:
    return "test-dev (half of the official test split, used for selection)" if split == "test-dev" else "validation"


def how_chosen(settings: Settings, card: dict[str, Any] | None = None) -> str:
    """What this run chose where, in Markdown, from its own settings (and its model's card, once there is one):
    the sentences a lesson needs, never stale. The epoch comes from ``selection_split``, the backbones' training
    from ``backbone_trainable`` (per member), the temperature, threshold and operating modes from the card's
    ``site_calibration`` (else ``calibration_split``)."""
    members = [settings.replace(**entry, members=[]) for entry in settings.members] or [settings]
    pretrained = [member for member in members if member.backbone]
    epoch = _split_name(settings.selection_split)
    lines = [f"- **The epoch**: early stopping keeps the epoch with the best ROC-AUC on {epoch}."]
    if pretrained:
        frozen = sum(1 for member in pretrained if not member.backbone_trainable)
        how = (
            "frozen (only a regularized head is trained on top of the ImageNet features)"
            if frozen == len(pretrained)
            else "fine-tuned whole"
            if frozen == 0
            else f"frozen in {frozen} and fine-tuned whole in {len(pretrained) - frozen}"
        )
        lines.append(
            f"- **The pretrained backbone** ({', '.join(sorted({member.backbone for member in pretrained}))}, "
            f"{len(pretrained)} of the {len(members)} members): {how}; the other members are trained from scratch."
            if len(pretrained) < len(members)
            else f"- **The pretrained backbone** ({pretrained[0].backbone}): {how}."
        )
    else:
        count = "one network" if len(members) == 1 else f"each of the {len(members)} members"
        lines.append(f"- **The network**: {count} trained from scratch, no pretrained weights.")
    if card is None:  # before training: what the settings will do
        fitted_on = settings.calibration_split
    else:  # what the card says was done
        fitted_on = ((card.get("site_calibration") or {}).get("sample") or {}).get("split", "val")
    modes = ", ".join((card or {}).get("operating_modes") or {})
    lines.append(
        f"- **The temperature and the threshold{' and the operating modes (' + modes + ')' if modes else ''}**: "
        f"fitted on {_split_name(fitted_on)}."
    )
    uses_test = "test-dev" in (settings.selection_split, fitted_on)
    lines.append(
        "- **The official test split**: its test-dev half is used for the choices above, so its figures are "
        "optimistic; its other half, test-final, is used for no choice."
        if uses_test
        else "- **The official test split**: used for no choice in this run; its figures are measured after "
        "everything was fixed."
    )
    return "\n".join(lines)


def is_committed_model(card: dict[str, Any]) -> bool:
    """Whether ``card`` belongs to the committed model (same training date and commit): only its run has the
    project's recorded experiments (``results/experiments.md``) to show beside it."""
    try:
        saved = json.loads(card_path(SAVED_MODEL).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(saved, dict) and (saved.get("date"), saved.get("git_commit")) == (
        card.get("date"),
        card.get("git_commit"),
    )
