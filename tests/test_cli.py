"""The `pneumo` command as its entry point runs it: arguments in, exit status and terminal output out, real
files. The commands run in this process, so TensorFlow is imported once for all of them instead of once per
command; what only a separate process shows (a quiet terminal, signals, two processes racing) is tested with
real processes in test_pipeline.py, test_hardening.py and test_sweep.py."""

import json

import numpy as np
import pytest
from helpers import pneumo

from pneumo_utils.cli import UsageError, parse_overrides
from pneumo_utils.cli.predict import DECISION_FIELDS

EVALUATE_KEYS = {
    "modes",
    "n",
    "accuracy",
    "precision",
    "recall",
    "sensitivity",
    "specificity",
    "f1",
    "roc_auc",
    "pr_auc",
    "brier",
    "threshold",
    "confusion_matrix",
    "ci95",
    "subgroups",
}


def test_parse_overrides_reads_yaml_values():
    assert parse_overrides(["epochs=3", "resume=true", "filters=[8, 16]", "name=a=b"]) == {
        "epochs": 3,
        "resume": True,
        "filters": [8, 16],
        "name": "a=b",
    }
    with pytest.raises(UsageError, match="key=value"):
        parse_overrides(["epochs"])


@pytest.mark.slow
def test_evaluate_writes_exactly_the_documented_keys(tiny_model_path, synthetic_root, tmp_path):
    output = tmp_path / "metrics.json"
    result = pneumo("evaluate", "--model", tiny_model_path, "--data-dir", synthetic_root, "--output", output)
    assert result.returncode == 0, result.stderr
    metrics = json.loads(output.read_text())
    assert set(metrics) == EVALUATE_KEYS
    test_images = len(list(synthetic_root.glob("test/*/*.jpeg")))
    card = json.loads(tiny_model_path.with_suffix(".json").read_text())
    assert metrics["n"] == test_images and metrics["threshold"] == card["threshold"]["value"]
    assert set(metrics["ci95"]) == EVALUATE_KEYS - {"n", "threshold", "confusion_matrix", "ci95", "subgroups", "modes"}
    assert "roc_auc" in result.stdout
    provenance = json.loads(output.with_suffix(".provenance.json").read_text())
    assert provenance["splits"]["test"]["scored"] == test_images and len(provenance["data_fingerprint"]) == 16
    assert provenance["bootstrap"] == {"resamples": 1000, "seed": 0}
    assert provenance["evaluation"]["versions"]["tensorflow"].startswith("2.21")
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
    from pneumo_utils.config import portable_path

    assert report["data_dir"] == portable_path(synthetic_root)  # /tmp/...: as typed, not ../../tmp/...


def test_paths_are_project_relative_inside_the_project_and_as_typed_elsewhere():
    from pathlib import Path

    from pneumo_utils.config import PROJECT_ROOT, portable_path

    assert portable_path(PROJECT_ROOT / "runs" / "x") == "runs/x"
    assert portable_path(PROJECT_ROOT.parent / "shared" / "data") == "../shared/data"  # a folder beside it
    outside = Path("/pneumo-nowhere/run")  # neither in the project nor beside it (unless the project is at /x)
    if PROJECT_ROOT.parent != Path("/"):
        assert portable_path(outside) == "/pneumo-nowhere/run"


