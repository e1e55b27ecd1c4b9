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
    assert app.split_choice.value == "validation"  # first, then the other scored sets
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


def test_a_subgroup_and_another_split_change_the_lab(app):
    before = app.lab_readout.value
    other = next(name for name in app.subgroup_choice.options if name != "all")
    app.subgroup_choice.value = other
    assert app.lab_readout.value != before
    app.subgroup_choice.value = "all"
    app.split_choice.value = next(name for name in app.split_names if name != "validation")
    assert app.lab_readout.value != before and app.image_choice.options
    app.split_choice.value = "validation"


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
