"""``pneumo report RUN_DIR``: the results of one run as one self-contained HTML file (and a PDF of it).

For a reader who wants the results on a few pages without code: what data, what model, how it was chosen,
the metrics with their intervals for every split the run scored, the figures (embedded), Grad-CAM checks
and provenance. Everything is read from the files the run wrote (and, for how the recipe was chosen, from
the committed experiments table); nothing is recomputed, so the report says exactly what the run measured.
"""

from __future__ import annotations

import base64
import html
import json
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from pneumo_utils import plots
from pneumo_utils.config import REFERENCE_RESULTS, SAVED_MODEL, SettingsError, portable_path, recorded_settings
from pneumo_utils.data import split_label
from pneumo_utils.evaluate import METRIC_NAMES, with_ci
from pneumo_utils.model import operating
from pneumo_utils.scores import read_scores, split_scores_path
from pneumo_utils.subgroups import below_overall, subgroup_figures, subgroup_table

SPLIT_NOTES = {
    "validation": "patient-grouped split carved from train/ (the epoch; the threshold unless the model was "
    "calibrated on test-dev)",
    "test": "the data set's whole test/ folder (both halves), scored once with the stored threshold",
    "test-dev": "used for selection: half of the official test split (sha256(patient id) % 5 < 2) on which the "
    "recipe, the temperature and the threshold were chosen; optimistic by construction",
    "test-final": "the other half of the official test split, never used for a choice: the honest figure",
}
FIGURES = (  # (file stem, section, caption); any other figure of the run goes to "Other figures"
    ("class_balance", "data", "Images per class"),
    ("sample_grid", "data", "A few training images"),
    ("intensity_histograms", "data", "Pixel intensities by class"),
    ("image_sizes", "data", "Original image sizes"),
    ("training_curves", "training", "Training curves (the kept epoch is marked)"),
    ("confusion_matrix_validation", "metrics", "Confusion matrix, validation split"),
    ("confusion_matrix_test", "metrics", "Confusion matrix, test split (whole folder)"),
    ("confusion_matrix_test-dev", "metrics", "Confusion matrix, test-dev (used for selection)"),
    ("confusion_matrix_test-final", "metrics", "Confusion matrix, test-final (held out)"),
    ("roc_pr_curves", "metrics", "ROC and precision-recall curves (the dot: the stored threshold)"),
    ("threshold_tradeoff", "metrics", "Sensitivity and specificity against the threshold (validation split)"),
    (
        "threshold_tradeoff_test-dev",
        "metrics",
        "Sensitivity and specificity against the threshold, test-dev (used for selection)",
    ),
    ("reliability_diagram", "calibration", "Reliability diagram before and after temperature scaling"),
    ("confident_mistakes", "metrics", "The most confident mistakes (validation split)"),
    ("gradcam_grid", "gradcam", "Grad-CAM examples: where the evidence came from"),
    ("subgroups_forest", "subgroups", "Each subgroup with its 95% interval; dashed: the overall figure"),
    ("risk_coverage_test-dev", "modes", "RISK_COVERAGE"),
    (
        "threshold_rule_simulation",
        "modes",
        "A threshold fitted on a sample, on fresh draws: its true sensitivity, empirical rule and bounded rule",
    ),
)
STYLE = """
body { font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
h1 { font-size: 1.6rem; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2rem; margin-top: 2rem; }
table { border-collapse: collapse; margin: .5rem 0 1rem; font-size: .9rem; }
th, td { border: 1px solid #ddd; padding: .25rem .6rem; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } figure { margin: 1rem 0; page-break-inside: avoid; }
figure img { max-width: 100%; } figcaption { font-size: .85rem; color: #555; }
.note { background: #fff8e0; border-left: 4px solid #e0b000; padding: .5rem 1rem; }
@media print { body { margin: 0; max-width: none; } h2 { page-break-after: avoid; } }
"""


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def model_card(run_dir: Path) -> tuple[dict[str, Any] | None, Path | None]:
    """The run's model card: ``run_dir/model/*.json``, or the committed card for the committed run."""
    cards = sorted((run_dir / "model").glob("*.json"))
    if cards:
        return read_json(cards[0]), cards[0]
    if run_dir.resolve() == REFERENCE_RESULTS.resolve():
        card = SAVED_MODEL.with_suffix(".json")
        return read_json(card), card
    return None, None


