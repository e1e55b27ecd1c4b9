"""The results of a run as Markdown, written from its files: the model card, the metrics JSON, the stress
and Grad-CAM checks, the benchmarks and the recipe table. ``pneumo report RUN_DIR --markdown`` writes it;
for the committed run it is ``results/README.md``, and :func:`brief_table` is the table in the project's
README (a test compares the two). No figure is typed by hand, so none can drift from the files.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pneumo_utils.config import PROJECT_ROOT, SettingsError, portable_path
from pneumo_utils.data import split_label
from pneumo_utils.model import operating
from pneumo_utils.runs.report import model_card, read_json, split_modes, split_subgroups
from pneumo_utils.subgroups import below_overall, subgroup_table

README_BRIEF_START = "<!-- results brief: written by `pneumo promote`; do not edit -->"
README_BRIEF_END = "<!-- end of results brief -->"
_SPLIT_FILES = (
    ("test-dev", "metrics_test-dev.json"),
    ("test-final", "metrics_test-final.json"),
    ("test", "metrics_test.json"),
    ("validation", "metrics_validation.json"),
)
_ROWS = (
    ("accuracy", "accuracy"),
    ("sensitivity", "sensitivity"),
    ("specificity", "specificity"),
    ("precision", "precision"),
    ("F1", "f1"),
    ("ROC-AUC", "roc_auc"),
)


def _read(path: Path) -> dict[str, Any] | None:
    return read_json(path) if path.is_file() else None


def scored_metrics(run_dir: str | os.PathLike) -> list[tuple[str, dict[str, Any]]]:
    """(split, metrics) for every split the run scored: test halves first, validation last."""
    folder = Path(run_dir) / "metrics"
    found = [(split, _read(folder / name)) for split, name in _SPLIT_FILES]
    return [(split, metrics) for split, metrics in found if metrics]


def _label(split: str) -> str:
    return "validation (split of train/)" if split == "validation" else split_label(split)


def _cell(metrics: dict[str, Any], key: str) -> str:
    low, high = metrics.get("ci95", {}).get(key, (None, None))
    interval = f" [{low:.3f}, {high:.3f}]" if low is not None else ""
    return f"{metrics[key]:.3f}{interval}"


def brief_table(run_dir: str | os.PathLike, rows: tuple[tuple[str, str], ...] = _ROWS[:3] + _ROWS[5:]) -> str:
    """The metric table, one column per scored split, 95% bootstrap intervals in brackets."""
    scored = scored_metrics(run_dir)
    lines = [
        "| metric | " + " | ".join(f"{_label(split)}, {metrics['n']} images" for split, metrics in scored) + " |",
        "|---" * (len(scored) + 1) + "|",
    ]
    lines += [f"| {name} | " + " | ".join(_cell(metrics, key) for _, metrics in scored) + " |" for name, key in rows]
    return "\n".join(lines)


def _confusion_row(scored) -> str:
    cells = []
    for _, metrics in scored:
        (tn, fp), (fn, tp) = metrics["confusion_matrix"]
        cells.append(f"{tn} {fp} / {fn} {tp}")
    return "| TN FP / FN TP | " + " | ".join(cells) + " |"


def _members(card: dict[str, Any]) -> list[str]:
    parameters = card.get("parameters", {})
    epochs = card.get("training", {}).get("kept_epochs") or [card.get("training", {}).get("kept_epoch")]
    entries = parameters.get("members") or [{}]
    lines = []
    for number, changes in enumerate(entries, start=1):
        settings = {**parameters, **changes}
        kept = epochs[number - 1] if number - 1 < len(epochs) else None
        if settings.get("backbone"):
            frozen = "frozen" if settings.get("backbone_trainable") is False else "fine-tuned"
            what = (
                f"{settings['backbone']} (alpha {settings.get('alpha')}, {frozen}, weights "
                f"`{Path(settings['weights']).name if settings.get('weights') else 'random'}`)"
            )
        else:
            what = f"CNN from scratch (filters {settings.get('filters')}, {settings.get('normalization')} input)"
        lines.append(
            f"| {number} | {what} | {settings.get('image_size')} px | {settings.get('seed')} | "
            f"{settings.get('dropout')} | {kept if kept is not None else 'n/a'} of {settings.get('epochs')} |"
        )
    return ["| member | network | input | seed | dropout | epoch kept |", "|---|---|---|---|---|---|", *lines]


def _stress(stress: dict[str, Any]) -> list[str]:
    rows = ["| condition | ROC-AUC | sensitivity | specificity |", "|---|---|---|---|"]
    for name, values in stress["conditions"].items():
        rows.append(f"| {name} | {values['roc_auc']:.3f} | {values['sensitivity']:.3f} | {values['specificity']:.3f} |")
    return rows


def _gradcam(checks: dict[str, Any]) -> list[str]:
    rows = [
        "| class | images | map mass in the border band | Spearman vs weight-randomized model |",
        "|---|---|---|---|",
    ]
    for name, values in checks["by_class"].items():
        rows.append(
            f"| {name} | {values.get('images', 'n/a')} | {_number(values, 'mass_share', 'border')} | "
            f"{_number(values, 'randomization', 'spearman_mean')} |"
        )
    return rows


def _number(values: dict[str, Any], *keys: str) -> str:
    """``values[k1][k2]`` to two decimals, or ``n/a`` where the check could not be made (too few images)."""
    for key in keys:
        values = values.get(key) if isinstance(values, dict) else None
    return f"{values:.2f}" if isinstance(values, int | float) else "n/a"


def _recipes(path: Path) -> list[str]:
    import pandas as pd

    return [pd.read_csv(path).fillna("").to_markdown(index=False)]  # as pneumo experiments writes its tables


def results_markdown(run_dir: str | os.PathLike, card_path: str | os.PathLike | None = None) -> str:
    """The whole results page of a run."""
    run_dir = Path(run_dir)
    if card_path:
        card_path, card = Path(card_path), _read(Path(card_path))
    else:
        card, card_path = model_card(run_dir)
    if card is None:
        raise SettingsError(f"{portable_path(card_path or run_dir / 'model')}: no model card")
    scored = scored_metrics(run_dir)
    if not scored:
        raise SettingsError(f"{portable_path(run_dir / 'metrics')}: no metrics_*.json (run notebook 03 first)")
    summary = _read(run_dir / "run_summary.json") or {}
    parameters = summary.get("parameters", {})
    threshold = card["threshold"]
    calibration = card.get("validation_metrics", {}).get("calibration", {})
    training = card.get("training", {})
    out = [
        "# Results in full",
        "",
        "Every figure names its split. **validation** is a patient-grouped split of `train/` (the training "
        "period). **test-dev** is half of the official test split, from an earlier period; where a profile "
        "chooses epochs, temperature or threshold on it, its figures are *used for selection* and optimistic by "
        "construction. **test-final**, the other half, is scored only where its images are present. Intervals "
        "are 95% bootstrap intervals over images. This page is written from the run's files by "
        + (
            "`pneumo promote`"
            if run_dir.resolve() == (PROJECT_ROOT / "results").resolve()
            else f"`pneumo report {portable_path(run_dir)} --markdown`"
        )
        + ".",
        "",
        "## The model",
        "",
        f"`{portable_path(card_path.with_suffix('.keras'))}` and its card `{portable_path(card_path)}`"
        + (
            f": an ensemble whose logit is the mean of {len(card['parameters']['members'])} members' logits."
            if card.get("parameters", {}).get("members")
            else "."
        ),
        "",
        *_members(card),
        "",
        f"Epochs kept by early stopping on {training.get('epoch_chosen_on', 'validation')}; "
        f"{training.get('train_images', 'n/a')} training and {training.get('val_images', 'n/a')} validation "
        f"images; training took {training.get('seconds', 0) / 60:.1f} min.",
        f"Threshold {threshold['value']:.4f}: {threshold['rule']}."
        + (
            f" Temperature {calibration['temperature']:.3f} ({calibration.get('method', '')})."
            if calibration.get("temperature")
            else ""
        ),
        "",
    ]
    if parameters:
        # the folder's name, not where it lay on the machine that made the run
        data = f" --data-dir /path/to/{Path(parameters['data_dir']).name}" if parameters.get("data_dir") else ""
        out += [
            f"Made by `pneumo run --profile {summary.get('profile', parameters.get('profile'))}{data}`"
            + (
                ", then `pneumo promote RUN_DIR`." if run_dir.resolve() == (PROJECT_ROOT / "results").resolve() else "."
            ),
            "",
        ]
    out += [
        "## Metrics",
        "",
        brief_table(run_dir, _ROWS),
        _confusion_row(scored),
        "",
        "`pneumo evaluate --split SPLIT` reproduces a column from the saved model; the files are "
        f"`{portable_path(run_dir / 'metrics')}/metrics_*.json`.",
        "",
    ]
    out += _modes(run_dir, card)
    out += _subgroups(run_dir, threshold["value"])
    for transfer_path in sorted((run_dir / "metrics").glob("threshold_transfer_*.json")):
        split = transfer_path.stem.removeprefix("threshold_transfer_")
        out += [
            f"**One threshold, two periods** ({split}, `{transfer_path.name}`):",
            "",
            "| threshold | value | sensitivity | specificity | accuracy |",
            "|---|---|---|---|---|",
        ]
        out += [
            f"| {name} | {row['threshold']:.4f} | {row['sensitivity']:.3f} | {row['specificity']:.3f} | "
            f"{row['accuracy']:.3f} |"
            for name, row in _read(transfer_path).items()
        ]
        out += [""]
    site = card.get("site_calibration")
    if site:
        out += [
            f"**Site calibration** (`pneumo calibrate`, on {site['sample']['split']}, "
            f"{site['sample']['n']} images): threshold {site['previous_threshold']['value']:.4f} -> "
            f"{site['after']['threshold']:.4f}; sensitivity {site['before']['sensitivity']:.3f} -> "
            f"{site['after']['sensitivity']:.3f}, specificity {site['before']['specificity']:.3f} -> "
            f"{site['after']['specificity']:.3f} (measured on the sample it was fitted on).",
            "",
        ]
    stress = _read(run_dir / "metrics" / "stress_validation.json")
    if stress:
        out += [
            "## Limits seen",
            "",
            f"Stress test ({stress['split']}; `metrics/stress_validation.json`), at the "
            f"stored threshold {stress['threshold']:.4f}:",
            "",
            *_stress(stress),
            "",
            f"Worst specificity {stress['worst_specificity']:.3f}, worst sensitivity "
            f"{stress['worst_sensitivity']:.3f} (clean: {stress['conditions']['clean']['specificity']:.3f} and "
            f"{stress['conditions']['clean']['sensitivity']:.3f}).",
            "",
        ]
    checks = _read(run_dir / "metrics" / "gradcam_checks.json")
    if checks:
        out += [
            f"Grad-CAM checks (`metrics/gradcam_checks.json`, {checks['split']}; the border band is "
            f"{checks['area_share']['border']:.0%} of the area):",
            "",
            *_gradcam(checks),
            "",
        ]
    recipes = run_dir / "experiments_test_dev.csv"
    if recipes.is_file():
        out += [
            "## Recipes compared on test-dev (used for selection)",
            "",
            "Written by `pneumo experiments`; every record and the rule in [experiments.md](experiments.md).",
            "",
            *_recipes(recipes),
            "",
        ]
    out += _gate(run_dir, card)
    out += _speed(run_dir)
    out += [
        "## Files",
        "",
        "Figures: `figures/`; executed notebooks and HTML: `executed/`; metrics JSON: `metrics/`; "
        "the one-file report: `report.html` (`pneumo report`).",
    ]
    return "\n".join(out) + "\n"


def _modes(run_dir: Path, card: dict[str, Any]) -> list[str]:
    """The card's operating modes with their promises, and what each decided on every scored split."""
    figures = split_modes(run_dir / "metrics", card)
    lines = [
        "## Operating modes: decisions whose promises hold",
        "",
        "Each threshold is the most decisive one whose one-sided lower confidence bound (exact Clopper-Pearson) "
        "of its promised rate meets the target on the sample it was fitted on; REFER goes to a reader and is never "
        "counted correct. Intervals: exact 95%. `pneumo predict --mode single|rule-out|triage` decides with a "
        "mode; `pneumo evaluate` writes these figures under `modes`.",
        "",
        *(f"- {sentence}" for sentence in operating.modes_summary(card)),
        "",
    ]
    for label, entries in figures.items():
        lines += [
            f"**{label}**",
            "",
            operating.modes_table(entries).drop(columns=["promise"]).to_markdown(index=False),
            "",
        ]
    figure = run_dir / "figures" / "risk_coverage_test-dev.png"
    if figure.is_file():
        lines += [
            f"![risk and coverage on test-dev (used for selection)]({figure.relative_to(run_dir).as_posix()})",
            "",
        ]
    return lines


