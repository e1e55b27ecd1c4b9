"""The out-of-distribution gate: fitted on the training side of the split, its threshold from the validation
side, stored beside the model and named in the card; predict labels an input unlike the training X-rays
OUT_OF_DISTRIBUTION (exit 0, one warning line naming it) unless --no-ood; the benchmark writes its JSON."""

import json

import numpy as np
import pandas as pd
import pytest
from helpers import run_pneumo_here, write_png

from pneumo_utils import data
from pneumo_utils.cli.predict import DECISION_FIELDS
from pneumo_utils.images import Preprocessing
from pneumo_utils.model import ood


@pytest.fixture(scope="module")
def synthetic_split(synthetic_root):
    index = data.index_dataset(synthetic_root)
    preprocessing = Preprocessing(image_size=64)
    train = data.load_split(data.select_split(index, "train", 0.25, 0), preprocessing)[0]
    validation = data.load_split(data.select_split(index, "val", 0.25, 0), preprocessing)[0]
    test = data.load_split(data.select_split(index, "test", 0.25, 0), preprocessing)[0]
    return train, validation, test


def test_the_gate_flags_what_is_not_an_x_ray_and_passes_x_rays(synthetic_split):
    train, validation, test = synthetic_split
    detector = ood.Detector.fit(train, validation, quantile=0.99)
    assert detector.fitted_on["validation_stopped"] <= 0.05  # the threshold comes from the validation side
    assert np.mean(detector.in_distribution(detector.score(test))) >= 0.8  # unseen synthetic X-rays pass
    uniform = np.full((4, 64, 64), 128, np.uint8)
    inverted = 255 - test[:4]
    turned = np.rot90(test[:4], axes=(1, 2))
    for outside in (uniform, inverted, turned):
        assert not detector.in_distribution(detector.score(outside)).any()


def test_the_gate_is_stored_beside_the_model_and_checked(synthetic_split, tmp_path):
    train, validation, _ = synthetic_split
    detector = ood.Detector.fit(train, validation)
    entry = detector.save(tmp_path / "m.ood.npz")
    card = {"ood": entry}
    loaded = ood.Detector.load(tmp_path / "m.keras", card)
    assert loaded.threshold == pytest.approx(detector.threshold)
    assert np.allclose(loaded.score(validation[:3]), detector.score(validation[:3]))
    (tmp_path / "m.ood.npz").write_bytes(b"tampered")
    with pytest.raises(ood.OodError, match="does not match the SHA-256"):
        ood.Detector.load(tmp_path / "m.keras", card)
    assert ood.Detector.load(tmp_path / "m.keras", {}) is None


@pytest.mark.slow
def test_predict_labels_an_out_of_distribution_input(tiny_model_path, synthetic_root, tmp_path):
    card = json.loads(tiny_model_path.with_suffix(".json").read_text())
    assert card["ood"]["file"] == "tiny.ood.npz" and (tiny_model_path.parent / "tiny.ood.npz").is_file()
    inputs = tmp_path / "inputs"
    write_png(inputs / "grey.png", np.full((80, 80), 128, np.uint8))
    xray = sorted((synthetic_root / "test" / "PNEUMONIA").glob("*.jpeg"))[0]
    (inputs / xray.name).write_bytes(xray.read_bytes())
    table = tmp_path / "predictions.csv"
    result = run_pneumo_here("predict", inputs, "--model", tiny_model_path, "--output", table)
    assert result.returncode == 0, result.stderr
    rows = pd.read_csv(table).set_index("path")
    assert list(rows.columns) == [*DECISION_FIELDS, "error"]
    grey = rows.loc[[path for path in rows.index if path.endswith("grey.png")][0]]
    assert grey["label"] == grey["decision"] == "OUT_OF_DISTRIBUTION" and not grey["in_distribution"]
    # a stopped input shows no probability; the model's output is kept apart, and the gate's ratio says how far out
    assert pd.isna(grey["probability"]) and 0 <= grey["probability_if_in_distribution"] <= 1
    assert grey["ood_ratio"] > 1 and grey["ood_ratio"] == pytest.approx(grey["ood_score"] / card["ood"]["threshold"])
    kept = rows.loc[[path for path in rows.index if path.endswith(xray.name)][0]]
    assert kept["in_distribution"] and kept["ood_ratio"] <= 1 and pd.isna(kept["probability_if_in_distribution"])
    (shown,) = [line for line in result.stdout.splitlines() if "grey.png" in line]
    assert "OUT_OF_DISTRIBUTION" in shown and "0." not in shown.split("grey.png", 1)[1].split("OUT_OF")[0]
    warnings = [line for line in result.stderr.splitlines() if "OUT_OF_DISTRIBUTION" in line]
    assert len(warnings) == 1 and "grey.png" in warnings[0] and "does not look like the chest X-rays" in warnings[0]
    off = run_pneumo_here("predict", inputs / "grey.png", "--model", tiny_model_path, "--no-ood")
    assert off.returncode == 0 and "OUT_OF_DISTRIBUTION" not in off.stdout + off.stderr


