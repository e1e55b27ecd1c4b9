"""Subgroup figures: kinds and batches from the file names, the Wilson interval, the figures against
scikit-learn, the `subgroups` key of pneumo evaluate and the report's "For whom does it work?" section."""

import json

import numpy as np
import pandas as pd
import pytest
from helpers import run_pneumo_here
from sklearn.metrics import recall_score

from pneumo_utils import subgroups


def test_kinds_and_batches_come_from_the_public_file_names():
    assert subgroups.pneumonia_kind("test/PNEUMONIA/person1_bacteria_1.jpeg") == "bacterial"
    assert subgroups.pneumonia_kind("person1_virus_6.jpeg") == "viral"
    assert subgroups.pneumonia_kind("scan.png") is None
    assert subgroups.normal_batch("test/NORMAL/NORMAL2-IM-0101-0001.jpeg") == "NORMAL2-IM-"
    assert subgroups.normal_batch("IM-0001-0001.jpeg") == "IM-"
    assert subgroups.normal_batch("other.jpeg") is None


def test_the_wilson_interval_against_known_values():
    low, high = subgroups.wilson_interval(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-4) and high == pytest.approx(0.9433, abs=1e-4)
    assert subgroups.wilson_interval(0, 5)[0] == 0.0 and subgroups.wilson_interval(5, 5)[1] == 1.0
    assert subgroups.wilson_interval(0, 0) is None


def test_subgroup_figures_agree_with_scikit_learn():
    rng = np.random.default_rng(0)
    names = [f"person{i}_bacteria_{i}.jpeg" for i in range(40)] + [f"person{i}_virus_{i}.jpeg" for i in range(30)]
    names += [f"IM-{i:04d}-0001.jpeg" for i in range(25)] + [f"NORMAL2-IM-{i:04d}-0001.jpeg" for i in range(35)]
    targets = np.array([1] * 70 + [0] * 60)
    frame = pd.DataFrame(
        {
            "file": names,
            "target": targets,
            "probability": rng.uniform(0, 1, 130),
            "width": rng.integers(500, 3000, 130),
            "height": rng.integers(500, 3000, 130),
        }
    )
    figures = subgroups.subgroup_figures(frame, 0.4)
    predicted = (frame["probability"] >= 0.4).astype(int)
    viral = frame["file"].str.contains("virus")
    assert figures["pneumonia: viral"]["value"] == pytest.approx(recall_score(targets[viral], predicted[viral]))
    batch = frame["file"].str.startswith("NORMAL2-IM-")
    specificity = recall_score(targets[batch], predicted[batch], pos_label=0)
    assert figures["NORMAL batch NORMAL2-IM-"]["value"] == pytest.approx(specificity)
    assert figures["NORMAL batch NORMAL2-IM-"]["n"] == 35
    tertiles = [name for name in figures if name.startswith("size tertile")]
    assert len(tertiles) == 3 and sum(figures[name]["n"] for name in tertiles) == 130
    for entry in figures.values():
        assert set(entry) == {"n", "metric", "value", "ci95"} and entry["ci95"][0] <= entry["value"] <= entry["ci95"][1]


def test_a_subgroup_wholly_below_the_overall_figure_is_named():
    names = [f"person{i}_bacteria_{i}.jpeg" for i in range(200)] + [f"person{i}_virus_{i}.jpeg" for i in range(60)]
    probabilities = [0.9] * 200 + [0.9] * 20 + [0.1] * 40  # viral pneumonia mostly missed
    frame = pd.DataFrame({"file": names, "target": 1, "probability": probabilities})
    sentences = subgroups.below_overall(subgroups.subgroup_figures(frame, 0.5))
    assert len(sentences) == 1 and sentences[0].startswith("pneumonia: viral: sensitivity 0.333")


def test_evaluate_writes_the_subgroups_key(tiny_model_path, synthetic_root, tmp_path):
    output = tmp_path / "metrics.json"
    result = run_pneumo_here(
        "evaluate", "--model", tiny_model_path, "--data-dir", synthetic_root, "--split", "test", "--output", output
    )
    assert result.returncode == 0, result.stderr
    figures = json.loads(output.read_text())["subgroups"]
    assert {"overall sensitivity", "overall specificity"} <= set(figures)
    assert all(set(entry) == {"n", "metric", "value", "ci95"} for entry in figures.values())
    assert "for whom it works" in result.stdout


def test_the_report_has_the_for_whom_section(smoke_run, tmp_path):
    output = tmp_path / "report.html"
    result = run_pneumo_here("report", smoke_run, "--output", output)
    assert result.returncode == 0, result.stderr
    page = output.read_text()
    assert "For whom does it work?" in page and "NORMAL batch" in page and "Wilson" in page
    assert json.loads((smoke_run / "metrics" / "metrics_validation.json").read_text())["subgroups"]
    assert (smoke_run / "figures" / "subgroups_forest.png").is_file()


def test_the_threshold_lab_shows_one_subgroups_confusion_matrix():
    from pneumo_utils import explore

    frame = pd.DataFrame(
        {
            "file": [
                "test/PNEUMONIA/person1_virus_1.jpeg",
                "test/PNEUMONIA/person2_bacteria_2.jpeg",
                "test/NORMAL/IM-0001-0001.jpeg",
                "test/NORMAL/NORMAL2-IM-0002-0001.jpeg",
            ],
            "target": [1, 1, 0, 0],
            "probability": [0.2, 0.9, 0.1, 0.8],
        }
    )
    assert explore.subgroup_names([frame]) == ["all", *explore.SUBGROUP_CHOICES]
    viral = explore.subgroup_rows(frame, "pneumonia: viral")
    point = explore.operating_point(viral["target"], viral["probability"], 0.5)
    assert (point["tp"], point["fn"], point["tn"], point["fp"]) == (0, 1, 0, 0)
    normal2 = explore.subgroup_rows(frame, "NORMAL batch NORMAL2-IM-")
    assert list(normal2["file"]) == ["test/NORMAL/NORMAL2-IM-0002-0001.jpeg"]
    assert "nan" not in explore.lab_html(point)
    with pytest.raises(ValueError, match="subgroup"):
        explore.subgroup_rows(frame, "left-handed")