def _subgroups(run_dir: Path, threshold: float) -> list[str]:

    figures = split_subgroups(run_dir / "metrics", threshold)
    if not figures:
        return []
    lines = [
        "## For whom does it work?",
        "",
        "Sensitivity per pneumonia kind and specificity per NORMAL acquisition batch (from the file names), "
        "accuracy per size tertile where sizes are recorded; 95% Wilson intervals (`pneumo evaluate` writes "
        "them under `subgroups`).",
        "",
    ]
    for label, entries in figures.items():
        lines += [f"**{label}**", "", subgroup_table(entries).to_markdown(index=False)]
        below = below_overall(entries)
        lines += (
            ["", *(f"- Below the overall figure: {sentence}" for sentence in below)]
            if below
            else ["", "No subgroup's interval lies wholly below the overall figure."]
        )
        lines.append("")
    return lines


def _gate(run_dir: Path, card: dict[str, Any]) -> list[str]:
    bench = _read(run_dir / "bench_ood.json")
    gate = card.get("ood")
    if not gate:
        return []
    lines = [
        "## What it does not know: the out-of-distribution gate",
        "",
        f"Beside the model: `{gate['file']}` ({gate['method']}). Threshold {gate['threshold']:.0f} "
        f"({gate['threshold_rule']}; {gate['validation_stopped']:.1%} of the {gate['validation_images']} "
        "validation X-rays stopped). `pneumo predict` labels an input above it `OUT_OF_DISTRIBUTION`, and so "
        "it does an input the two quality checks say the model cannot read (too little fine detail, JPEG blocks).",
        "",
    ]
    if bench:
        gate_name, alternative = "gate (Mahalanobis)", "max-logit (the model's confidence)"
        stopped = ", ".join(
            f"{split} {entry['stopped_by_gate']:.1%} of {entry['images']}"
            for split, entry in bench["in_distribution"].items()
        )
        lines += [
            f"`pneumo bench ood` ({bench['settings']['per_family']} inputs per family; in-distribution X-rays "
            f"stopped: {stopped}):",
            "",
        ]
        lines += _table(
            ["family", "gate AUROC", "gate FPR at 95% TPR", "stopped by the gate", "max-logit AUROC"],
            [
                [
                    family,
                    f"{entry[gate_name]['auroc']:.3f}",
                    f"{entry[gate_name]['fpr_at_95_tpr']:.3f}",
                    f"{entry['stopped_by_gate']:.0%}",
                    f"{entry[alternative]['auroc']:.3f}",
                ]
                for family, entry in bench["families"].items()
            ],
        )
        if bench.get("films"):  # the marks of real films (should pass) and films the model cannot read (should stop)
            lines += [
                "Validation films with the marks of real films, and made unreadable (stopped = by the gate or by "
                "the quality checks):",
                "",
            ]
            lines += _table(
                ["film", "expected", "stopped by the gate", "by the quality checks", "stopped"],
                [
                    [family, entry["expected"]]
                    + [f"{entry[key]:.0%}" for key in ("stopped_by_gate", "stopped_by_quality", "stopped")]
                    for family, entry in bench["films"].items()
                ],
            )
    return lines


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A Markdown table's lines, with the blank line after it."""
    return [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(row) + " |" for row in rows),
        "",
    ]