@pytest.mark.slow
def test_bench_ood_writes_the_figures_per_family(tiny_model_path, synthetic_root, tmp_path):
    output = tmp_path / "bench_ood.json"
    result = run_pneumo_here(
        "bench", "ood", "--model", tiny_model_path, "--data-dir", synthetic_root, "--images", 6, "--output", output
    )
    assert result.returncode == 0, result.stderr
    bench = json.loads(output.read_text())
    assert {"uniform", "noise", "text", "inverted", "turned 90", "corner crop"} <= set(bench["families"])
    for figures in bench["families"].values():
        assert 0 <= figures["gate (Mahalanobis)"]["auroc"] <= 1 and "max-logit (the model's confidence)" in figures
    assert set(bench["in_distribution"]) >= {"val"} and bench["worst_family_auroc"] <= 1
    # issue 29, class 8: the marks of real films (expected to pass) and unreadable films (expected to stop)
    expected = {name: entry["expected"] for name, entry in bench["films"].items()}
    assert expected == {
        "burned-in text": "pass",
        "black border 10%": "pass",
        "rotated 5 degrees": "pass",
        "rotated 10 degrees": "pass",
        "enlarged from 32 px": "stop",
        "JPEG quality 5": "stop",
    }
    for entry in [*bench["films"].values(), *bench["families"].values(), *bench["in_distribution"].values()]:
        assert (
            0 <= entry["stopped_by_gate"] <= entry["stopped"] <= 1 and entry["stopped_by_quality"] <= entry["stopped"]
        )
    assert 0 <= bench["real_films_passed_worst"] <= 1 and 0 <= bench["unreadable_stopped_worst"] <= 1


def test_the_explorer_shows_the_verdict_before_the_heatmap(tiny_model_path, synthetic_root):
    from pneumo_utils import explore

    explorer = explore.Explorer(tiny_model_path)
    grey = np.full((32, 32), 128, np.uint8)
    result = explorer.explain(grey)
    assert result["label"] == "OUT_OF_DISTRIBUTION" and result["would_be_label"] in ("NORMAL", "PNEUMONIA")
    verdict = explore.verdict_html("holiday.png", result, explorer.threshold)
    assert verdict.index("does not look like the chest X-rays") < verdict.index("holiday.png")
    xray = explorer.read(sorted((synthetic_root / "test" / "NORMAL").glob("*.jpeg"))[0])
    assert "does not look like" not in explore.verdict_html("x.jpeg", explorer.explain(xray), explorer.threshold)


def test_the_lesson_examples_show_the_verdicts(tiny_model_path, synthetic_split):
    from pneumo_utils import model
    from pneumo_utils.images import resize_all

    network, card = model.load_model(tiny_model_path)
    detector = ood.Detector.load(tiny_model_path, card)
    _, validation, _ = synthetic_split
    images, table = ood.gate_examples(network, detector, resize_all(validation, 32))
    assert len(images) == len(table) and table["input"].iloc[-1] == "an X-ray of the set"
    assert (table.loc[table["input"] == "uniform", "gate"] == "OUT_OF_DISTRIBUTION").all()
    assert table["would-be P(pneumonia)"].between(0, 1).all()
