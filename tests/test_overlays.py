"""Grad-CAM overlays follow the output rules: a folder that is a file or cannot be made is refused before any
work; an existing overlay is not replaced without --overwrite; one that cannot be written is one line and is
not listed in gradcam.json; names that are not UTF-8 or too long get a stated, safe replacement; the
predictions are saved whatever happens to the overlays."""

import json
import os

import numpy as np
import pandas as pd
import pytest
from helpers import run_pneumo_here, write_png


@pytest.fixture
def inputs(tmp_path):
    folder = tmp_path / "inputs"
    rng = np.random.default_rng(0)
    write_png(folder / "plain.png", rng.integers(0, 255, (40, 40), dtype=np.uint8))
    return folder


def test_an_output_folder_that_is_a_file_or_cannot_be_made_is_refused_first(tiny_model_path, inputs, tmp_path):
    a_file = tmp_path / "a-file"
    a_file.write_text("keep me")
    for arguments in (
        ["gradcam", inputs, "--out", a_file],
        ["predict", inputs, "--gradcam", a_file],
        ["gradcam", inputs, "--out", "/proc/x"],
    ):
        result = run_pneumo_here(*arguments, "--model", tiny_model_path)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and not result.stdout
    assert a_file.read_text() == "keep me"


@pytest.mark.slow
def test_existing_overlays_are_kept_and_the_predictions_saved_anyway(tiny_model_path, inputs, tmp_path):
    out, table = tmp_path / "overlays", tmp_path / "predictions.csv"
    first = run_pneumo_here("predict", inputs, "--gradcam", out, "--model", tiny_model_path)
    assert first.returncode == 0, first.stderr
    overlay = out / "plain_gradcam.png"
    before = overlay.read_bytes()
    again = run_pneumo_here("predict", inputs, "--gradcam", out, "--output", table, "--model", tiny_model_path)
    assert again.returncode == 1 and "plain_gradcam.png: already exists" in again.stderr
    assert overlay.read_bytes() == before
    assert pd.read_csv(table)["label"].notna().all()  # the predictions were not lost
    replaced = run_pneumo_here("predict", inputs, "--gradcam", out, "--overwrite", "--model", tiny_model_path)
    assert replaced.returncode == 0, replaced.stderr


@pytest.mark.slow
def test_an_overlay_that_cannot_be_written_is_not_listed(tiny_model_path, inputs, tmp_path):
    out = tmp_path / "out"
    (out / "plain_gradcam.png").mkdir(parents=True)  # its name is taken by a folder
    write_png(inputs / "other.png", np.full((40, 40), 90, np.uint8))
    result = run_pneumo_here("gradcam", inputs, "--out", out, "--model", tiny_model_path)
    assert result.returncode == 1 and "plain_gradcam.png: cannot write" in result.stderr
    report = json.loads((out / "gradcam.json").read_text())
    listed = [entry.get("overlay") for entry in report["images"] if entry.get("overlay")]
    assert listed == ["other_gradcam.png"] and all((out / name).is_file() for name in listed)


@pytest.mark.slow
def test_odd_and_long_names_get_a_stated_safe_replacement(tiny_model_path, inputs, tmp_path):
    picture = (inputs / "plain.png").read_bytes()
    latin1 = os.fsencode(inputs) + b"/caf\xe9.png"
    with open(latin1, "wb") as handle:
        handle.write(picture)
    long_name = inputs / ("x" * 240 + ".png")
    long_name.write_bytes(picture)
    out, table = tmp_path / "out", tmp_path / "predictions.csv"
    result = run_pneumo_here("gradcam", inputs, "--out", out, "--model", tiny_model_path)
    assert result.returncode == 0, result.stderr
    report = {
        entry["path"].rsplit("/", 1)[-1]: entry for entry in json.loads((out / "gradcam.json").read_text())["images"]
    }
    odd = report["caf\\xe9.png"]
    assert odd["overlay"] == "cafxe9_gradcam.png" and "not valid UTF-8" in odd["overlay_name_note"]
    long_entry = report["x" * 240 + ".png"]
    assert len(long_entry["overlay"]) < 130 and "shortened" in long_entry["overlay_name_note"]
    assert all((out / entry["overlay"]).is_file() for entry in report.values())
    predicted = run_pneumo_here("predict", inputs, "--output", table, "--model", tiny_model_path)
    assert predicted.returncode == 0, predicted.stderr
    assert any(path.endswith("caf\\xe9.png") for path in pd.read_csv(table)["path"])
