"""The data layer: layout checks, patient ids, the index, the grouped split and loading."""

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import SHARED_TRAIN, pneumo, real_training_files, run_pneumo_here, write_png

from pneumo_utils import data
from pneumo_utils.images import Preprocessing, TooManyUnreadableError, load_images


@pytest.mark.parametrize(
    ("name", "patient"),
    [
        ("person1000_bacteria_2931.jpeg", "person1000"),
        ("person1000_virus_1681.jpeg", "person1000"),
        ("person447_virus_921_1.jpeg", "person447"),
        ("IM-0115-0001.jpeg", "IM-0115"),
        ("IM-0429-0001-0002.jpeg", "IM-0429"),
        ("NORMAL2-IM-0588-0001.jpeg", "NORMAL2-IM-0588"),
        ("scan.png", "file:scan"),
    ],
)
def test_parse_patient_id(name, patient):
    assert data.parse_patient_id(name) == patient


def test_every_real_training_file_name_parses_to_a_patient():
    if not SHARED_TRAIN.is_dir():
        pytest.skip("../shared/data/chest_xray is not beside this checkout")
    names = [
        path.name for label in data.CLASS_NAMES for path in (SHARED_TRAIN / label).iterdir() if path.suffix == ".jpeg"
    ]
    patients = [data.parse_patient_id(name) for name in names]
    assert len(names) > 5000
    assert not [name for name, patient in zip(names, patients, strict=True) if patient.startswith("file:")]
    # several images per patient exist in the real split: far fewer patients than images
    assert len(set(patients)) < 0.7 * len(names)


def _copy_layout(root: Path, tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(root, target)
    return target


def test_missing_root_names_the_path(tmp_path):
    with pytest.raises(data.DatasetLayoutError, match=re.escape(str(tmp_path / "nowhere"))):
        data.check_layout(tmp_path / "nowhere")


def test_missing_train_folder(tmp_path):
    (tmp_path / "test" / "NORMAL").mkdir(parents=True)
    with pytest.raises(data.DatasetLayoutError, match="no train/ folder.*expected layout"):
        data.check_layout(tmp_path)


def test_missing_class_folder(synthetic_root, tmp_path):
    root = _copy_layout(synthetic_root, tmp_path)
    shutil.rmtree(root / "train" / "PNEUMONIA")
    with pytest.raises(data.DatasetLayoutError, match=r"train/PNEUMONIA: missing class folder"):
        data.check_layout(root)


def test_class_folder_with_only_non_images_is_empty(synthetic_root, tmp_path):
    root = _copy_layout(synthetic_root, tmp_path)
    folder = root / "test" / "NORMAL"
    for path in folder.iterdir():
        path.unlink()
    (folder / ".DS_Store").write_bytes(b"junk")
    (folder / "notes.txt").write_text("not an image")
    with pytest.raises(data.DatasetLayoutError, match=r"test/NORMAL: class folder has no images"):
        data.check_layout(root)


def test_index_ignores_ds_store_and_records_everything(synthetic_root):
    index = data.index_dataset(synthetic_root)
    assert list(index.columns) == ["path", "split", "label", "target", "patient", "hash", "width", "height"]
    assert not index["path"].str.endswith(".DS_Store").any()
    assert set(index["split"]) == {"train", "test"}
    assert (index["width"] == 64).all() and (index["height"] == 64).all()
    assert index.groupby("label")["target"].first().to_dict() == {"NORMAL": 0, "PNEUMONIA": 1}
    # the synthetic set holds one byte-identical copy per class
    duplicates = data.duplicate_report(index)
    assert len(duplicates) == 2 and (duplicates["copies"] == 2).all() and not duplicates["cross_split"].any()


def test_grouped_split_keeps_patients_and_duplicates_on_one_side(synthetic_root):
    index = data.index_dataset(synthetic_root)
    for seed in range(5):
        train_rows, val_rows = data.grouped_split(index, val_fraction=0.25, seed=seed)
        assert data.split_overlap(train_rows, val_rows) == {"patients": 0, "identical_images": 0}
        assert len(train_rows) + len(val_rows) == (index["split"] == "train").sum()
        assert set(val_rows["label"]) == {"NORMAL", "PNEUMONIA"}  # stratified: both classes present


def test_grouped_split_is_seeded(synthetic_root):
    index = data.index_dataset(synthetic_root)
    first = data.grouped_split(index, 0.25, seed=3)[1]["path"].tolist()
    again = data.grouped_split(index, 0.25, seed=3)[1]["path"].tolist()
    other = data.grouped_split(index, 0.25, seed=4)[1]["path"].tolist()
    assert first == again and first != other


def test_grouped_split_on_real_file_names(tmp_path):
    """The real data set's patients (several images each) never straddle the split."""
    files = (
        [path for label in data.CLASS_NAMES for path in sorted((SHARED_TRAIN / label).glob("*.jpeg"))[:120]]
        if SHARED_TRAIN.is_dir()
        else []
    )
    if not files:
        pytest.skip("../shared/data/chest_xray is not beside this checkout")
    index = data.index_dataset(SHARED_TRAIN.parent)
    index = index[index["path"].isin([str(path) for path in files])]
    train_rows, val_rows = data.grouped_split(index, val_fraction=0.2, seed=0)
    assert data.split_overlap(train_rows, val_rows) == {"patients": 0, "identical_images": 0}


def test_real_files_load_as_model_input():
    files = real_training_files()
    if not files:
        pytest.skip("../shared/data/chest_xray is not beside this checkout")
    images, mask, errors = load_images(files, Preprocessing(image_size=96))
    assert images.shape == (len(files), 96, 96) and images.dtype == np.uint8 and mask.all() and not errors


def test_unreadable_files_are_skipped_and_named(synthetic_root, tmp_path, caplog):
    good = sorted((synthetic_root / "train" / "NORMAL").glob("*.jpeg"))[:10]
    truncated = tmp_path / "truncated.jpeg"
    truncated.write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 20)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    paths = [*good, truncated, empty]
    images, mask, errors = load_images(paths, Preprocessing(image_size=32), max_unreadable_fraction=0.5)
    assert images.shape == (10, 32, 32)
    assert mask.tolist() == [True] * 10 + [False, False]
    assert any("truncated.jpeg" in error for error in errors) and any("empty.png: empty file" in e for e in errors)
    assert "truncated.jpeg" in caplog.text and "empty.png" in caplog.text


