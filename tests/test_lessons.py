"""What a reader is told is true of the run: the sentences that describe a choice come from the run's settings and
card, and the notebooks' own prose holds none of the sentences that contradict the committed model."""

import json
import re

import nbformat
import pytest

from pneumo_utils import config, notebook
from pneumo_utils.config import PROJECT_ROOT

COMMITTED_CARD = PROJECT_ROOT / "saved_models" / "pneumonia_cnn.json"
NOTEBOOKS = sorted((PROJECT_ROOT / "notebooks").glob("0*.ipynb"))


def _prose() -> dict[str, str]:
    return {
        path.name: "\n".join(
            cell.source for cell in nbformat.read(path, as_version=4).cells if cell.cell_type == "markdown"
        )
        for path in NOTEBOOKS
    }


def test_the_smoke_run_is_told_it_chose_on_validation_and_nothing_on_the_test_split():
    text = notebook.how_chosen(config.load_config("smoke"))
    assert "best ROC-AUC on validation" in text and "threshold**: fitted on validation" in text
    assert "used for no choice in this run" in text and "test-dev" not in text
    assert "trained from scratch" in text and "fine-tuned" not in text


def test_the_committed_model_is_described_as_its_card_and_profile_say():
    card = json.loads(COMMITTED_CARD.read_text())
    settings = config.load_config("full")
    text = notebook.how_chosen(settings, card)
    threshold_split = card["site_calibration"]["sample"]["split"]
    threshold_line = next(line for line in text.splitlines() if "threshold" in line)
    assert threshold_split in threshold_line and "validation" not in threshold_line
    if card.get("operating_modes"):
        assert all(name in threshold_line for name in card["operating_modes"])
    epoch_line = next(line for line in text.splitlines() if "epoch" in line)
    assert ("test-dev" in epoch_line) == (settings.selection_split == "test-dev")
    frozen = all(not entry.get("backbone_trainable", True) for entry in settings.members if entry.get("backbone"))
    assert ("frozen" in text) == frozen and ("fine-tuned" in text) == (not frozen)
    assert notebook.is_committed_model(card) and not notebook.is_committed_model({**card, "date": "another"})


# sentences a lesson must not say when the committed card and profile say otherwise: (pattern, why it is false)
def _contradictions(card: dict, settings) -> list[tuple[str, str]]:
    found = []
    split = (card.get("site_calibration") or {}).get("sample", {}).get("split", "val")
    if split != "val":
        found += [
            (
                r"decision (?:still )?uses the threshold chosen on validation",
                f"the card's threshold was fitted on {split}",
            ),
            (r"kept validation sensitivity", f"the card's threshold was fitted on {split}"),
        ]
    if "test-dev" in (settings.selection_split, split):
        found += [
            (r"never used to choose anything", "test-dev chose the epoch and the threshold"),
            (r"none was chosen on the test split", "test-dev chose the epoch and the threshold"),
        ]
    if settings.selection_split != "val":
        found.append((r"early stopping on validation", f"the epoch was chosen on {settings.selection_split}"))
    if all(not entry.get("backbone_trainable", True) for entry in settings.members if entry.get("backbone")):
        found.append((r"is fine-tuned whole\.", "the profile freezes the backbone"))
    return found


@pytest.mark.parametrize("name", [path.name for path in NOTEBOOKS])
def test_no_notebook_says_what_the_committed_model_contradicts(name):
    card = json.loads(COMMITTED_CARD.read_text())
    prose = _prose()[name]
    checks = _contradictions(card, config.load_config("full"))
    assert checks, "the committed card should give this test something to check"
    for pattern, why in checks:
        match = re.search(pattern, prose, re.IGNORECASE)
        assert match is None, f"{name} says {match.group(0)!r}, but {why}"


def test_the_committed_report_has_no_stale_banner_and_no_machine_paths():
    report = (PROJECT_ROOT / "results" / "report.html").read_text()
    assert "none was chosen on the test split" not in report
    assert "../shared" not in report and "/work/" not in report


ABSOLUTE = re.compile(r"(?<![\w.])/(?:work|tmp|root|home|Users)/[\w.-]+")


def test_committed_results_carry_no_absolute_path_of_a_machine():
    files = [
        path for path in (PROJECT_ROOT / "results").rglob("*") if path.suffix in (".ipynb", ".html", ".json", ".md")
    ]
    files += [COMMITTED_CARD]
    found = {path.name: ABSOLUTE.findall(path.read_text(errors="replace"))[:3] for path in files}
    assert not {name: paths for name, paths in found.items() if paths}


def test_an_executed_notebook_gets_its_parameters_and_outputs_relative_to_the_project(tmp_path):
    from pneumo_utils.runs import pipeline

    inside = str(PROJECT_ROOT / "runs" / "x")
    beside = str(PROJECT_ROOT.parent / "shared" / "data")
    cell = nbformat.v4.new_code_cell(f'data_dir = "{beside}"\noutput_dir = "{inside}"')
    cell.metadata["tags"] = ["injected-parameters"]
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=f"results: {inside}\n")]
    notebook = nbformat.v4.new_notebook(cells=[cell])
    notebook.metadata["papermill"] = {"parameters": {"data_dir": beside, "output_dir": inside}}
    path = tmp_path / "01.ipynb"
    nbformat.write(notebook, path)
    html = pipeline.export_html(path)
    for text in (path.read_text(), html.read_text()):
        assert inside not in text and beside not in text
    written = nbformat.read(path, as_version=4)
    assert written.metadata["papermill"]["parameters"] == {"data_dir": "../shared/data", "output_dir": "runs/x"}
    assert 'output_dir = "runs/x"' in written.cells[0].source