@pytest.mark.slow
def test_gradcam_writes_overlays_and_json_and_names_bad_files(tiny_model_path, synthetic_root, tmp_path):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    good = sorted((synthetic_root / "test" / "PNEUMONIA").glob("*.jpeg"))[:2]
    for path in good:
        (inputs / path.name).write_bytes(path.read_bytes())
    (inputs / "broken.png").write_text("not a png")
    out = tmp_path / "out"
    result = pneumo("gradcam", inputs, "--out", out, "--model", tiny_model_path, "--method", "gradcam++")
    assert result.returncode == 1  # one input failed; the others were still processed
    assert [line for line in result.stderr.splitlines() if line.startswith("error:")] == [
        f"error: {inputs / 'broken.png'}: not a readable image (corrupt, truncated or another format)"
    ]
    report = json.loads((out / "gradcam.json").read_text())
    assert len(report["images"]) == 3 and report["method"] == "gradcam++"
    for entry in report["images"]:
        if entry["error"]:
            assert entry["probability"] is None
            continue
        assert (out / entry["overlay"]).stat().st_size > 1000
        assert 0 <= entry["probability"] <= 1 and entry["label"] in ("NORMAL", "PNEUMONIA")
        cam = entry["cam"]
        assert cam["central_share"] is None or abs(cam["central_share"] + cam["border_share"] - 1) < 1e-5
    again = pneumo("gradcam", inputs, "--out", out, "--model", tiny_model_path)
    assert again.returncode == 2 and "--overwrite" in again.stderr


def test_gradcam_missing_input_is_a_usage_error(tiny_model_path, tmp_path):
    result = pneumo("gradcam", tmp_path / "missing.png", "--out", tmp_path / "out", "--model", tiny_model_path)
    assert result.returncode == 2 and "missing.png: no such file or folder" in result.stderr


@pytest.mark.slow
def test_bench_gradcam_writes_the_documented_keys(tiny_model_path, tmp_path):
    output = tmp_path / "bench.json"
    result = pneumo(
        "bench", "gradcam", "--model", tiny_model_path, "--images", 4, "--batch-size", 4, "--output", output
    )
    assert result.returncode == 0, result.stderr
    bench = json.loads(output.read_text())
    assert {"per_image_ms_reference", "per_image_ms_batched", "speedup", "max_abs_diff"} <= set(bench)
    assert bench["max_abs_diff"] <= 1e-4 and bench["settings"]["images"] == 4


@pytest.mark.slow
def test_bench_gradcam_compares_each_member_of_an_ensemble(tiny_model_path, tmp_path):
    """The committed model is an ensemble: each member's batched maps against the per-image reference on that
    member (members of different input sizes and kinds: a CNN at 32 px, a frozen MobileNetV2 at 48 px)."""
    from helpers import minimal_card

    from pneumo_utils import model

    tiny, _ = model.load_model(tiny_model_path)
    probe = model.build_backbone_model(48, "mobilenetv2", weights=None, alpha=0.35, augment=False, trainable=False)
    path = tmp_path / "ensemble.keras"
    model.save_model(model.build_ensemble([tiny, probe]), path, minimal_card(48))
    output = tmp_path / "bench.json"
    result = pneumo("bench", "gradcam", "--model", path, "--images", 4, "--batch-size", 4, "--output", output)
    assert result.returncode == 0, result.stderr
    bench = json.loads(output.read_text())
    assert [member["image_size"] for member in bench["members"]] == [32, 48]
    assert bench["max_abs_diff"] == max(member["max_abs_diff"] for member in bench["members"]) <= 1e-4
    assert bench["per_image_ms_batched"] == pytest.approx(
        sum(m["per_image_ms_batched"] for m in bench["members"]), abs=0.01
    )


@pytest.mark.slow
def test_bench_train_writes_the_documented_keys(tmp_path):
    output = tmp_path / "bench.json"
    result = pneumo("bench", "train", "--profile", "smoke", "--images", 32, "--output", output)
    assert result.returncode == 0, result.stderr
    bench = json.loads(output.read_text())
    assert bench["train_images_per_s"] > 0 and bench["inference_images_per_s"] > 0 and bench["peak_rss_mb"] > 100
    assert bench["settings"]["image_size"] == 64 and bench["settings"]["inference_batch_size"] == 64
    estimate = bench["full_run_estimate"]  # the budget check of the full profile: minutes, size, peak memory
    rate = bench["members"][0]
    expected = 4 * (4470 / rate["train_images_per_s"] + 746 / rate["inference_images_per_s"]) / 60
    assert estimate["epochs_per_member"] == [4] and estimate["training_minutes"] == pytest.approx(expected, abs=0.1)
    assert estimate["budget"] == {"training_minutes": 30, "peak_rss_mb": 3072, "model_mb": 25}
    assert isinstance(estimate["within_budget"], bool)


