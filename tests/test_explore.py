"""Issue 11: the explorer's logic (threshold lab, image choice, stress sliders, uploads, heatmaps) and the
one-file report, with a real tiny model and a real smoke run."""

import json
import re
import shutil
import socket
import subprocess

import numpy as np
import pandas as pd
import pytest
from helpers import PNEUMO, run_pneumo_here

from pneumo_utils import config, explore
from pneumo_utils.images import ImageReadError, Preprocessing


def test_operating_point_counts_rates_and_prevalence():
    targets = [0, 0, 0, 0, 1, 1, 1, 1, 1, 1]
    probabilities = [0.1, 0.2, 0.3, 0.7, 0.4, 0.6, 0.8, 0.9, 0.95, 0.99]
    point = explore.operating_point(targets, probabilities, 0.5)
    assert (point["tn"], point["fp"], point["fn"], point["tp"]) == (3, 1, 1, 5)
    assert point["sensitivity"] == pytest.approx(5 / 6) and point["specificity"] == pytest.approx(3 / 4)
    assert point["prevalence"] == pytest.approx(0.6)  # the set's own
    assert point["ppv"] == pytest.approx(5 / 6) and point["npv"] == pytest.approx(3 / 4)  # = the set's own counts
    rare = explore.operating_point(targets, probabilities, 0.5, prevalence=0.05)
    expected_ppv = (5 / 6 * 0.05) / (5 / 6 * 0.05 + 1 / 4 * 0.95)
    assert rare["ppv"] == pytest.approx(expected_ppv) and rare["ppv"] < 0.2  # rare disease: most positives false
    assert explore.operating_point(targets, probabilities, 0.0)["specificity"] == 0.0
    assert explore.operating_point(targets, probabilities, 1.0)["sensitivity"] == 0.0
    with pytest.raises(ValueError, match="prevalence"):
        explore.operating_point(targets, probabilities, 0.5, prevalence=1.5)


def test_lab_readout_shows_the_numbers_and_no_nan():
    text = explore.lab_html(explore.operating_point([0, 1, 1], [0.2, 0.6, 0.9], 0.95), card_threshold=0.5)
    assert re.search(r'class="pneumo-sensitivity">0.000<', text) and 'class="pneumo-ppv">n/a<' in text
    assert "Card threshold 0.5000" in text and "nan" not in text


def test_images_are_chosen_by_class_and_outcome():
    frame = pd.DataFrame(
        {
            "file": list("abcd"),
            "label": ["NORMAL", "NORMAL", "PNEUMONIA", "PNEUMONIA"],
            "probability": [0.2, 0.7, 0.8, 0.3],
        }
    )
    assert list(explore.select_images(frame, 0.5, outcome="false alarm")["file"]) == ["b"]
    assert list(explore.select_images(frame, 0.5, outcome="missed")["file"]) == ["d"]
    assert list(explore.select_images(frame, 0.5, "PNEUMONIA", "correct")["file"]) == ["c"]
    assert list(explore.select_images(frame, 0.1, "NORMAL", "all")["outcome"]) == ["false alarm", "false alarm"]
    with pytest.raises(ValueError, match="outcome"):
        explore.select_images(frame, 0.5, outcome="wrong")
    named = frame.assign(file=["person1_virus_6.jpeg", "IM-0001.jpeg", "person2_bacteria_3.jpeg", "x.png"])
    assert list(explore.select_images(named, 0.5, search=" VIRUS ")["file"]) == ["person1_virus_6.jpeg"]
    assert len(explore.select_images(named, 0.5, search="")) == 4
    assert explore.select_images(named, 0.5, "NORMAL", search="bacteria").empty


def test_stress_sliders_change_the_image_as_named():
    preprocessing = Preprocessing(image_size=32)
    rng = np.random.default_rng(0)
    image = rng.integers(40, 200, (32, 32)).astype(np.uint8)
    assert np.array_equal(explore.stressed(image, preprocessing), image)
    assert explore.stressed(image, preprocessing, gamma=0.5).mean() > image.mean() + 10  # brighter
    assert explore.stressed(image, preprocessing, contrast=0.5).std() < image.std() * 0.6
    blurred = explore.stressed(image, preprocessing, blur=2.0)

    def roughness(picture):
        return np.abs(np.diff(picture.astype(float), axis=1)).mean()

    assert roughness(blurred) < roughness(image) / 2
    with pytest.raises(ValueError, match="gamma"):
        explore.stressed(image, preprocessing, gamma=0)


