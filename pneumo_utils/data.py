"""The data layer: one index of the data set, the patient-grouped validation split, and tf.data loaders.

Nothing else walks the data set's folders: the EDA, the split and every loader read the index built by
:func:`index_dataset`.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from pneumo_utils.config import CLASS_NAMES, SettingsError, portable_path
from pneumo_utils.images import Preprocessing, is_image_file, load_images

SPLITS = ("train", "val", "test")
# Split names a user can ask for (select_split): the two sides of the grouped split of train/, the whole test/
# folder, its two patient-hash halves, and the data set's own small val/ folder.
SPLIT_NAMES = ("train", "val", "test", "test-dev", "test-final", "val-folder")
TEST_HALVES = ("test-dev", "test-final")
TEST_DEV_MODULUS, TEST_DEV_REMAINDERS = 5, 2  # test-dev <=> sha256(patient) % 5 < 2: about 2/5 of the patients
# How each scored set is named wherever a figure of it appears (tables, figure titles, menus, the report):
# test-dev figures always say that they were used for selection.
SPLIT_LABELS = {
    "validation": "validation (patient-grouped split of train/)",
    "test": "test (the whole test/ folder)",
    "test-dev": "test-dev (used for selection)",
    "test-final": "test-final (held out, never used for a choice)",
}


def split_label(name: str) -> str:
    """``test-dev`` -> ``test-dev (used for selection)``; other names as they are."""
    return SPLIT_LABELS.get(name, name)


def scored_splits(index: pd.DataFrame) -> dict[str, str]:
    """The sets a run scores, ``{name: select_split name}``: the validation split, each half of ``test/`` that
    has images, and the whole ``test/`` folder when both halves are there (the published figures' set)."""
    halves = test_half_counts(index)
    present = [half for half in TEST_HALVES if sum(halves[half].values())]
    splits = {"validation": "val"}
    if len(present) == len(TEST_HALVES):
        splits["test"] = "test"
    splits.update({half: half for half in present})
    return splits


EXPECTED_LAYOUT = (
    "expected layout: <root>/train/{NORMAL,PNEUMONIA}/ with images (.jpeg .jpg .png .tif .tiff .webp .dcm), "
    "with optional <root>/val/... and <root>/test/... in the same shape"
)

_PATIENT_PATTERNS = (
    re.compile(r"^(?P<id>person\d+)_(?:bacteria|virus)_\d+(?:_\d+)*$", re.IGNORECASE),
    re.compile(r"^(?P<id>NORMAL2-IM-\d+)(?:-\d+)+$", re.IGNORECASE),
    re.compile(r"^(?P<id>IM-\d+)(?:-\d+)+$", re.IGNORECASE),
)


class DatasetLayoutError(ValueError):
    """The data set root does not have the expected folder layout."""


def parse_patient_id(filename: str) -> str:
    """Patient id from a file name of the public data set.

    ``person1000_bacteria_2931.jpeg`` and ``person1000_virus_1681.jpeg`` -> ``person1000``;
    ``IM-0115-0001.jpeg`` -> ``IM-0115``; ``IM-0429-0001-0002.jpeg`` -> ``IM-0429``;
    ``NORMAL2-IM-0588-0001.jpeg`` -> ``NORMAL2-IM-0588``.
    A name that matches none of these is its own patient: ``file:<stem>``.
    """
    stem = Path(filename).stem
    for pattern in _PATIENT_PATTERNS:
        match = pattern.match(stem)
        if match:
            return match.group("id")
    return f"file:{stem}"


def test_half(patient_id: str) -> str:
    """Which half of the official test split a patient belongs to: ``test-dev`` or ``test-final``.

    ``int(sha256(patient_id).hexdigest(), 16) % 5 < 2`` is test-dev (used to choose recipes, epochs,
    thresholds and calibration); the rest is test-final (measured once, independently). The rule needs
    only the file name, so anyone with the public download gets the same halves, and a patient's images
    are never split between them.
    """
    value = int(hashlib.sha256(patient_id.encode("utf-8")).hexdigest(), 16)
    return "test-dev" if value % TEST_DEV_MODULUS < TEST_DEV_REMAINDERS else "test-final"


def _image_files(folder: Path) -> list[Path]:
    return sorted(path for path in folder.iterdir() if path.is_file() and is_image_file(path))


def check_layout(root: str | os.PathLike) -> dict[str, dict[str, list[Path]]]:
    """Check the folder layout and list the image files: ``{split: {class: [paths]}}``.

    ``train/`` is required, ``val/`` and ``test/`` are optional; every split present needs both class
    folders with at least one image. Raises :class:`DatasetLayoutError` naming the path otherwise.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetLayoutError(f"{root}: data directory does not exist; {EXPECTED_LAYOUT}")
    if not (root / "train").is_dir():
        raise DatasetLayoutError(f"{root}: no train/ folder; {EXPECTED_LAYOUT}")
    layout: dict[str, dict[str, list[Path]]] = {}
    for split in SPLITS:
        split_dir = root / split
        if not split_dir.is_dir():
            continue
        layout[split] = {}
        for class_name in CLASS_NAMES:
            class_dir = split_dir / class_name
            if not class_dir.is_dir():
                raise DatasetLayoutError(f"{class_dir}: missing class folder; {EXPECTED_LAYOUT}")
            files = _image_files(class_dir)
            if not files:
                raise DatasetLayoutError(f"{class_dir}: class folder has no images; {EXPECTED_LAYOUT}")
            layout[split][class_name] = files
    return layout


def layout_warnings(root: str | os.PathLike, layout: dict[str, dict[str, list[Path]]] | None = None) -> list[str]:
    """What the layout check lets through but a user should hear about, one line each: images in sub-folders
    of a class folder (not read: the label is the folder right above the file) and the same file under both
    classes of a split (a label conflict). Cheap: only files whose sizes coincide across classes are hashed."""
    root = Path(root)
    layout = layout or check_layout(root)
    lines = []
    for split, classes in layout.items():
        for class_name in CLASS_NAMES:
            class_dir = root / split / class_name
            nested = [
                path
                for path in class_dir.rglob("*")
                if path.parent != class_dir
                and path.is_file()
                and is_image_file(path)
                and not any(part.startswith(".") for part in path.parts)
            ]
            if nested:
                folders = sorted({str(path.parent.relative_to(root)) for path in nested})
                shown = ", ".join(folders[:3]) + (", ..." if len(folders) > 3 else "")
                lines.append(
                    f"{len(nested)} image(s) in sub-folders of {split}/{class_name} are not read "
                    f"({shown}); move them up to use them"
                )
        sizes = {name: {} for name in CLASS_NAMES}
        for class_name, files in classes.items():
            for path in files:
                sizes[class_name].setdefault(path.stat().st_size, []).append(path)
        shared = set(sizes["NORMAL"]) & set(sizes["PNEUMONIA"])
        normal_hashes = {file_hash(path): path for size in shared for path in sizes["NORMAL"][size]}
        conflicts = [
            (normal_hashes[digest], path)
            for size in shared
            for path in sizes["PNEUMONIA"][size]
            if (digest := file_hash(path)) in normal_hashes
        ]
        if conflicts:
            first = conflicts[0]
            lines.append(
                f"{len(conflicts)} label conflict(s) in {split}/: the same file under NORMAL and PNEUMONIA "
                f"(e.g. {first[0].name} and {first[1].name}); see pneumo index"
            )
    return lines


def file_hash(path: str | os.PathLike) -> str:
    """SHA-1 of the file's bytes: equal hashes mean byte-identical images."""
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()


def _image_size(path: Path) -> tuple[float, float]:
    """Width and height from the file header (fast); NaN when the header cannot be read. A very large
    image is only measured here (the reader refuses it with its own message), so PIL's decompression-bomb
    warning is not printed."""
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                return float(image.width), float(image.height)
    except Exception:  # noqa: BLE001 - an unreadable header is recorded, the loader reports it
        return float("nan"), float("nan")


def index_dataset(root: str | os.PathLike) -> pd.DataFrame:
    """One row per image: path, split, label, target, patient, hash, width, height.

    The order is deterministic (split, class, file name), so seeded splits are reproducible.
    """
    layout = check_layout(root)
    rows = []
    for split, classes in layout.items():
        for target, class_name in enumerate(CLASS_NAMES):
            for path in classes[class_name]:
                width, height = _image_size(path)
                rows.append(
                    {
                        "path": str(path),
                        "split": split,
                        "label": class_name,
                        "target": target,
                        "patient": parse_patient_id(path.name),
                        "hash": file_hash(path),
                        "width": width,
                        "height": height,
                    }
                )
    return pd.DataFrame(rows)


def counts_table(index: pd.DataFrame) -> pd.DataFrame:
    """Images and patients per split and class, with each class's share of its split."""
    table = index.groupby(["split", "label"]).agg(images=("path", "size"), patients=("patient", "nunique"))
    table["share"] = (table["images"] / table.groupby(level="split")["images"].transform("sum")).round(3)
    return table


def test_half_counts(index: pd.DataFrame) -> dict[str, dict[str, int]]:
    """Images per class in each half of ``test/`` (:func:`test_half`): ``{"test-dev": {"NORMAL": n, ...}}``."""
    test = index[index["split"] == "test"]
    halves = test["patient"].map(test_half)
    return {
        half: {label: int(((halves == half) & (test["label"] == label)).sum()) for label in CLASS_NAMES}
        for half in TEST_HALVES
    }


def summary(index: pd.DataFrame, data_dir: str | os.PathLike) -> dict:
    """Counts per split and class, the fingerprint and the duplicate groups, as JSON-ready values."""
    duplicates = duplicate_report(index)
    return {
        "data_dir": portable_path(data_dir),
        "fingerprint": dataset_fingerprint(index),
        "counts": {
            f"{split}/{label}": {key: int(value) if key != "share" else float(value) for key, value in row.items()}
            for (split, label), row in counts_table(index).to_dict("index").items()
        },
        "test_halves": test_half_counts(index),
        "duplicate_groups": int(len(duplicates)),
        "cross_split_duplicate_groups": int(duplicates["cross_split"].sum()) if len(duplicates) else 0,
    }


def dataset_fingerprint(index: pd.DataFrame) -> str:
    """A short hash of the indexed files' contents and labels, recorded next to every result."""
    digest = hashlib.sha1()
    for split, label, content in sorted(zip(index["split"], index["label"], index["hash"], strict=True)):
        digest.update(f"{split}/{label}/{content}\n".encode())
    return digest.hexdigest()[:16]


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


def duplicate_report(index: pd.DataFrame) -> pd.DataFrame:
    """Groups of byte-identical files: how many, in which splits and classes, and whether they conflict."""
    duplicated = index[index.duplicated("hash", keep=False)]
    if duplicated.empty:
        return pd.DataFrame(columns=["hash", "copies", "splits", "labels", "files", "cross_split", "label_conflict"])
    report = duplicated.groupby("hash").agg(
        copies=("path", "size"),
        splits=("split", lambda values: ",".join(sorted(set(values)))),
        labels=("label", lambda values: ",".join(sorted(set(values)))),
        files=("path", lambda values: ", ".join(Path(value).name for value in values)),
    )
    report["cross_split"] = report["splits"].str.contains(",")
    report["label_conflict"] = report["labels"].str.contains(",")
    return report.reset_index().sort_values(["copies", "hash"], ascending=[False, True]).reset_index(drop=True)


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


def load_split(
    frame: pd.DataFrame, preprocessing: Preprocessing, population: int | None = None
) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """Read the images of an index slice: ``(images uint8 (n, s, s), targets, rows kept)``.

    Unreadable files are skipped with a warning naming each; more than 1% of ``population`` (the whole
    indexed data set; the slice itself when not given) stops the run.
    """
    images, mask, _ = load_images(list(frame["path"]), preprocessing, population=population)
    kept = frame[mask].reset_index(drop=True)
    return images, kept["target"].to_numpy(dtype=np.float32), kept


def make_dataset(
    images: np.ndarray,
    targets: np.ndarray | None = None,
    batch_size: int = 32,
    shuffle: bool = False,
    seed: int = 42,
):
    """A batched ``tf.data`` pipeline over preloaded images: cached, optionally shuffled, prefetched.

    Images go in as uint8 ``(n, s, s)`` and come out as float32 ``(batch, s, s, 1)`` in 0-255; the
    model rescales them itself, so every caller feeds the same range.
    """
    import tensorflow as tf

    features = tf.data.Dataset.from_tensor_slices(images)
    dataset = (
        features
        if targets is None
        else tf.data.Dataset.zip((features, tf.data.Dataset.from_tensor_slices(np.asarray(targets, dtype=np.float32))))
    )
    dataset = dataset.cache()
    if shuffle:
        dataset = dataset.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)

    def to_float(image, *target):
        image = tf.cast(image, tf.float32)[..., tf.newaxis]
        return (image, *target) if target else image

    dataset = dataset.batch(batch_size).map(to_float, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)


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


def problems(index: pd.DataFrame) -> dict:
    """What is wrong with a data set's files: every unreadable image (one line each, decoded with the
    project's reader) and every label conflict (the same bytes under NORMAL and PNEUMONIA, within a split
    or across splits)."""
    _, _, errors = load_images(list(index["path"]), Preprocessing(image_size=32), max_unreadable_fraction=1.0)
    duplicates = duplicate_report(index)
    conflicts = duplicates[duplicates["label_conflict"]] if len(duplicates) else duplicates
    return {
        "unreadable": errors,
        "label_conflicts": conflicts[["files", "labels", "splits"]].to_dict("records") if len(conflicts) else [],
    }
