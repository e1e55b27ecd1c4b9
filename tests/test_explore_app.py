"""The explorer's widgets (``pneumo_utils.explore_app``), driven as a user drives them: over the session's smoke
run, each control is set and what it should change is read back. The browser test runs the same app in
Chromium through Voilà; this one needs no browser and shows which control broke."""

import re
from datetime import UTC, datetime

import pytest

from pneumo_utils import explore
from pneumo_utils.explore_app import ExplorerApp


@pytest.fixture(scope="module")
def app(smoke_run):
    return ExplorerApp(explore.resolve(smoke_run))


def _figure(html: str, name: str) -> str:
    found = re.search(rf"{name}[^0-9]*([0-9.]+)", html)
    assert found, (name, html[:300])
    return found.group(1)


def test_the_panels_open_on_the_card_threshold_with_a_chosen_image(app):
    assert app.threshold_slider.value == pytest.approx(app.explorer.threshold)
    assert app.split_choice.value == "test-dev"  # first where the run scored it, then validation and the others
    assert app.split_names[:2] == ["test-dev", "validation"]
    assert app.roc_image.value[:4] == b"\x89PNG" and "sensitivity" in app.lab_readout.value
    assert app.image is not None and app.heatmap_image.value[:4] == b"\x89PNG"
    assert app.image_name in app.verdict.value
    assert "changed image" in app.stressed_verdict.value
    assert "card threshold" in app.summary() and "model:" in app.summary()


def test_the_threshold_moves_the_confusion_matrix_and_the_image_list(app):
    app.threshold_slider.value = 0.0  # everything is called pneumonia: sensitivity 1, specificity 0
    at_zero = app.lab_readout.value
    assert _figure(at_zero, "sensitivity") in ("1.000", "1.00", "1")
    app.outcome_choice.value = "missed"
    assert not app.image_choice.options and "no image matches" in app.message.value
    app.outcome_choice.value = "all"
    app.threshold_slider.value = 1.0
    assert app.lab_readout.value != at_zero
    app.threshold_slider.value = app.explorer.threshold


def test_the_image_search_narrows_the_list_by_file_name(app):
    every = len(app.image_choice.options)
    wanted = app.image_choice.options[-1][0].split()[0]  # one file name
    app.image_search.value = wanted.upper()
    assert [label.split()[0] for label, _ in app.image_choice.options] == [wanted] and every > 1
    app.image_search.value = "no image is called this"
    assert not app.image_choice.options and "no image matches" in app.message.value
    app.image_search.value = ""
    assert len(app.image_choice.options) == every


def test_a_subgroup_and_another_split_change_the_lab(app):
    before = app.lab_readout.value
    other = next(name for name in app.subgroup_choice.options if name != "all")
    app.subgroup_choice.value = other
    assert app.lab_readout.value != before
    app.subgroup_choice.value = "all"
    app.split_choice.value = next(name for name in app.split_names if name != "test-dev")
    assert app.lab_readout.value != before and app.image_choice.options
    app.split_choice.value = "test-dev"


def test_method_layer_and_stress_controls_redraw(app):
    heatmap = app.heatmap_image.value
    app.method_choice.value = "gradcam++"
    assert app.heatmap_image.value != heatmap
    stressed = app.stressed_image.value
    app.gamma_slider.value = 0.4
    assert app.stressed_image.value != stressed and "changed image" in app.stressed_verdict.value
    app.gamma_slider.value = 1.0
    app.method_choice.value = "gradcam"


def test_an_unreadable_upload_is_one_line_and_keeps_the_chosen_image(app):
    chosen = app.image
    upload = {"name": "notes.png", "type": "image/png", "size": 5, "content": b"hello"}
    app.upload.value = ({**upload, "last_modified": datetime.now(UTC)},)
    assert "pneumo-error" in app.message.value and "notes.png" in app.message.value
    assert app.image is chosen


def test_the_lab_shows_the_refer_band_of_the_chosen_mode(app):
    assert list(app.mode_choice.options) == ["single"]  # a fresh run's card holds only its one threshold
    rows = app.scores()
    shown = app.band_readout.value
    referred = int(_figure(shown, 'pneumo-referred">'))
    assert referred == 0 and f"of {len(rows)}" in shown  # one threshold refers nothing
    app.subgroup_choice.value = next(name for name in app.subgroup_choice.options if name != "all")
    assert app.band_readout.value != shown
    app.subgroup_choice.value = "all"


def test_the_band_counts_each_decision_per_true_class():
    targets = [0, 0, 0, 1, 1, 1]
    probabilities = [0.05, 0.3, 0.9, 0.1, 0.5, 0.95]
    html = explore.band_html("triage", {"lo": 0.2, "hi": 0.8, "promises": []}, targets, probabilities)
    cells = dict(re.findall(r'class="pneumo-band-([a-z]+-[a-z]+)"[^>]*>(\d+)<', html))
    assert cells == {
        "normal-normal": "1",
        "normal-refer": "1",
        "normal-pneumonia": "1",
        "pneumonia-normal": "1",
        "pneumonia-refer": "1",
        "pneumonia-pneumonia": "1",
    }
    assert 'pneumo-referred">2<' in html and "REFER from 0.200 to 0.800" in html
    rule_out = explore.band_html("rule-out", {"lo": 0.2, "hi": None}, targets, probabilities)
    assert 'pneumo-referred">4<' in rule_out and "REFER otherwise" in rule_out
