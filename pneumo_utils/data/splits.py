"""Splits of the index: the patient-grouped validation split of ``train/``, the two patient-hash halves of
``test/`` (test-dev, test-final), and the shift views that hold out images unlike the training ones.

Every split is a slice of the index; no patient and no byte-identical image is on two sides."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from pneumo_utils.config import SettingsError, portable_path
from pneumo_utils.data.index import EXPECTED_LAYOUT, SPLIT_NAMES, TEST_HALVES, DatasetLayoutError, test_half


def _connected_groups(index: pd.DataFrame) -> np.ndarray:
    """Group ids such that rows sharing a patient or a byte-identical image share a group (union-find)."""
    parent: dict[str, str] = {}

    def find(node: str) -> str:
        while parent.setdefault(node, node) != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    for patient, content in zip(index["patient"], index["hash"], strict=True):
        parent[find("p:" + patient)] = find("h:" + content)
    roots = [find("p:" + patient) for patient in index["patient"]]
    return pd.factorize(pd.Series(roots))[0]


def grouped_split(index: pd.DataFrame, val_fraction: float = 0.15, seed: int = 42) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Carve a validation split from ``train/``: seeded, stratified by class, grouped by patient.

    No patient and no byte-identical image ends up on both sides. The validation share is close to
    ``val_fraction`` (it is 1/k of a stratified group k-fold, k = round(1 / val_fraction)).
    """
    from sklearn.model_selection import StratifiedGroupKFold

    if not 0.0 < val_fraction < 0.5:
        raise SettingsError(f"val_fraction must be in (0, 0.5), got {val_fraction}")
    train = index[index["split"] == "train"].reset_index(drop=True)
    groups = _connected_groups(train)
    n_splits = max(2, round(1.0 / val_fraction))
    n_groups = len(np.unique(groups))
    if n_groups < n_splits:
        raise SettingsError(f"only {n_groups} patient groups in train/; need at least {n_splits} for a split")
    folds = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    train_positions, val_positions = next(folds.split(train, train["target"], groups))
    return train.iloc[train_positions].reset_index(drop=True), train.iloc[val_positions].reset_index(drop=True)


def split_overlap(first: pd.DataFrame, second: pd.DataFrame) -> dict[str, int]:
    """How many patients and byte-identical images two splits share (both should be 0)."""
    return {
        "patients": len(set(first["patient"]) & set(second["patient"])),
        "identical_images": len(set(first["hash"]) & set(second["hash"])),
    }


def select_split(index: pd.DataFrame, split: str, val_fraction: float, seed: int) -> pd.DataFrame:
    """Rows of one split by name.

    ``train`` and ``val`` are the two sides of :func:`grouped_split` of ``train/`` (the validation split
    every notebook uses); ``test`` is the whole ``test/`` folder, ``test-dev`` and ``test-final`` its two
    patient-hash halves (:func:`test_half`); ``val-folder`` is the data set's own small ``val/`` folder.
    """
    if split in ("train", "val"):
        train, val = grouped_split(index, val_fraction=val_fraction, seed=seed)
        return train if split == "train" else val
    folder = {"test": "test", "test-dev": "test", "test-final": "test", "val-folder": "val"}.get(split)
    if folder is None:
        raise SettingsError(f"unknown split {split!r}; choose one of {', '.join(SPLIT_NAMES)}")
    rows = index[index["split"] == folder].reset_index(drop=True)
    if rows.empty:
        raise DatasetLayoutError(f"the data set has no {folder}/ folder; {EXPECTED_LAYOUT}")
    if split in TEST_HALVES:
        rows = rows[rows["patient"].map(test_half) == split].reset_index(drop=True)
        if rows.empty:
            others = "the test-dev half only" if split == "test-final" else "the test-final half only"
            raise DatasetLayoutError(
                f"no {split} images here: {portable_path(Path(index['path'].iloc[0]).parents[2])}"
                f"/test holds {others} (rule: sha256(patient id) % 5 < 2 is test-dev)"
            )
    return rows


# ------------------------------------------------------------------------------------------- shift views
# A random patient-grouped split of train/ is *saturated* (validation ROC-AUC 0.998): it cannot tell a recipe
# that generalizes from one that has learned the training batches. The shift views below hold out images
# that differ from the training images the way new data does, using only train/.

SHIFT_VIEWS = ("random", "cross-batch IM->NORMAL2", "cross-batch NORMAL2->IM", "id-range")


_ACQUISITION_ID = re.compile(r"(\d+)")


def normal_batch(filename: str) -> str:
    """Acquisition batch of a NORMAL image from its name: ``NORMAL2`` (``NORMAL2-IM-...``) or ``IM``."""
    return "NORMAL2" if Path(filename).name.upper().startswith("NORMAL2-") else "IM"