@pytest.mark.slow
def test_predict_reports_every_input_and_exit_codes(tiny_model_path, synthetic_root, tmp_path):
    import csv

    from helpers import write_dicom

    folder = tmp_path / "xrays"
    nested = folder / "nested"
    nested.mkdir(parents=True)
    good = sorted((synthetic_root / "test" / "NORMAL").glob("*.jpeg"))[0]
    (nested / good.name).write_bytes(good.read_bytes())
    write_dicom(folder / "scan.dcm", (np.arange(64 * 64).reshape(64, 64) % 4000).astype(np.uint16))
    (folder / "corrupt.jpeg").write_bytes(b"\xff\xd8\xff\xe0garbage")
    empty_folder = tmp_path / "nothing_here"
    empty_folder.mkdir()
    (empty_folder / "notes.txt").write_text("no images")
    output = tmp_path / "predictions.csv"
    gradcam_dir = tmp_path / "overlays"
    result = pneumo(
        "predict", folder, empty_folder, "--model", tiny_model_path, "--output", output, "--gradcam", gradcam_dir
    )
    assert result.returncode == 1, result.stderr
    rows = list(csv.DictReader(output.open()))
    assert list(rows[0]) == ["path", *DECISION_FIELDS, "error"]
    by_name = {row["path"].rsplit("/", 1)[-1]: row for row in rows}
    assert set(by_name) == {"nothing_here", "corrupt.jpeg", "scan.dcm", good.name}
    for name in ("scan.dcm", good.name):
        # read and scored; the gate may call a synthetic ramp DICOM unlike the training X-rays
        assert by_name[name]["error"] == "" and by_name[name]["label"] in ("NORMAL", "PNEUMONIA", "OUT_OF_DISTRIBUTION")
        row = by_name[name]
        shown = row["probability"] if row["in_distribution"] == "True" else row["probability_if_in_distribution"]
        assert 0 <= float(shown) <= 1  # a stopped input's output is kept apart from its (blank) probability
    assert "truncated JPEG" in by_name["corrupt.jpeg"]["error"]
    assert "folder holds no images" in by_name["nothing_here"]["error"]
    assert sorted(p.name for p in gradcam_dir.iterdir()) == sorted([f"{good.stem}_gradcam.png", "scan_gradcam.png"])
    assert f"wrote 2 Grad-CAM overlay(s) to {gradcam_dir}" in result.stderr  # the user is told where they went
    assert "Traceback" not in result.stderr

    only_good = pneumo("predict", nested / good.name, "--model", tiny_model_path, "--output", tmp_path / "one.json")
    assert only_good.returncode == 0, only_good.stderr
    assert json.loads((tmp_path / "one.json").read_text())[0]["error"] == ""


