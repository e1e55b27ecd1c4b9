"""``pneumo report``: one self-contained HTML file (and a PDF through Chromium, stopped if it hangs), what it
says of ensembles, and the runs it refuses."""

import re
import shutil
import stat
import subprocess
import sys

import cv2
import psutil
import pytest
from helpers import PNEUMO, run_pneumo_here

from pneumo_utils.runs import report


@pytest.mark.slow
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
    _, alive = psutil.wait_procs(left, timeout=3)  # a helper just killed may not have been reaped yet

    def running(process) -> bool:
        try:
            return process.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    assert not [process for process in alive if running(process)]


def test_a_report_of_a_run_that_scored_nothing_is_refused(smoke_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(smoke_run, run, ignore=shutil.ignore_patterns("synthetic_data", "checkpoints", "metrics"))
    result = run_pneumo_here("report", run, "--output", tmp_path / "report.html")
    assert result.returncode == 2 and "scored no split" in result.stderr
    assert not (tmp_path / "report.html").exists()


@pytest.mark.slow
def test_the_report_of_a_smoke_run_is_one_self_contained_file(smoke_run, tmp_path):
    output = tmp_path / "report.html"
    result = subprocess.run(
        [
            *PNEUMO,
            "report",
            str(smoke_run),
            "--output",
            str(output),
            *(["--pdf", "--png"] if report.find_chromium() else []),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    page = output.read_text()
    figures = sorted((smoke_run / "figures").glob("*.png"))
    assert page.count('src="data:image/png;base64,') == len(figures) >= 8  # every figure, embedded
    assert not re.search(r'src="(?!data:)', page) and "<script" not in page  # nothing to fetch, no code
    assert "In [" not in page and "input_prompt" not in page  # no input cells
    assert (
        "<th>metric</th><th>validation (patient-grouped split of train/)</th><th>test-dev (used for selection)</th>"
        "<th>test-final (held out, never used for a choice)</th><th>test (the whole test/ folder)</th>"
    ) in page
    assert re.search(r"<td>roc_auc</td><td>\d\.\d{3} \[\d\.\d{3}, \d\.\d{3}\]</td>", page)
    for heading in (
        "What data",
        "What model",
        "How the recipe was chosen",
        "Calibration",
        "Stress validation",
        "Grad-CAM",
        "Provenance",
    ):
        assert f"<h2>{heading}" in page
    if report.find_chromium():
        assert output.with_suffix(".pdf").read_bytes()[:5] == b"%PDF-"
        picture = cv2.imread(str(output.with_suffix(".png")))  # the full page, asking for nothing but itself
        assert picture.shape[1] == 1200 and picture.shape[0] > 3000, picture.shape
    again = subprocess.run(
        [*PNEUMO, "report", str(smoke_run), "--output", str(output)], capture_output=True, text=True, timeout=120
    )
    assert again.returncode == 2 and "already exists" in again.stderr  # never replaced without --overwrite


@pytest.mark.slow
def test_report_pdf_says_so_when_there_is_no_chromium(smoke_run, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no chromium on this PATH
    monkeypatch.delenv("PNEUMO_CHROMIUM", raising=False)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pneumo_utils.cli",
            "report",
            str(smoke_run),
            "--output",
            str(tmp_path / "r.html"),
            "--pdf",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1 and "--pdf needs Chromium" in result.stderr
    assert (tmp_path / "r.html").is_file() and not (tmp_path / "r.pdf").exists()


def test_the_report_states_an_ensembles_epochs_per_member():
    from pneumo_utils.runs import report

    single = {"epochs_run": 18, "kept_epoch": 14}
    assert report._epochs_text(single) == "18 epochs run, epoch 14 kept"
    ensemble = {"epochs_run": 24, "kept_epoch": 12, "members": 2, "kept_epochs": [12, 10]}
    assert report._epochs_text(ensemble) == (
        "an ensemble of 2 members trained one after the other, 24 epochs run in all, epochs 12, 10 kept"
    )