def _table(rows: list[tuple[Any, ...]], header: tuple[str, ...] | None = None) -> str:
    head = "<tr>" + "".join(f"<th>{html.escape(str(cell))}</th>" for cell in header) + "</tr>" if header else ""
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(cell))}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table>{head}{body}</table>"


def _figure(path: Path, caption: str) -> str:
    encoded = base64.b64encode(path.read_bytes()).decode("ascii")
    return (
        f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{encoded}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def _per_split(metrics: Path, key: str, from_scores) -> dict[str, dict]:
    """``key`` of each scored split's metrics JSON or, for a run from before it was written, ``from_scores`` of
    the split's per-image scores (None: none computed), by split label."""
    found = {}
    for split in ("test-dev", "test-final", "test", "validation"):
        result = read_json(metrics / f"metrics_{split}.json")
        per_image = split_scores_path(metrics, split)
        if isinstance(result, dict) and result.get(key):
            found[split_label(split)] = result[key]
        elif per_image.is_file() and from_scores is not None:
            found[split_label(split)] = from_scores(read_scores(per_image))
    return found


def split_subgroups(metrics: Path, threshold: float | None) -> dict[str, dict]:
    """Subgroup figures per scored split: from the metrics JSON (``subgroups``, sizes included) or, for a run
    from before they were written, from the per-image scores (kinds and batches from the file names)."""
    compute = None if threshold is None else (lambda rows: subgroup_figures(rows, threshold))
    return _per_split(metrics, "subgroups", compute)


def split_modes(metrics: Path, card: dict | None) -> dict[str, dict]:
    """Operating-mode figures per scored split: from the metrics JSON (``modes``) or, for a run from before
    they were written, from the per-image scores and the model card's modes (the same rule decides)."""
    compute = None if not card else (lambda rows: operating.modes_figures(rows["target"], rows["probability"], card))
    return _per_split(metrics, "modes", compute)


def _modes_section(metrics: Path, card: dict | None, figures_dir: Path) -> str:
    """The card's modes, what each did on every scored split, and the risk-coverage figure."""
    import matplotlib

    matplotlib.use("Agg")

    parts = [
        "<p>A decision is made by an operating mode: <em>single</em> (one threshold), <em>rule-out</em> "
        "(NORMAL only where the model is surest, every other image REFER, to a reader) or <em>triage</em> "
        "(NORMAL / REFER / PNEUMONIA). Each threshold is the most decisive one whose one-sided lower confidence "
        "bound (exact Clopper-Pearson) of its promised rate meets the target on the sample it was fitted on, so "
        "that the promise holds on new images of the same kind with that confidence. REFER is never counted "
        "correct. Intervals below: exact 95%.</p>",
        "<ul>" + "".join(f"<li>{html.escape(text)}</li>" for text in operating.modes_summary(card)) + "</ul>",
    ]
    figures = split_modes(metrics, card)
    for label, entries in figures.items():
        parts.append(
            f"<h3>{html.escape(label)}</h3>"
            + operating.modes_table(entries).drop(columns=["promise"]).to_html(index=False, border=0)
        )
    saved = figures_dir / "risk_coverage_test-dev.png"
    if not saved.is_file() and card and (metrics / "scores_test-dev.csv").is_file():
        scores = read_scores(split_scores_path(metrics, "test-dev"))
        figure = plots.risk_coverage(
            scores["target"],
            scores["probability"],
            figures.get(split_label("test-dev"), {}),
            "test-dev (used for selection)",
        )
        encoded = base64.b64encode(plots.png_bytes(figure, dpi=110)).decode("ascii")
        plots.plt.close(figure)
        parts.append(
            f'<figure><img alt="risk-coverage curve" src="data:image/png;base64,{encoded}">'
            f"<figcaption>{html.escape(RISK_COVERAGE_CAPTION)}</figcaption></figure>"
        )
    return "".join(parts)


RISK_COVERAGE_CAPTION = (
    "Risk and coverage on test-dev (used for selection): the error among decided images as the least sure are "
    "referred, with each operating mode's point and its 95% interval; right, the modes' thresholds on the scores"
)


def _subgroup_section(metrics: Path, threshold: float | None, plot: bool = True) -> str:
    """The subgroup tables and sentences; the forest plot drawn here unless the run saved its own."""
    import matplotlib

    matplotlib.use("Agg")

    figures = split_subgroups(metrics, threshold)
    if not figures:
        return "<p>No per-image scores were kept for this run, so no subgroup figures.</p>"
    parts = [
        "<p>Overall figures hide differences between the images of a split. Sensitivity per pneumonia "
        "kind and specificity per NORMAL acquisition batch (from the file names), accuracy per tertile of "
        "the stored image size where sizes are known; 95% Wilson intervals.</p>"
    ]
    for label, entries in figures.items():
        parts.append(f"<h3>{html.escape(label)}</h3>" + subgroup_table(entries).to_html(index=False, border=0))
        sentences = below_overall(entries)
        parts.append(
            "<ul>" + "".join(f"<li>{html.escape(text)}</li>" for text in sentences) + "</ul>"
            if sentences
            else "<p>No subgroup's interval lies wholly below the overall figure.</p>"
        )
    if not plot:
        return "".join(parts)
    figure = plots.forest_plot(figures)
    encoded = base64.b64encode(plots.png_bytes(figure, dpi=110)).decode("ascii")
    plots.plt.close(figure)
    parts.append(
        f'<figure><img alt="forest plot of the subgroup figures" src="data:image/png;base64,{encoded}">'
        "<figcaption>Each subgroup with its 95% interval; dashed: the overall figure.</figcaption></figure>"
    )
    return "".join(parts)


def _metrics_section(metrics: Path) -> str:

    results = {
        path.stem.removeprefix("metrics_"): read_json(path)
        for path in sorted(metrics.glob("metrics_*.json"))
        if path.stem != "metrics_provenance"
    }
    results = {name: result for name, result in results.items() if result and "ci95" in result}
    if not results:
        return "<p>This run scored no split.</p>"
    order = ("validation", "test-dev", "test-final", "test")
    names = sorted(results, key=lambda name: order.index(name) if name in order else len(order))
    rows = [(metric, *(with_ci(results[name], metric) for name in names)) for metric in METRIC_NAMES]
    rows.append(("images (n)", *(results[name]["n"] for name in names)))
    rows.append(("threshold", *(f"{results[name]['threshold']:.4f}" for name in names)))
    notes = "".join(
        f"<li><b>{html.escape(name)}</b>: {html.escape(SPLIT_NOTES.get(name, 'as named by the run'))}</li>"
        for name in names
    )
    return f"<p>Each figure with its seeded bootstrap 95% interval (over images).</p><ul>{notes}</ul>" + _table(
        rows, ("metric", *(split_label(name) for name in names))
    )


def _data_section(eda: dict | None) -> str:
    if not eda:
        return "<p>The run has no data summary (notebook 01 did not run).</p>"
    rows = [
        (group, values["images"], values["patients"], f"{values['share']:.1%}")
        for group, values in eda.get("counts", {}).items()
    ]
    text = (
        f"<p>Data folder <code>{html.escape(Path(str(eda.get('data_dir'))).name)}</code> (where it lay is not "
        "recorded), fingerprint "
        f"<code>{html.escape(str(eda.get('fingerprint')))}</code>.</p>"
        + _table(rows, ("folder", "images", "patients", "share"))
    )
    split = eda.get("validation_split", {})
    if split:
        overlap = split.get("overlap", {})
        text += (
            f"<p>Validation split: {split.get('val_images')} images held out from {split.get('train_images')}"
            f" + {split.get('val_images')} (seed {split.get('seed')}); shared patients: "
            f"{overlap.get('patients')}, identical images shared: {overlap.get('identical_images')}. "
            f"Groups of byte-identical images in the data: {eda.get('duplicate_groups')}.</p>"
        )
    return text


def _epochs_text(training: dict) -> str:
    """Epochs run and kept; an ensemble's per member (its card holds ``members`` and ``kept_epochs``)."""
    kept = training.get("kept_epochs")
    if training.get("members") and kept:
        return (
            f"an ensemble of {training['members']} members trained one after the other, "
            f"{training.get('epochs_run')} epochs run in all, epochs {', '.join(map(str, kept))} kept"
        )
    return f"{training.get('epochs_run')} epochs run, epoch {training.get('kept_epoch')} kept"


def _model_section(card: dict | None, card_path: Path | None) -> str:
    if not card:
        return "<p>No model card was found for this run.</p>"
    training = card.get("training", {})
    parameters = recorded_settings(card.get("parameters") or {})  # file names, never where a file lay
    rows = [
        ("task", card.get("task")),
        ("input", json.dumps(card.get("input"))),
        ("threshold", f"{card['threshold']['value']:.4f}: {card['threshold'].get('rule', '')}"),
        (
            "training",
            f"{_epochs_text(training)}, {training.get('train_images')} training images, "
            f"{training.get('seconds', 0) / 60:.1f} min",
        ),
        ("trained", f"{card.get('date')} at commit {card.get('git_commit')}"),
        ("card", portable_path(card_path) if card_path else ""),
    ]
    calibration = card.get("validation_metrics", {}).get("calibration")
    if calibration:
        rows.append(
            (
                "calibration",
                f"temperature {calibration['temperature']:.3f}; validation ECE "
                f"{calibration['ece_before']:.3f} before, {calibration['ece_after']:.3f} after",
            )
        )
    site = card.get("site_calibration")
    if site:
        sample = site["sample"]
        rows.append(
            (
                "site calibration",
                f"temperature {site['temperature']:.3f} and threshold "
                f"{card['threshold']['value']:.4f} fitted on {split_label(sample['split'])}: {sample['n']} images "
                f"of {Path(str(sample['data_dir'])).name} (fingerprint {sample['fingerprint']}); the threshold "
                f"training chose on validation was "
                f"{site.get('training_threshold', site['previous_threshold'])['value']:.4f}",
            )
        )
    pretrained = card.get("pretrained")
    if pretrained:
        rows.append(
            (
                "pretrained start",
                "; ".join(
                    f"member {entry['member']}: {entry['backbone']} alpha "
                    f"{entry['alpha']}, {Path(str(entry['weights'])).name}"
                    + (f" (SHA-256 {entry['sha256']})" if entry.get("sha256") else "")
                    for entry in pretrained
                ),
            )
        )
    limits = "".join(f"<li>{html.escape(item)}</li>" for item in card.get("limitations", []))
    recipe = _table([(key, json.dumps(value)) for key, value in sorted(parameters.items())], ("setting", "value"))
    return (
        _table(rows)
        + f"<p class='note'><b>Intended use.</b> {html.escape(card.get('intended_use', ''))}</p>"
        + (f"<p><b>Limitations</b></p><ul>{limits}</ul>" if limits else "")
        + f"<details><summary>Recipe: every training setting</summary>{recipe}</details>"
    )


def _choice_section() -> str:
    import pandas as pd

    text = ""
    selection = REFERENCE_RESULTS / "experiments_test_dev.csv"
    if selection.exists():
        table = pd.read_csv(selection).fillna("")
        text += (
            "<p>Recipes are chosen on <b>test-dev</b> (used for selection): half of the official test split, "
            "from the test period, which is earlier than all of <code>train/</code>. Each recipe is trained "
            "on <code>train/</code> only with at least two seeds; one beats another only when the paired "
            "bootstrap interval of the difference in test-dev ROC-AUC excludes 0.</p>"
            + _table([tuple(row) for row in table.itertuples(index=False)], tuple(table.columns))
        )
    views = REFERENCE_RESULTS / "experiments_views.csv"
    if not views.exists():
        return text or "<p>No experiments are recorded (<code>results/experiments.md</code>).</p>"
    table = pd.read_csv(views)
    columns = ["recipe"] + [column for column in table.columns if column.startswith("worst")]
    rows = [tuple(row) for row in table[columns].itertuples(index=False)]
    return text + (
        "<p>Secondary: <b>shift views</b> carved from <code>train/</code> (the other NORMAL "
        "acquisition batch, both ways, and the earliest and latest acquisition ids), by their "
        "<i>worst</i> held-out view; the random validation split is saturated and cannot tell recipes "
        "apart. The full tables with intervals are in <code>results/experiments.md</code>.</p>"
        + _table(rows, tuple(columns))
    )


def _stress_section(stress: dict | None) -> str:
    if not stress:
        return "<p>No stress validation in this run.</p>"
    rows = [
        (name, *(f"{values[metric]:.3f}" for metric in ("roc_auc", "sensitivity", "specificity")))
        for name, values in stress["conditions"].items()
    ]
    return (
        "<p>The validation images scored again under acquisition-like changes, at the stored threshold "
        f"(worst specificity {stress['worst_specificity']:.3f}).</p>"
        + _table(rows, ("condition", "ROC-AUC", "sensitivity", "specificity"))
    )


def _gradcam_section(checks: dict | None) -> str:
    if not checks:
        return ""

    def number(value, digits=2):
        return "n/a" if value is None else f"{value:.{digits}f}"  # None: every map of the class was constant

    rows = []
    for label, values in checks.get("by_class", {}).items():
        shares = values.get("mass_share", {})
        randomization = values.get("randomization", {})
        deletion = values.get("deletion_insertion", {})
        rows.append(
            (
                label,
                values.get("images"),
                number(shares.get("central")),
                number(shares.get("border")),
                number(randomization.get("spearman_mean")),
                f"{number(deletion.get('deletion_auc'), 3)} vs {number(deletion.get('deletion_auc_random'), 3)}",
            )
        )
    return (
        f"<p>Method {html.escape(str(checks.get('method')))}, layer {html.escape(str(checks.get('target_layer')))}"
        f". Mass share: where the map's weight lies (central area vs the outer "
        f"{checks.get('border_fraction', 0.15):.0%} band); randomization: rank correlation with the maps of a "
        "randomly re-initialized model (low is good); deletion: probability area as the most salient pixels "
        "are removed, against random order (lower is better).</p>"
        + _table(
            rows, ("class", "images", "central mass", "border mass", "randomization rho", "deletion AUC vs random")
        )
    )


def _provenance_section(summary: dict) -> str:
    rows = [
        ("status", summary.get("status")),
        ("profile", summary.get("profile")),
        ("date", summary.get("date")),
        ("git commit", summary.get("git_commit")),
        ("data folder", Path(str(summary.get("data_dir"))).name if summary.get("data_dir") else None),
        (
            "notebooks",
            ", ".join(
                f"{item['notebook']} {item['status']} ({item.get('seconds', 0):.0f} s)"
                for item in summary.get("notebooks", [])
            ),
        ),
        ("versions", ", ".join(f"{key} {value}" for key, value in summary.get("versions", {}).items())),
        ("machine", json.dumps(summary.get("machine"))),
    ]
    return _table(rows)


def build_report(run_dir: str | Path) -> str:
    """The report of one run as one HTML page (figures embedded as data URIs, no code, no scripts)."""
    run_dir = Path(run_dir)
    summary = read_json(run_dir / "run_summary.json")
    if not isinstance(summary, dict):
        raise SettingsError(f"{run_dir}: not a run folder (no readable run_summary.json)")
    metrics, figures = run_dir / "metrics", run_dir / "figures"
    if not any(path.stem != "metrics_provenance" for path in metrics.glob("metrics_*.json")):
        raise SettingsError(
            f"{run_dir}: the run scored no split (no metrics/metrics_*.json); a report needs "
            f"notebook 03's figures (status of the run: {summary.get('status', 'unknown')})"
        )
    card, card_path = model_card(run_dir)
    available = {path.stem: path for path in sorted(figures.glob("*.png"))}
    placed: set[str] = set()

    def figures_of(section: str) -> str:
        chosen = [(stem, caption) for stem, where, caption in FIGURES if where == section and stem in available]
        placed.update(stem for stem, _ in chosen)
        return "".join(
            _figure(available[stem], RISK_COVERAGE_CAPTION if caption == "RISK_COVERAGE" else caption)
            for stem, caption in chosen
        )

    committed = run_dir.resolve() == REFERENCE_RESULTS.resolve()
    name = "the committed run" if committed else f"run {run_dir.resolve().name}"
    title = f"Pneumonia on chest X-rays: report of {name}"
    sections = [
        ("What data", _data_section(read_json(metrics / "eda_summary.json")) + figures_of("data")),
        ("What model", _model_section(card, card_path) + figures_of("training")),
        ("How the recipe was chosen", _choice_section()),
        ("Metrics", _metrics_section(metrics) + figures_of("metrics")),
        (
            "For whom does it work?",
            _subgroup_section(
                metrics,
                (card or {}).get("threshold", {}).get("value"),
                plot="subgroups_forest" not in available,
            )
            + figures_of("subgroups"),
        ),
        (
            "Operating modes: decisions whose promises hold",
            _modes_section(metrics, card, figures) + figures_of("modes"),
        ),
        ("Calibration", figures_of("calibration") or "<p>No calibration figure in this run.</p>"),
        ("Stress validation", _stress_section(read_json(metrics / "stress_validation.json"))),
        (
            "Grad-CAM: where the network looked",
            _gradcam_section(read_json(metrics / "gradcam_checks.json")) + figures_of("gradcam"),
        ),
    ]
    others = [stem for stem in available if stem not in placed]
    if others:
        sections.append(("Other figures", "".join(_figure(available[stem], stem.replace("_", " ")) for stem in others)))
    sections.append(("Provenance", _provenance_section(summary)))
    body = "".join(f"<section><h2>{html.escape(heading)}</h2>{content}</section>" for heading, content in sections)
    warning = (
        ""
        if summary.get("status") == "ok"
        else f"<p class='note'>This run did not finish (status {html.escape(str(summary.get('status')))}).</p>"
    )
    return (
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>{warning}"
        "<p class='note'>A teaching and research model, not a medical device. Every figure below says which "
        "split it comes from. Figures on test-dev were used for selection (recipe, temperature, thresholds) and "
        "are optimistic; test-final, where present, was used for no choice.</p>"
        f"{body}</body></html>"
    )


# Headless Chromium on a machine with no open network: no background connections, no sandbox (root in CI).
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


class PdfError(RuntimeError):
    """The HTML report was written, but no PDF could be printed from it."""


def find_chromium() -> str | None:
    """Chromium or Chrome on this machine (``$PNEUMO_CHROMIUM`` first), or None."""
    import os

    for candidate in (
        os.environ.get("PNEUMO_CHROMIUM"),
        "chromium",
        "chromium-browser",
        "google-chrome",
        "google-chrome-stable",
    ):
        if candidate and shutil.which(candidate):
            return shutil.which(candidate)
    return None


def print_pdf(html_path: Path, timeout: float = 180) -> bytes:
    """The HTML page printed to PDF by headless Chromium; a clear error where there is none."""
    chromium = find_chromium()
    if chromium is None:
        raise PdfError(
            "--pdf needs Chromium, which is not installed here (Debian: apt-get install chromium); "
            "the HTML report was written"
        )
    with tempfile.TemporaryDirectory(prefix="pneumo-pdf-") as folder:
        target = Path(folder) / "report.pdf"
        command = [
            chromium,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={folder}/profile",
            "--no-pdf-header-footer",
            f"--print-to-pdf={target}",
            html_path.resolve().as_uri(),
        ]
        # its own session: on a timeout (or Ctrl-C) Chromium and every helper process it started are killed
        process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True
        )
        try:
            _, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise PdfError(f"Chromium did not print the report to PDF within {timeout:g} s; stopped it") from None
        finally:  # always: helpers may outlive the main process
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait()
        if process.returncode != 0 or not target.is_file() or target.stat().st_size == 0:
            reason = (stderr.strip().splitlines() or ["no output"])[-1]
            raise PdfError(f"Chromium could not print the report to PDF ({reason})")
        return target.read_bytes()


