"""The test-dev / test-final rule: the published hash rule, halves by patient, and what a data set with only one
half says."""

import json
import shutil
from pathlib import Path

import pytest
from helpers import run_pneumo_here

from pneumo_utils import data

SHARED = Path(__file__).resolve().parents[2] / "shared"
SHARED_TEST = SHARED / "data" / "chest_xray" / "test"


@pytest.mark.parametrize(
    ("filename", "half"),
    [
        ("IM-0001-0001.jpeg", "test-dev"),
        ("NORMAL2-IM-0007-0001.jpeg", "test-dev"),
        ("person100_bacteria_475.jpeg", "test-dev"),
        ("person3_virus_15.jpeg", "test-dev"),
        ("person1_virus_6.jpeg", "test-final"),
        ("person101_bacteria_485.jpeg", "test-final"),
    ],
)
def test_split_rule_puts_known_file_names_on_their_side(filename, half):
    assert data.test_half(data.parse_patient_id(filename)) == half


def test_the_rule_is_the_published_one():
    import hashlib

    for patient in ("person1", "IM-0001", "NORMAL2-IM-0007", "person1500"):
        value = int(hashlib.sha256(patient.encode("utf-8")).hexdigest(), 16)
        assert data.test_half(patient) == ("test-dev" if value % 5 < 2 else "test-final")


@pytest.mark.skipif(not SHARED_TEST.is_dir(), reason="../shared/data/chest_xray/test is not beside the checkout")
def test_every_image_of_the_shared_test_folder_is_test_dev():
    names = [path.name for path in SHARED_TEST.rglob("*.jpeg")]
    assert len(names) == 263
    assert {data.test_half(data.parse_patient_id(name)) for name in names} == {"test-dev"}


def test_the_two_halves_partition_the_test_folder_by_patient(synthetic_root):
    index = data.index_dataset(synthetic_root)
    whole = data.select_split(index, "test", 0.25, 0)
    dev = data.select_split(index, "test-dev", 0.25, 0)
    final = data.select_split(index, "test-final", 0.25, 0)
    assert len(dev) + len(final) == len(whole) and len(dev) and len(final)
    assert not set(dev["patient"]) & set(final["patient"])
    assert set(dev["path"]) | set(final["path"]) == set(whole["path"])
    counts = data.test_half_counts(index)
    assert sum(counts["test-dev"].values()) == len(dev) and sum(counts["test-final"].values()) == len(final)


@pytest.fixture(scope="module")
def dev_only_copy(synthetic_root, tmp_path_factory):
    """The synthetic set with test/ cut down to its test-dev half, as the shared copy of the real data is."""
    root = tmp_path_factory.mktemp("dev_only") / "chest_xray"
    shutil.copytree(synthetic_root, root)
    for path in (root / "test").rglob("*.jpeg"):
        if data.test_half(data.parse_patient_id(path.name)) == "test-final":
            path.unlink()
    return root


def test_a_missing_test_final_is_one_line_and_exit_2(tiny_model_path, dev_only_copy):
    result = run_pneumo_here(
        "evaluate", "--model", str(tiny_model_path), "--data-dir", str(dev_only_copy), "--split", "test-final"
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: no test-final images here:"), result.stderr


def test_index_shows_the_two_halves(dev_only_copy):
    result = run_pneumo_here("index", "--data-dir", str(dev_only_copy))
    assert result.returncode == 0, result.stderr
    halves = json.loads(result.stdout)["test_halves"]
    assert sum(halves["test-dev"].values()) > 0 and sum(halves["test-final"].values()) == 0