def _speed(run_dir: Path) -> list[str]:
    lines = []
    train = _read(run_dir / "bench_train.json")
    if train:
        estimate = train["full_run_estimate"]
        lines.append(
            f"- `pneumo bench train`: {train['train_images_per_s']} training images/s through every "
            f"member, {train['forward_flops_per_image'] / 1e6:.0f} MFLOPs per image forward, peak memory "
            f"{train['peak_rss_mb']:.0f} MB; a full training at most {estimate['training_minutes']} min "
            f"(budget {estimate['budget']['training_minutes']})."
        )
    gradcam = _read(run_dir / "bench_gradcam.json")
    if gradcam:
        lines.append(
            f"- `pneumo bench gradcam`: {gradcam['per_image_ms_batched']} ms per image batched against "
            f"{gradcam['per_image_ms_reference']:,.0f} ms for the per-image keras.io recipe; largest "
            f"difference between the maps {gradcam['max_abs_diff']:.0e}."
        )
    sweep = _read(run_dir / "bench_sweep.json")
    if sweep:
        lines.append(
            f"- `pneumo bench sweep`: {sweep['runs']} smoke runs, {sweep['serial_s']} s one after another, "
            f"{sweep['parallel_s']} s on {sweep['workers']} Dask workers (speedup {sweep['speedup']})."
        )
    if not lines:
        return []
    cores = (train or gradcam or sweep).get("machine", {}).get("cpu_count") or (sweep or {}).get("cores")
    return [f"## Speed ({cores}-core x86-64 CPU)" if cores else "## Speed", "", *lines, ""]