def screenshot_png(html_path: Path, width: int = 1200, timeout: float = 180) -> bytes:
    """The HTML page as one full-page PNG, taken by headless Chromium through Playwright. The report is
    self-contained, so a request that leaves the file (a font, a script from the web) is an error, not a
    picture of a page that would break offline."""
    chromium = find_chromium()
    if chromium is None:
        raise PdfError("--png needs Chromium, which is not installed here (Debian: apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise PdfError("--png needs Playwright: pip install -e '.[test]'; the HTML report was written") from None
    page_uri = html_path.resolve().as_uri()
    with tempfile.TemporaryDirectory(prefix="pneumo-png-") as folder, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=list(CHROMIUM_FLAGS))
        try:
            page = browser.new_page(viewport={"width": width, "height": 900})
            requests: list[str] = []
            page.on("request", lambda request: requests.append(request.url))
            page.goto(page_uri, timeout=timeout * 1000, wait_until="load")
            target = Path(folder) / "report.png"
            page.screenshot(path=str(target), full_page=True)
        finally:
            browser.close()
        outside = sorted({url for url in requests if url != page_uri and not url.startswith(("data:", "blob:"))})
        if outside:
            raise PdfError(f"the report asked for {len(outside)} file(s) besides itself (first: {outside[0]})")
        return _palette_png(target)


def _palette_png(path: Path) -> bytes:
    """A screenshot as a 256-colour PNG: a report is text and flat figures, and its 14,000-pixel page is then
    about 1 MB instead of 3."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    with Image.open(path) as picture:
        picture.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(buffer, "PNG", optimize=True)
    return buffer.getvalue()
