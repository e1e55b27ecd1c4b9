"""Results are written as strict JSON, atomically."""

import json
import math

import numpy as np

from pneumo_utils.records import provenance, write_json_atomic


def test_nan_becomes_null_and_numpy_scalars_are_plain(tmp_path):
    path = write_json_atomic(
        tmp_path / "r.json", {"a": float("nan"), "b": [np.float32(0.5), math.inf], "c": np.int64(3)}
    )
    assert json.loads(path.read_text()) == {"a": None, "b": [0.5, None], "c": 3}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_provenance_names_versions_and_commit():
    record = provenance()
    assert set(record) == {"date", "git_commit", "versions", "machine"}
    assert record["versions"]["tensorflow"].startswith("2.21")