def modes_brief(run_dir: str | os.PathLike) -> str:
    """The operating modes in brief for the README: each mode's promise (bound, sample) and its figures on the
    split it was fitted on; empty when the card holds no modes."""
    run_dir = Path(run_dir)
    card, _ = model_card(run_dir)
    modes = (card or {}).get("operating_modes") or {}
    if not modes:
        return ""
    split = next(iter(modes.values()))["sample"].get("split", "the sample")
    figures = split_modes(run_dir / "metrics", card).get(split_label(split), {})
    lines = [
        "",
        "",
        f"Operating modes (`pneumo predict --mode`), fitted on {split_label(split)}; the promises are one-sided "
        f"{next(iter(modes.values()))['promises'][0]['confidence']:.0%} lower confidence bounds (exact "
        "Clopper-Pearson), REFER goes to a reader:",
        "",
        "| mode | decides | promise | coverage | normals cleared | decided accuracy | sensitivity | misses |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, mode in modes.items():
        entry = figures.get(name) or {}
        cells = {}
        for key in ("coverage", "normals_cleared", "decided_accuracy", "sensitivity", "misses"):
            rate = entry.get(key)
            cells[key] = operating.rate_text(rate, interval=False) if rate else "n/a"

        promise = "; ".join(operating.promise_text(promise) for promise in mode["promises"])
        lines.append(
            f"| {name} | {operating.band_text(mode, 3)} | {promise} | {cells['coverage']} | "
            f"{cells['normals_cleared']} | "
            f"{cells['decided_accuracy']} | {cells['sensitivity']} | {cells['misses']} |"
        )
    return "\n".join(lines)


def readme_block(run_dir: str | os.PathLike) -> str:
    """What the README's generated block holds: the metric table and the operating modes in brief."""
    return brief_table(run_dir) + modes_brief(run_dir)


def readme_brief(readme_text: str) -> str | None:
    """The generated block of the project's README (between the markers), or None."""
    start, end = readme_text.find(README_BRIEF_START), readme_text.find(README_BRIEF_END)
    if start < 0 or end < start:
        return None
    return readme_text[start + len(README_BRIEF_START) : end].strip()


def with_readme_brief(readme_text: str, run_dir: str | os.PathLike) -> str:
    """The README with its generated block replaced by the run's :func:`brief_table`."""
    if readme_brief(readme_text) is None:
        raise ValueError(f"README: no block between {README_BRIEF_START!r} and {README_BRIEF_END!r}")
    start = readme_text.find(README_BRIEF_START) + len(README_BRIEF_START)
    end = readme_text.find(README_BRIEF_END)
    return readme_text[:start] + "\n" + readme_block(run_dir) + "\n" + readme_text[end:]
