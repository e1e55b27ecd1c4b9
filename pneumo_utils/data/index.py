"""The one index of a data set: its layout checks, a DataFrame of every image (path, split, label, patient, hash,
size), counts, fingerprints, duplicates and unreadable files, and the names of the sets a figure can come from.

Nothing else walks the data set's folders: the EDA, the splits and every loader read this index."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import pandas as pd
from PIL import Image

from pneumo_utils.config import CLASS_NAMES, portable_path
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
