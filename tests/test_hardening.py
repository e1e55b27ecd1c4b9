"""Issue 29, class 7: the smaller rough edges a hostile user found, each tried with more than one instance."""

import re

import pandas as pd
import pytest
from helpers import pneumo, write_png

from pneumo_utils import outputs


@pytest.mark.parametrize("name", ["=cmd|' calc'!A0", "+1+1", "-2+3", "@SUM(A1)"])
def test_a_csv_cell_that_would_run_as_a_formula_is_written_as_text(name, tiny_model_path, tmp_path, monkeypatch):
    import numpy as np

    write_png(tmp_path / "in" / f"{name}.png", np.random.default_rng(0).integers(0, 255, (40, 40), np.uint8))
    monkeypatch.chdir(tmp_path / "in")  # the file named as the user typed it, so its cell starts with the name
    image = f"{name}.png"
    options = ["--model", tiny_model_path, "--no-ood"]
    result = pneumo("predict", *options, "--output", tmp_path / "out.csv", "--", image)  # "--": a name like -2+3
    assert result.returncode == 0, result.stderr
    cell = (tmp_path / "out.csv").read_text().splitlines()[1].split(",")[0]
    assert cell.startswith("'") and name in cell, cell
    json_result = pneumo("predict", *options, "--output", tmp_path / "out.json", "--", image)
    assert json_result.returncode == 0 and f"{name}.png" in (tmp_path / "out.json").read_text()  # JSON: exact


def test_spreadsheet_safe_csv_leaves_numbers_and_plain_text_alone():
    frame = pd.DataFrame({"path": ["a.png", "=x", "\tb"], "probability": [-0.5, 0.25, 1.0]})
    lines = outputs.spreadsheet_safe_csv(frame).decode().splitlines()
    assert lines[1:] == ["a.png,-0.5", "'=x,0.25", "'\tb,1.0"]


def test_a_png_with_bytes_after_its_end_is_read_and_a_cut_one_is_still_refused(tmp_path):
    import numpy as np

    from pneumo_utils.images import ImageReadError, Preprocessing, read_image

    preprocessing = Preprocessing(image_size=32)
    pixels = np.random.default_rng(1).integers(0, 255, (40, 40), np.uint8)
    plain = write_png(tmp_path / "plain.png", pixels)
    expected = read_image(plain, preprocessing)
    for name, tail in (("text.png", b"appended by an editor"), ("zeros.png", b"\0" * 4096), ("iend.png", b"IEND")):
        (tmp_path / name).write_bytes(plain.read_bytes() + tail)
        assert np.array_equal(read_image(tmp_path / name, preprocessing), expected), name
    payload = plain.read_bytes()
    for cut in (len(payload) - 12, len(payload) // 2):
        (tmp_path / "cut.png").write_bytes(payload[:cut])
        with pytest.raises(ImageReadError, match="truncated PNG"):
            read_image(tmp_path / "cut.png", preprocessing)


@pytest.mark.parametrize("command", [("index",), ("run", "--profile", "smoke")])
def test_a_data_dir_that_is_a_file_is_one_line_whoever_names_it(command, tmp_path):
    import os

    not_a_folder = tmp_path / "chest_xray.zip"
    not_a_folder.write_bytes(b"PK")
    extra = ["--output-dir", str(tmp_path / "run")] if command[0] == "run" else []
    for flag_or_env in ("flag", "env"):
        environment = dict(os.environ, PNEUMO_DATA_DIR=str(not_a_folder)) if flag_or_env == "env" else None
        arguments = [*command, *extra, *(["--data-dir", not_a_folder] if flag_or_env == "flag" else [])]
        result = pneumo(*arguments, env=environment or dict(os.environ))
        named = "--data-dir" if flag_or_env == "flag" else "$PNEUMO_DATA_DIR"
        assert result.returncode == 2, (arguments, result.stderr)
        (line,) = result.stderr.strip().splitlines()
        assert f"{not_a_folder}: {named} must name the data set's folder; this is a file" in line, line
        assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("per_class", [1, 3, 9])
def test_a_training_folder_too_small_for_a_run_is_one_line_before_any_notebook(per_class, tmp_path):
    import numpy as np

    rng = np.random.default_rng(per_class)
    for split in ("train", "test"):
        for label in ("NORMAL", "PNEUMONIA"):
            count = per_class if split == "train" and label == "NORMAL" else 12
            for number in range(count):
                write_png(
                    tmp_path / "data" / split / label / f"{label}-{number}.png",
                    rng.integers(0, 255, (40, 40), np.uint8),
                )
    result = pneumo("run", "--profile", "smoke", "--data-dir", tmp_path / "data", "--output-dir", tmp_path / "run")
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert f"train/NORMAL: {per_class} image(s); a run needs at least 10 of each class in train/" in line, line
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_a_run_whose_folder_is_removed_midway_stops_in_one_line(tmp_path):
    import shutil
    import subprocess
    import time

    from helpers import PNEUMO

    output = tmp_path / "run"
    process = subprocess.Popen(
        [*PNEUMO, "run", "--profile", "smoke", "--output-dir", str(output)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 300
    while not (output / "executed" / "01_eda.ipynb").is_file() and time.monotonic() < deadline:
        time.sleep(0.2)
    shutil.rmtree(output)  # removed while a notebook runs (papermill writes its copy as it starts)
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == 1, stderr[-2000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and re.search(r"the run's folder was removed while 0\d_\w+\.ipynb ran", errors[0]), errors