def acquisition_id(patient: str) -> int:
    """The numeric acquisition id in a patient id (``person1000`` -> 1000, ``NORMAL2-IM-0588`` -> 588)."""
    numbers = _ACQUISITION_ID.findall(patient)
    return int(numbers[-1]) if numbers else -1


def _inner_split(rows: pd.DataFrame, val_fraction: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Patient-grouped split of a view's training rows: the in-distribution validation that chooses the
    epoch and the threshold, as the random view does, before the model meets the shifted images."""
    return grouped_split(rows.assign(split="train"), val_fraction=val_fraction, seed=seed)


def _without_shared(train: pd.DataFrame, held_out: pd.DataFrame) -> pd.DataFrame:
    """Training rows that share no patient and no byte-identical image with the held-out rows."""
    shared = train["patient"].isin(set(held_out["patient"])) | train["hash"].isin(set(held_out["hash"]))
    return train[~shared].reset_index(drop=True)


def shift_view(
    index: pd.DataFrame, view: str, val_fraction: float = 0.15, seed: int = 42
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """One validation view of ``train/``: ``(train, inner_val, shifted_val)``.

    ``inner_val`` is patient-grouped from the same distribution as ``train`` (it chooses the epoch and
    the threshold); ``shifted_val`` is what the view scores, at that threshold:

    - ``random``: the usual patient-grouped split; the shifted rows are the inner validation itself.
    - ``cross-batch IM->NORMAL2`` / ``NORMAL2->IM``: the NORMAL images come from two acquisition batches
      (``IM-...`` and ``NORMAL2-IM-...``). Train on one batch's normals and the pneumonia images of the
      training patients; score the other batch's normals with the held-out pneumonia patients.
    - ``id-range``: acquisition ids run in time; per class (and per NORMAL batch) the patients with the
      lowest and the highest ids, ``val_fraction / 2`` of the images at each end, are held out whole.

    No patient and no byte-identical image is on two sides.
    """
    if view not in SHIFT_VIEWS:
        raise SettingsError(f"unknown shift view {view!r}; choose one of {', '.join(SHIFT_VIEWS)}")
    train_rows, val_rows = grouped_split(index, val_fraction=val_fraction, seed=seed)
    if view == "random":
        return train_rows, val_rows, val_rows
    everything = pd.concat([train_rows, val_rows], ignore_index=True)
    if view.startswith("cross-batch"):
        source, target = view.split()[1].split("->")
        batch = everything["path"].map(normal_batch)
        pneumonia_train = train_rows[train_rows["target"] == 1]
        pneumonia_held = val_rows[val_rows["target"] == 1]
        normal = everything["target"] == 0
        shifted = pd.concat([everything[normal & (batch == target)], pneumonia_held], ignore_index=True)
        view_train = pd.concat([everything[normal & (batch == source)], pneumonia_train], ignore_index=True)
    else:  # id-range
        batches = np.where(everything["target"] == 0, everything["path"].map(normal_batch), "")
        strata = everything["label"] + "/" + batches
        ids = everything["patient"].map(acquisition_id)
        held = pd.Series(False, index=everything.index)
        for _, members in everything.groupby(strata):
            order = ids[members.index].sort_values(kind="stable")
            rank = np.arange(len(order)) / max(len(order) - 1, 1)
            edge = (rank < val_fraction / 2) | (rank > 1 - val_fraction / 2)
            edge_patients = set(everything.loc[order.index[edge], "patient"])
            held |= everything["patient"].isin(edge_patients) & everything.index.isin(members.index)
        shifted = everything[held].reset_index(drop=True)
        view_train = everything[~held].reset_index(drop=True)
    view_train = _without_shared(view_train, shifted)
    inner_train, inner_val = _inner_split(view_train, val_fraction, seed)
    return inner_train, inner_val, shifted.reset_index(drop=True)


def shift_view_counts(index: pd.DataFrame, val_fraction: float = 0.15, seed: int = 42) -> pd.DataFrame:
    """Images per side of every shift view (training, inner validation, held-out NORMAL and PNEUMONIA),
    and the patients and identical images the held-out rows share with training (both must be 0). In the
    random view the held-out rows are the inner validation itself."""
    rows = {}
    for view in SHIFT_VIEWS:
        train, inner, shifted = shift_view(index, view, val_fraction, seed)
        overlap = split_overlap(pd.concat([train, inner]), shifted) if view != "random" else split_overlap(train, inner)
        rows[view] = {
            "train": len(train),
            "inner validation": len(inner),
            "held-out NORMAL": int((shifted["target"] == 0).sum()),
            "held-out PNEUMONIA": int((shifted["target"] == 1).sum()),
            "shared patients": overlap["patients"],
            "shared identical images": overlap["identical_images"],
        }
    return pd.DataFrame(rows).T.rename_axis("view")
