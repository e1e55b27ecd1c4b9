"""The results pages are written from the committed files: results/README.md and the README's results table
match what ``pneumo report results --markdown`` writes from the card and the metrics, and no number in the
README's results section is one the committed files do not hold."""

import json
import re

from helpers import run_pneumo_here

from pneumo_utils.config import PROJECT_ROOT
from pneumo_utils.runs import results_page

RESULTS = PROJECT_ROOT / "results"
REGENERATE = "regenerate with: pneumo promote results"


def test_committed_results_page_is_what_the_generator_writes():
    assert (RESULTS / "README.md").read_text() == results_page.results_markdown(RESULTS), REGENERATE


def test_readme_results_table_and_numbers_agree_with_the_card_and_metrics():
    readme = (PROJECT_ROOT / "README.md").read_text()
    assert results_page.readme_brief(readme) == results_page.readme_block(RESULTS).strip(), REGENERATE
    card = json.loads((PROJECT_ROOT / "saved_models" / "pneumonia_cnn.json").read_text())
    test_dev = json.loads((RESULTS / "metrics" / "metrics_test-dev.json").read_text())
    assert f"{test_dev['roc_auc']:.3f}" in results_page.readme_brief(readme)
    section = readme.split("## Results in brief", 1)[1].split("\n## ", 1)[0]
    generated = results_page.results_markdown(RESULTS)
    for number in re.findall(r"\b0\.\d{3,4}\b", section):  # every figure in the prose too
        assert number in generated, f"README says {number}, which the committed files do not hold; {REGENERATE}"
    assert f"{card['threshold']['value']:.4f}" in section


def test_markdown_of_a_smoke_run(smoke_run, tmp_path):
    output = tmp_path / "results.md"
    result = run_pneumo_here("report", str(smoke_run), "--markdown", "--output", str(output))
    assert result.returncode == 0, result.stderr
    page = output.read_text()
    validation = json.loads((smoke_run / "metrics" / "metrics_validation.json").read_text())
    assert "| ROC-AUC | " in page and f"{validation['roc_auc']:.3f}" in page
    assert "test-dev (used for selection)" in page and "validation (split of train/)" in page
    again = run_pneumo_here("report", str(smoke_run), "--markdown", "--output", str(output))
    assert again.returncode == 2 and "--overwrite" in again.stderr  # nothing replaced without asking


def test_no_issue_reviewer_or_session_wording_in_the_user_pages():
    pattern = re.compile(
        r"\bissue \d+|\breviewer|\bsession\b|workspace|SIGSTOP|nice 19|Linux-\d|development (?:copy|machine)"
        r"|independently of this project|\.\./shared",
        re.IGNORECASE,
    )
    pages = [PROJECT_ROOT / "README.md", RESULTS / "README.md", PROJECT_ROOT / "data" / "README.md"]
    pages += sorted((PROJECT_ROOT / "notebooks").glob("*.ipynb")) + sorted(
        (PROJECT_ROOT / "notebooks").glob("profiles/*")
    )
    for path in pages:
        found = pattern.findall(path.read_text())
        assert not found, (path.name, found)
