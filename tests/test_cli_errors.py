"""Every command's bad input ends in one line and the exit code of the project's one table (2: the user can fix
it, 1: it failed while working, 130: interrupted), and nothing committed or existing is replaced."""

import time
from pathlib import Path

import pytest
from helpers import pneumo, run_pneumo_here

from pneumo_utils import config
from pneumo_utils.runs import pipeline


def test_a_run_never_writes_the_committed_model_or_results(monkeypatch):
    monkeypatch.delenv(config.OUTPUT_DIR_ENV, raising=False)
    for profile in config.available_profiles():
        settings = config.load_config(profile)
        assert Path(settings["output_dir"]).is_relative_to(config.RUNS_DIR)
        assert Path(settings["model_path"]).is_relative_to(settings["output_dir"])
    assert pipeline.default_output_dir("full").parent == config.RUNS_DIR


def test_version_flag():
    result = pneumo("--version")
    assert result.returncode == 0 and result.stdout.startswith("pneumo ")


@pytest.mark.parametrize("profile", ["smoke", "full"])
def test_a_missing_data_folder_stops_before_any_kernel(tmp_path, profile):
    started = time.perf_counter()
    result = pneumo("run", "--profile", profile, "--data-dir", tmp_path / "typo", "--output-dir", tmp_path / "out")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]  # one line
    assert "typo: data directory does not exist" in result.stderr
    assert "KeyboardInterrupt" not in result.stderr and "==> running" not in result.stderr
    assert not (tmp_path / "typo").exists()  # no synthetic set written into a folder the user named
    assert time.perf_counter() - started < 60


def test_a_split_with_every_image_of_one_class_unreadable_is_refused(tiny_model_path, tmp_path):
    from pneumo_utils.data.synthetic import write_synthetic_dataset

    # one unreadable file among 128 stays under the 1% allowed, and it is the only NORMAL of test/
    data = write_synthetic_dataset(tmp_path / "chest_xray", images_per_class=64, image_size=64, seed=3)
    normals = sorted((data / "test" / "NORMAL").iterdir())
    for path in normals[1:]:
        path.unlink()
    normals[0].write_bytes(b"not an image")
    result = run_pneumo_here("evaluate", "--model", tiny_model_path, "--data-dir", data, "--split", "test")
    assert result.returncode == 2 and "no readable NORMAL image" in result.stderr, result.stderr


def test_a_missing_backbone_weights_file_stops_a_run_before_any_kernel(tmp_path):
    result = run_pneumo_here(
        "run",
        "--profile",
        "smoke",
        "--output-dir",
        str(tmp_path / "out"),
        "-p",
        "members=[{seed: 1}, {seed: 2, backbone: mobilenetv2, weights: no/such.h5}]",
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "member 2: weights file" in lines[0] and "no/such.h5 does not exist" in lines[0]
    assert not (tmp_path / "out" / "executed").exists()