def test_uploads_use_the_one_reader_and_its_one_line_errors(tmp_path):
    import cv2

    preprocessing = Preprocessing(image_size=48)
    ok, png = cv2.imencode(".png", np.full((80, 60), 128, np.uint8))
    assert explore.read_upload("x-ray.png", png.tobytes(), preprocessing).shape == (48, 48)
    with pytest.raises(ImageReadError) as caught:
        explore.read_upload("corrupt.jpg", b"\xff\xd8\xff\xe0 not a jpeg", preprocessing)
    message = str(caught.value)
    assert message.startswith("corrupt.jpg: ") and "\n" not in message and "pneumo-upload" not in message
    with pytest.raises(ImageReadError, match="^empty.png: empty file$"):
        explore.read_upload("empty.png", b"", preprocessing)


def test_the_explorer_explains_one_image(tiny_model_path, synthetic_root):
    explorer = explore.Explorer(tiny_model_path)
    assert explorer.layers == ["stem_conv", "block1_conv1", "block1_conv2", "block2_conv1", "block2_conv2"]
    image = explorer.read(next((synthetic_root / "train" / "NORMAL").glob("*.jpeg")))
    result = explorer.explain(image, method="gradcam++", layer=explorer.layers[0], opacity=0.6)
    assert 0.0 <= result["probability"] <= 1.0
    assert result["label"] == ("PNEUMONIA" if result["probability"] >= explorer.threshold else "NORMAL")
    assert result["overlay"].shape == (*image.shape, 3) and result["map"].shape == image.shape
    assert explore.png_bytes(result["overlay"], scale=2)[:8] == b"\x89PNG\r\n\x1a\n"
    import cv2

    shown = cv2.imdecode(np.frombuffer(explore.display_png(result["overlay"], width=256), np.uint8), cv2.IMREAD_COLOR)
    assert shown.shape == (256, 256, 3)  # 32 px enlarged eightfold
    verdict = explore.verdict_html("a<b>.png", result, explorer.threshold)
    assert "a&lt;b&gt;.png" in verdict and f"{result['probability']:.3f}" in verdict


@pytest.mark.slow
def test_a_run_is_found_with_its_scores_and_data(smoke_run):
    session = explore.resolve(smoke_run)
    assert session.model_path == smoke_run / "model" / "pneumonia_cnn.keras"
    assert {"validation", "test"} <= set(session.scores)
    assert all(path.startswith(str(session.data_root)) for path in session.scores["validation"]["path"])
    plot = explore.RocPlot(session.scores["validation"]["target"], session.scores["validation"]["probability"], 0.5)
    point = explore.operating_point(
        session.scores["validation"]["target"], session.scores["validation"]["probability"], 0.5
    )
    assert plot.png(point)[:4] == b"\x89PNG"


