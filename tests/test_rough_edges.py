"""Smaller inputs that used to end in a traceback, a hang or a quiet wrong answer: the explorer's checks
before it starts, a Chromium that hangs, a report of a run that scored nothing, a split with one class left,
images in sub-folders and label conflicts."""

import os
import shutil
import socket
import stat

import psutil
import pytest
from helpers import run_pneumo_here

from pneumo_utils import report


def test_explore_with_a_model_and_no_run_or_data_says_what_to_give(tiny_model_path, monkeypatch, tmp_path):
    monkeypatch.delenv("PNEUMO_DATA_DIR", raising=False)
    monkeypatch.setattr("pneumo_utils.explore.DEFAULT_DATA_DIR", tmp_path / "nothing")
    result = run_pneumo_here("explore", "--model", tiny_model_path, "--no-browser", "--port", "38999")
    assert result.returncode == 2 and "--model without --run" in result.stderr, result.stderr


def test_explore_refuses_a_broken_model_a_bad_host_and_a_busy_port(smoke_run, tmp_path):
    broken = tmp_path / "broken.keras"
    broken.write_bytes(b"not a zip")
    shutil.copy(smoke_run / "model" / "pneumonia_cnn.json", broken.with_suffix(".json"))
    result = run_pneumo_here("explore", "--run", smoke_run, "--model", broken, "--no-browser", "--port", "38998")
    assert result.returncode == 2 and "broken.keras" in result.stderr and "Traceback" not in result.stderr
    result = run_pneumo_here("explore", "--run", smoke_run, "--host", "999.1.1.1", "--no-browser")
    assert result.returncode == 2 and "--host 999.1.1.1: not an address" in result.stderr
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_pneumo_here("explore", "--run", smoke_run, "--no-browser", "--port", port)
    assert result.returncode == 2 and f"127.0.0.1:{port} is in use; choose another with --port" in result.stderr


def test_a_chromium_that_hangs_is_stopped_with_its_helpers(tmp_path, monkeypatch):
    fake = tmp_path / "chromium"
    fake.write_text("#!/bin/sh\nsleep 300 &\nsleep 300\n")  # a helper process, then a hang
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PNEUMO_CHROMIUM", str(fake))
    page = tmp_path / "report.html"
    page.write_text("<p>report</p>")
    before = {process.pid for process in psutil.process_iter() if process.name() == "sleep"}
    with pytest.raises(RuntimeError, match="did not print the report to PDF within 2 s"):
        report.print_pdf(page, timeout=2)
    left = [
        process
        for process in psutil.process_iter()
        if process.name() == "sleep" and process.pid not in before and process.status() != psutil.STATUS_ZOMBIE
    ]
    assert not left


def test_a_report_of_a_run_that_scored_nothing_is_refused(smoke_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(smoke_run, run, ignore=shutil.ignore_patterns("synthetic_data", "checkpoints", "metrics"))
    result = run_pneumo_here("report", run, "--output", tmp_path / "report.html")
    assert result.returncode == 2 and "scored no split" in result.stderr
    assert not (tmp_path / "report.html").exists()


def test_a_split_with_every_image_of_one_class_unreadable_is_refused(tiny_model_path, tmp_path):
    from pneumo_utils.synthetic import write_synthetic_dataset

    # one unreadable file among 128 stays under the 1% allowed, and it is the only NORMAL of test/
    data = write_synthetic_dataset(tmp_path / "chest_xray", images_per_class=64, image_size=64, seed=3)
    normals = sorted((data / "test" / "NORMAL").iterdir())
    for path in normals[1:]:
        path.unlink()
    normals[0].write_bytes(b"not an image")
    result = run_pneumo_here("evaluate", "--model", tiny_model_path, "--data-dir", data, "--split", "test")
    assert result.returncode == 2 and "no readable NORMAL image" in result.stderr, result.stderr


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