def test_more_than_one_percent_unreadable_stops(synthetic_root, tmp_path):
    good = sorted((synthetic_root / "train" / "NORMAL").glob("*.jpeg"))[:20]
    bad = tmp_path / "bad.jpeg"
    bad.write_text("this is not an image")
    with pytest.raises(TooManyUnreadableError, match=rf"1 of {len(good) + 1} images are unreadable.*bad.jpeg"):
        load_images([*good, bad], Preprocessing(image_size=32))


def test_16_bit_png_uses_its_range(tmp_path):
    ramp = np.tile(np.linspace(1000, 4000, 64, dtype=np.uint16), (48, 1))
    path = write_png(tmp_path / "sixteen.png", ramp)
    image = data.load_split(_frame([path]), Preprocessing(image_size=32))[0][0]
    assert image.dtype == np.uint8 and image.min() <= 2 and image.max() >= 253


def test_rgba_and_rgb_png_load_as_grayscale(tmp_path):
    gray = np.random.default_rng(0).integers(0, 255, (40, 50), dtype=np.uint8)
    rgba = np.dstack([gray, gray, gray, np.full_like(gray, 255)])
    paths = [
        write_png(tmp_path / "rgba.png", rgba),
        write_png(tmp_path / "rgb.png", rgba[:, :, :3]),
        write_png(tmp_path / "gray.png", gray),
    ]
    images, _, _ = data.load_split(_frame(paths), Preprocessing(image_size=32))
    assert images.shape == (3, 32, 32)
    np.testing.assert_allclose(images[0], images[2], atol=1)
    np.testing.assert_allclose(images[1], images[2], atol=1)


def test_make_dataset_batches_float_images(synthetic_root):
    index = data.index_dataset(synthetic_root).head(10)
    images, targets, _ = data.load_split(index, Preprocessing(image_size=32))
    batch_images, batch_targets = next(iter(data.make_dataset(images, targets, batch_size=4)))
    assert batch_images.shape == (4, 32, 32, 1) and batch_images.dtype.name == "float32"
    assert float(batch_images.numpy().max()) > 1.0  # 0-255 range: the model rescales itself
    assert batch_targets.shape == (4,)


def _frame(paths):
    import pandas as pd

    return pd.DataFrame({"path": [str(path) for path in paths], "target": 0})


def test_the_unreadable_share_counts_against_the_whole_data_set(tmp_path):
    import numpy as np

    from pneumo_utils.images import Preprocessing, TooManyUnreadableError, load_images

    good = tmp_path / "good.png"
    import cv2

    cv2.imwrite(str(good), np.full((32, 32), 120, np.uint8))
    bad = tmp_path / "bad.jpeg"
    bad.write_bytes(b"\xff\xd8\xff not really a jpeg")
    small_split = [good] * 20 + [bad]  # 1 of 21 (5%) in this split
    with pytest.raises(TooManyUnreadableError):
        load_images(small_split, Preprocessing(image_size=32))
    images, mask, errors = load_images(small_split, Preprocessing(image_size=32), population=401)  # 1 of 401
    assert len(images) == 20 and not mask[-1] and len(errors) == 1


def test_index_lists_unreadable_files_and_label_conflicts(tmp_path):
    from pneumo_utils.data.synthetic import write_synthetic_dataset

    root = write_synthetic_dataset(tmp_path / "data", images_per_class=10, image_size=48, seed=0)
    (root / "train" / "NORMAL" / "IM-9999-0001.jpeg").write_bytes(b"\xff\xd8\xff broken")
    normal = sorted((root / "train" / "NORMAL").glob("IM-*.jpeg"))[0]
    (root / "train" / "PNEUMONIA" / "person9999_virus_1.jpeg").write_bytes(normal.read_bytes())
    result = pneumo("index", "--data-dir", root)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert any("IM-9999-0001.jpeg" in line for line in report["unreadable"])
    assert report["label_conflicts"] and "NORMAL,PNEUMONIA" in report["label_conflicts"][0]["labels"]
    assert "unreadable: " in result.stderr and "label conflict: " in result.stderr


def test_images_in_sub_folders_and_label_conflicts_are_mentioned(synthetic_root, tmp_path):
    data = tmp_path / "chest_xray"
    shutil.copytree(synthetic_root, data)
    nested = data / "train" / "NORMAL" / "more"
    nested.mkdir()
    first = sorted((data / "train" / "NORMAL").glob("*.jpeg"))[0]
    shutil.copy(first, nested / "extra.jpeg")
    shutil.copy(first, data / "train" / "PNEUMONIA" / "same_bytes.jpeg")
    result = run_pneumo_here("index", "--data-dir", data)
    assert result.returncode == 0
    assert "warning: 1 image(s) in sub-folders of train/NORMAL are not read (train/NORMAL/more)" in result.stderr
    assert "label conflict" in result.stderr
    from pneumo_utils.data import layout_warnings

    assert any("1 label conflict(s) in train/" in line for line in layout_warnings(data))
    assert os.path.exists(nested / "extra.jpeg")