@pytest.mark.parametrize("model_problem", ["missing", "corrupt", "not_keras"])
def test_predict_with_a_bad_model_is_one_clear_error(synthetic_root, tmp_path, model_problem):
    image = sorted((synthetic_root / "test" / "NORMAL").glob("*.jpeg"))[0]
    model_path = {
        "missing": tmp_path / "none.keras",
        "corrupt": tmp_path / "corrupt.keras",
        "not_keras": tmp_path / "weights.h5",
    }[model_problem]
    if model_problem != "missing":
        model_path.write_bytes(b"PK\x03\x04 definitely not a whole zip")
        model_path.with_suffix(".json").write_text("{}")
    result = pneumo("predict", image, "--model", model_path)
    assert result.returncode == 2
    assert result.stderr.strip().startswith(f"error: {model_path}") and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_train_records_an_experiment_and_the_table_gathers_it(tmp_path):
    root = tmp_path / "experiments"
    result = pneumo(
        "train",
        "--profile",
        "smoke",
        "--name",
        "tiny",
        "--root",
        root,
        "--description",
        "a test",
        "-p",
        "epochs=1",
        "-p",
        "image_size=32",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    record = json.loads((root / "tiny" / "experiment.json").read_text())
    assert record["overrides"] == {"epochs": 1, "image_size": 32} and record["settings"]["image_size"] == 32
    assert set(record["validation"]) == EVALUATE_KEYS - {"subgroups", "modes"}
    stress = json.loads((root / "tiny" / "robustness.json").read_text())
    assert set(stress["conditions"]) >= {"clean", "gamma 0.6 (overexposed look)", "zoom out 0.85"}
    again = pneumo("train", "--profile", "smoke", "--name", "tiny", "--root", root)
    assert again.returncode == 2 and "--overwrite" in again.stderr
    table = pneumo("experiments", "--root", root, "--output", tmp_path / "table.md")
    assert table.returncode == 0, table.stderr
    text = (tmp_path / "table.md").read_text()
    assert "| tiny " in text and "stress specificity" in text and "validation split" in text


@pytest.mark.slow
def test_train_views_only_scores_a_held_out_view_without_a_random_split_model(synthetic_root, tmp_path):
    root = tmp_path / "experiments"
    view = "cross-batch IM->NORMAL2"
    result = pneumo(
        "train",
        "--profile",
        "smoke",
        "--name",
        "screen",
        "--root",
        root,
        "--data-dir",
        synthetic_root,
        "--views-only",
        "--views",
        view,
        "-p",
        "epochs=1",
        "-p",
        "image_size=32",
        "-p",
        "members=[{seed: 7}]",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert not (root / "screen" / "experiment.json").exists() and not (root / "screen" / "model.keras").exists()
    record = json.loads((root / "screen" / "views.json").read_text())
    assert list(record["views"]) == [view]
    shifted = record["views"][view]["shifted"]
    assert 0.0 <= shifted["roc_auc"] <= 1.0 and record["views"][view]["shifted_images"]["NORMAL"] > 0
    assert len(list((root / "screen" / "views").glob("*/scores.csv"))) == 1
    for arguments in (("--views-only",), ("--views-only", "--views", "random")):
        refused = pneumo("train", "--profile", "smoke", "--name", "screen", "--root", root, *arguments)
        assert refused.returncode == 2 and "--views-only needs --views" in refused.stderr


@pytest.mark.parametrize(
    "parameter, named",
    [
        ("filters=[8, 16", "-p filters=[8, 16: the value is not valid YAML"),
        ("method=bogus", "-p method='bogus': must be one of ['gradcam', 'gradcam++']"),
        ("image_size=7", "image_size must be from 32 to 1024, got 7"),
        ("members=[{bogus: 1}]", "member 1: unknown setting(s) ['bogus']"),
        ("filters=[]", "filters must be a non-empty list of positive integers"),
        # issue 29: a value of the wrong kind names its field before any range check compares it
        ("dropout=high", "dropout must be float, got 'high'"),
        ("val_fraction={}", "val_fraction must be float, got {}"),
        ("min_sensitivity=[1]", "min_sensitivity must be float, got [1]"),
        ("epochs=many", "epochs must be int, got 'many'"),
    ],
)
def test_bad_run_values_stop_before_any_kernel(parameter, named, tmp_path):
    result = pneumo("run", "--profile", "smoke", "--output-dir", tmp_path / "run", "-p", parameter)
    assert result.returncode == 2 and named in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "run").exists()


@pytest.mark.parametrize("value", ["0", "-3", "many"])
def test_numeric_flags_are_checked_by_the_parser(value, tmp_path):
    result = pneumo("predict", tmp_path, "--batch-size", value)
    assert result.returncode == 2 and "--batch-size" in result.stderr and "Traceback" not in result.stderr
