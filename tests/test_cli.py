"""The `pneumo` command, run as a user runs it (a real subprocess, real files)."""

import json
import subprocess
import sys

import pytest

from pneumo_utils.cli import UsageError, parse_overrides

EVALUATE_KEYS = {"n", "accuracy", "precision", "recall", "sensitivity", "specificity", "f1", "roc_auc", "pr_auc",
                 "brier", "threshold", "confusion_matrix", "ci95"}


def pneumo(*arguments, env=None):
    return subprocess.run([sys.executable, "-m", "pneumo_utils.cli", *map(str, arguments)], capture_output=True,
                          text=True, timeout=600, env=env)


def test_parse_overrides_reads_yaml_values():
    assert parse_overrides(["epochs=3", "resume=true", "filters=[8, 16]", "name=a=b"]) == {
        "epochs": 3, "resume": True, "filters": [8, 16], "name": "a=b"}
    with pytest.raises(UsageError, match="key=value"):
        parse_overrides(["epochs"])


def test_evaluate_writes_exactly_the_documented_keys(tiny_model_path, synthetic_root, tmp_path):
    output = tmp_path / "metrics.json"
    result = pneumo("evaluate", "--model", tiny_model_path, "--data-dir", synthetic_root, "--output", output)
    assert result.returncode == 0, result.stderr
    metrics = json.loads(output.read_text())
    assert set(metrics) == EVALUATE_KEYS
    test_images = len(list(synthetic_root.glob("test/*/*.jpeg")))
    card = json.loads(tiny_model_path.with_suffix(".json").read_text())
    assert metrics["n"] == test_images and metrics["threshold"] == card["threshold"]["value"]
    assert set(metrics["ci95"]) == EVALUATE_KEYS - {"n", "threshold", "confusion_matrix", "ci95"}
    assert "roc_auc" in result.stdout
    # the same output again is refused without --overwrite: nothing is lost
    again = pneumo("evaluate", "--model", tiny_model_path, "--data-dir", synthetic_root, "--output", output)
    assert again.returncode == 2 and "--overwrite" in again.stderr


def test_evaluate_on_the_validation_split(tiny_model_path, synthetic_root):
    result = pneumo("evaluate", "--model", tiny_model_path, "--data-dir", synthetic_root, "--split", "val")
    assert result.returncode == 0, result.stderr
    assert "n=" in result.stdout


@pytest.mark.parametrize("problem", ["missing_model", "bad_layout"])
def test_evaluate_bad_input_is_one_line_and_exit_2(tiny_model_path, synthetic_root, tmp_path, problem):
    model = tmp_path / "nope.keras" if problem == "missing_model" else tiny_model_path
    data_dir = synthetic_root if problem == "missing_model" else tmp_path
    result = pneumo("evaluate", "--model", model, "--data-dir", data_dir)
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: ") and len(result.stderr.strip().splitlines()) == 1
    assert str(model if problem == "missing_model" else data_dir) in result.stderr


def test_run_refuses_to_overwrite_an_existing_run(tmp_path):
    (tmp_path / "run_summary.json").write_text("{}")
    result = pneumo("run", "--profile", "smoke", "--output-dir", tmp_path)
    assert result.returncode == 2 and "--overwrite" in result.stderr


def test_run_rejects_an_unknown_setting(tmp_path):
    result = pneumo("run", "--profile", "smoke", "--output-dir", tmp_path, "-p", "epoch=3")
    assert result.returncode == 2 and "unknown setting" in result.stderr and "epoch" in result.stderr


def test_index_reports_counts(synthetic_root):
    result = pneumo("index", "--data-dir", synthetic_root)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    normal_train = len(list(synthetic_root.glob("train/NORMAL/*.jpeg")))
    assert report["counts"]["train/NORMAL"]["images"] == normal_train and report["duplicate_groups"] == 2