def test_roc_points_agree_with_scikit_learn_and_the_plot_marks_the_point_where_it_lies():
    import cv2
    from sklearn.metrics import roc_auc_score, roc_curve

    generator = np.random.default_rng(0)
    for _ in range(100):  # ties (rounded scores) and unbalanced sets included
        size = int(generator.integers(2, 300))
        targets = generator.integers(0, 2, size)
        scores = np.round(generator.random(size), int(generator.integers(1, 4)))
        if len(set(targets.tolist())) < 2:
            continue
        fpr, tpr, auc = explore.roc_points(targets, scores)
        expected_fpr, expected_tpr, _ = roc_curve(targets, scores, drop_intermediate=False)
        np.testing.assert_allclose(fpr, expected_fpr)
        np.testing.assert_allclose(tpr, expected_tpr)
        assert auc == pytest.approx(roc_auc_score(targets, scores), abs=1e-12)
    assert np.isnan(explore.roc_points([1, 1, 1], [0.2, 0.5, 0.9])[2])  # one class: no area

    targets, scores = np.array([0, 0, 1, 1]), np.array([0.1, 0.6, 0.4, 0.9])
    plot = explore.RocPlot(targets, scores, 0.5)
    point = explore.operating_point(targets, scores, 0.5)  # fpr 0.5, tpr 0.5
    drawn = cv2.imdecode(np.frombuffer(plot.png(point), np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
    column, row = plot.pixel(point["fpr"], point["tpr"])
    assert tuple(int(value) for value in drawn[row, column]) == explore.RocPlot.POINT_COLOUR
    (left, bottom), (right, top) = plot.pixel(0, 0), plot.pixel(1, 1)
    assert left < column < right and top < row < bottom  # inside the axes, rows grow downwards
    assert not np.array_equal(drawn, plot.image)  # the copy is marked, the drawn curve is not


@pytest.mark.slow
def test_explore_refuses_a_folder_that_is_not_a_run(tmp_path):
    result = subprocess.run(
        [*PNEUMO, "explore", "--run", str(tmp_path), "--no-browser"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2 and "not a run folder" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_the_explorer_explains_an_ensemble_with_the_mean_of_its_members_maps(tmp_path):
    """The committed model can be an ensemble: the explorer's one layer choice is its members' last convolution
    and its heatmap is the mean of the members' maps, as ``pneumo gradcam`` gives."""
    import keras
    from helpers import minimal_card

    from pneumo_utils import model
    from pneumo_utils.explain import cam

    keras.utils.set_random_seed(3)
    members = [
        model.build_model(
            48, filters=(4, 8), augmentation={"sharpness": 1.0}, normalization="standardize", name=f"net{number}"
        )
        for number in (1, 2)
    ]
    # the committed ensemble mixes kinds: a frozen MobileNetV2 member has no layer of the CNNs' names
    members.append(model.build_backbone_model(48, "mobilenetv2", weights=None, alpha=0.35, trainable=False))
    path = model.save_model(model.build_ensemble(members), tmp_path / "ensemble.keras", minimal_card(48))
    explorer = explore.Explorer(path)
    assert explorer.layers == [explore.MEMBERS_LAST_LAYER]
    image = np.random.default_rng(0).integers(0, 255, (48, 48)).astype(np.float32)
    result = explorer.explain(image)
    maps = [cam.CamExplainer(member).explain(image[None])[0][0] for member in model.ensemble_members(explorer.network)]
    np.testing.assert_allclose(result["map"], np.mean(maps, axis=0), atol=1e-5)
    assert result["layer"] == explore.MEMBERS_LAST_LAYER and 0.0 <= result["probability"] <= 1.0


def test_a_run_whose_data_folder_moved_says_so_and_names_the_flag(smoke_run, tmp_path, monkeypatch):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(smoke_run, run, ignore=shutil.ignore_patterns("synthetic_data", "executed", "checkpoints"))
    summary = json.loads((run / "run_summary.json").read_text())
    data_root = (config.PROJECT_ROOT / summary["data_dir"]).resolve()
    summary["data_dir"] = str(tmp_path / "moved_away")
    (run / "run_summary.json").write_text(json.dumps(summary))
    monkeypatch.delenv(config.DATA_DIR_ENV, raising=False)
    monkeypatch.delenv(explore.DATA_ENV, raising=False)
    monkeypatch.setattr(explore, "DEFAULT_DATA_DIR", tmp_path / "no_default_here")
    session = explore.resolve(run)
    assert session.data_problem == (
        f"images of this run not found at {tmp_path / 'moved_away'}; start with "
        f"--data-dir DIR (or set ${config.DATA_DIR_ENV})"
    )
    assert explore.resolve(run, data_dir=data_root).data_problem is None  # the flag finds them
    monkeypatch.setenv(config.DATA_DIR_ENV, str(data_root))
    moved = explore.resolve(run)  # and so does $PNEUMO_DATA_DIR, tried before the recorded folder
    assert moved.data_problem is None and moved.data_root == data_root


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


def test_a_run_explored_with_another_model_is_refused_and_a_copy_of_its_own_is_not(
    smoke_run, tiny_model_path, tmp_path
):
    # issue 29: R's stored scores shown at M's threshold would be wrong figures
    result = run_pneumo_here(
        "explore", "--run", smoke_run, "--model", tiny_model_path, "--no-browser", "--port", "38997"
    )
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert "tiny.keras: not the model that scored" in line and "Traceback" not in result.stderr, line
    copy = tmp_path / "copy.keras"
    shutil.copy(smoke_run / "model" / "pneumonia_cnn.keras", copy)
    assert explore.resolve(smoke_run, copy).model_path == copy.resolve()  # the same bytes: its own model
