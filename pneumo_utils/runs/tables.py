"""The experiments' tables and page: one row per recorded recipe (validation, stress, shift views, test-dev with
paired bootstrap comparisons against the best), the comparison figure, and ``results/experiments.md``."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pneumo_utils import config, evaluate, scores
from pneumo_utils.data import SHIFT_VIEWS
from pneumo_utils.evaluate import with_ci
from pneumo_utils.records import write_text_atomic
from pneumo_utils.runs.experiments import RECORD_NAME, TEST_DEV_NAME, TEST_DEV_SCORES, VIEWS_NAME, score_view, view_slug
from pneumo_utils.scores import read_scores

TABLE_COLUMNS = ("accuracy", "sensitivity", "specificity", "f1", "roc_auc", "brier")


def experiments_table(root: str | os.PathLike) -> pd.DataFrame:
    """One row per recorded experiment: what changed, validation figures with CIs, training time."""
    rows = []
    for record_path in sorted(Path(root).glob(f"*/{RECORD_NAME}")):
        record = json.loads(record_path.read_text())
        validation = record["validation"]
        row = {
            "experiment": record["name"],
            "description": record.get("description", ""),
            "changes": ", ".join(f"{key}={value}" for key, value in record["overrides"].items()) or "(profile)",
        }
        stress_path = record_path.with_name("robustness.json")
        row.update(figure_columns(validation, json.loads(stress_path.read_text()) if stress_path.exists() else None))
        row["threshold"] = round(record["threshold"]["value"], 4)
        row["epochs (kept)"] = f"{record['training']['epochs_run']} ({record['training']['kept_epoch']})"
        row["train minutes"] = round(record["training"]["seconds"] / 60, 1)
        rows.append(row)
    return pd.DataFrame(rows)


def figure_columns(validation: dict[str, Any] | None, stress: dict[str, Any] | None = None) -> dict[str, Any]:
    """The figure columns of one trained model, as every table of runs shows them (``pneumo experiments``
    and ``pneumo sweep``): validation metrics with their intervals, then the stress-validation means and
    the worst specificity over the stress changes, where they were measured."""
    row: dict[str, Any] = {}
    for metric in TABLE_COLUMNS:
        row[metric] = with_ci(validation, metric) if validation else None
    if stress:
        mean = stress["mean_over_changes"]
        row["stress roc_auc"] = round(mean["roc_auc"], 3)
        row["stress sensitivity"] = round(mean["sensitivity"], 3)
        row["stress specificity"] = round(mean["specificity"], 3)
        row["worst specificity"] = round(stress["worst_specificity"], 3)
    return row


def compare_figure(results: dict[str, dict[str, Any] | None], metrics=("roc_auc", "sensitivity", "specificity")):
    """A figure comparing models: one panel per metric, one point with its 95% interval per model (runs
    without figures are left out); None when no model has figures."""
    import matplotlib.pyplot as plt

    named = {name: result for name, result in results.items() if result}
    if not named:
        return None
    figure, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 0.5 * len(named) + 1.5), sharey=True)
    positions = np.arange(len(named))
    for axis, metric in zip(np.atleast_1d(axes), metrics, strict=True):
        values = np.array([result[metric] for result in named.values()])
        low, high = np.array([result["ci95"][metric] for result in named.values()]).T
        axis.errorbar(values, positions, xerr=[values - low, high - values], fmt="o", capsize=3)
        axis.set_title(metric.replace("_", "-"))
        axis.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(positions, list(named))
    axes[0].invert_yaxis()
    figure.suptitle("Validation figures with bootstrap 95% intervals")
    figure.tight_layout()
    return figure


def _view_scores(root: Path, name: str, view: str, which: str) -> pd.DataFrame:
    return read_scores(root / name / "views" / view_slug(view) / which)


def ensemble_views(root: str | os.PathLike, names: list[str], min_sensitivity: float = 0.95) -> dict[str, Any]:
    """Score an ensemble of recorded experiments on every shift view they all have, without training:
    on each view the members' logits are averaged (as :func:`pneumo_utils.model.build_ensemble` does),
    the threshold is chosen on the averaged inner-validation scores, and the shifted rows are scored."""
    root = Path(root)
    records = [json.loads((root / name / VIEWS_NAME).read_text()) for name in names]
    # a view counts when every member recorded it and its per-image scores are still here (they are not
    # committed: a view recorded on another machine has figures but no scores to average)
    views = [
        view
        for view in records[0]["views"]
        if all(view in record["views"] for record in records)
        and all(
            (root / name / "views" / view_slug(view) / which).exists()
            for name in names
            for which in ("inner_scores.csv", "scores.csv")
        )
    ]
    result: dict[str, Any] = {"name": " + ".join(names), "members": names, "views": {}}
    for view in views:
        mean_logits = {}
        for which in ("inner_scores.csv", "scores.csv"):
            mean_logits[which] = scores.mean_logit_scores(
                [_view_scores(root, name, view, which) for name in names],
                f"{view}: the members scored different images; retrain them on the same view",
            )
        inner_targets, inner_probabilities = mean_logits["inner_scores.csv"]
        threshold = evaluate.choose_threshold(inner_targets, inner_probabilities, min_sensitivity)["threshold"]
        result["views"][view] = {"view": view, "shifted": score_view(*mean_logits["scores.csv"], threshold)}
    return result


def views_table(root: str | os.PathLike, ensembles: list[list[str]] | None = None) -> pd.DataFrame:
    """One row per recipe (and per ensemble of recipes): ROC-AUC, sensitivity and specificity with CIs on
    each view, then the worst of each over the held-out views (cross-batch both ways and id-range; the
    saturated random view is shown but not counted), which is what recipes are chosen by."""
    root = Path(root)
    records = [json.loads(path.read_text()) for path in sorted(root.glob(f"*/{VIEWS_NAME}"))]
    records += [ensemble_views(root, names) for names in (ensembles or [])]
    rows = []
    for record in records:
        row: dict[str, Any] = {"recipe": record["name"]}
        worst = {metric: 1.0 for metric in ("roc_auc", "sensitivity", "specificity")}
        held_out = [view for view in _all_views() if view != "random"]
        complete = all(view in record["views"] for view in held_out)
        for view in _all_views():
            if view not in record["views"]:
                continue
            shifted = record["views"][view]["shifted"]
            for metric, short in (("roc_auc", "AUC"), ("sensitivity", "sens"), ("specificity", "spec")):
                row[f"{view} {short}"] = with_ci(shifted, metric)
                if view in held_out:
                    worst[metric] = min(worst[metric], shifted[metric])
        for metric, short in (("roc_auc", "AUC"), ("sensitivity", "sens"), ("specificity", "spec")):
            row[f"worst {short}"] = round(worst[metric], 3) if complete else None
        rows.append(row)
    metrics = ("AUC", "sens", "spec")
    order = [
        "recipe",
        *(f"{view} {short}" for view in _all_views() for short in metrics),
        *(f"worst {short}" for short in metrics),
    ]  # the same columns in the same order, whoever comes first
    present = {column for row in rows for column in row}
    return pd.DataFrame(rows, columns=[column for column in order if column in present]).fillna("not trained")


VIEWS_TABLE = config.REFERENCE_RESULTS / "experiments_views.csv"


TEST_DEV_TABLE = config.REFERENCE_RESULTS / "experiments_test_dev.csv"


TEST_DEV_METRICS = (("roc_auc", "AUC"), ("accuracy", "acc"), ("sensitivity", "sens"), ("specificity", "spec"))


def _test_dev_scores(root: Path, name: str) -> pd.DataFrame:
    return read_scores(root / name / TEST_DEV_SCORES)


def test_dev_table(
    root: str | os.PathLike | None = None, recipes: list[list[str]] | None = None
) -> pd.DataFrame | None:
    """Every experiment scored on test-dev (used for selection): ROC-AUC, accuracy, sensitivity and
    specificity with CIs at its own validation threshold; then, per recipe (a list of its seeds' experiment
    names), the mean over the seeds and the seeds' ensemble (mean logit, as a saved ensemble) with its
    ROC-AUC and the paired bootstrap interval of its difference from the best recipe's ensemble.

    Without ``root``, the committed table (``results/experiments_test_dev.csv``); None when there is none.
    """
    if root is None:
        return pd.read_csv(TEST_DEV_TABLE) if TEST_DEV_TABLE.exists() else None

    root = Path(root)
    rows = []
    records = {path.parent.name: json.loads(path.read_text()) for path in sorted(root.glob(f"*/{TEST_DEV_NAME}"))}
    for name, record in records.items():
        row: dict[str, Any] = {"recipe / seed": name}
        for metric, short in TEST_DEV_METRICS:
            row[f"test-dev {short}"] = with_ci(record, metric)
        row["threshold (chosen on)"] = f"{record['threshold']:.4f} ({record.get('threshold_chosen_on', 'validation')})"
        rows.append(row)
    ensembles = {}
    for names in recipes or []:
        missing = [name for name in names if name not in records]
        if missing:
            raise ValueError(f"recipe {' + '.join(names)}: no test-dev record for {missing}")
        mean_row: dict[str, Any] = {"recipe / seed": f"mean of {' + '.join(names)}"}
        for metric, short in TEST_DEV_METRICS:
            mean_row[f"test-dev {short}"] = f"{np.mean([records[name][metric] for name in names]):.3f}"
        rows.append(mean_row)
        ensembles[" + ".join(names)] = scores.mean_logit_scores(
            [_test_dev_scores(root, name) for name in names],
            f"{' + '.join(names)}: the members scored different test-dev images",
        )
    if ensembles:
        aucs = {
            name: evaluate.compute_metrics(targets, probabilities, 0.5)["roc_auc"]
            for name, (targets, probabilities) in ensembles.items()
        }
        best = max(aucs, key=aucs.get)
        for name, (targets, probabilities) in ensembles.items():
            row = {"recipe / seed": f"ensemble {name}", "test-dev AUC": f"{aucs[name]:.3f}"}
            if name != best:
                difference = evaluate.paired_bootstrap_difference(targets, probabilities, ensembles[best][1])
                low, high = difference["ci95"]
                row["AUC difference from best [95% CI]"] = f"{difference['difference']:+.3f} [{low:+.3f}, {high:+.3f}]"
            else:
                row["AUC difference from best [95% CI]"] = "best"
            rows.append(row)
    return pd.DataFrame(rows).fillna("") if rows else None


def worst_views(path: str | os.PathLike = VIEWS_TABLE) -> pd.DataFrame | None:
    """The recorded shift-views table (written by ``pneumo experiments``) reduced to what recipes are
    chosen by: the worst held-out ROC-AUC, sensitivity and specificity per recipe; None when not recorded."""
    path = Path(path)
    if not path.exists():
        return None
    table = pd.read_csv(path).set_index("recipe")
    return table[[column for column in table.columns if column.startswith("worst")]]


def _all_views() -> tuple[str, ...]:

    return SHIFT_VIEWS


HEADER = """# Training experiments

Recipes are now chosen on **test-dev** (the first table): half of the official test split, from
the test period that no view of `train/` can show. The validation split with its stress columns (second
table) and the shift views of `train/` (third) stay as secondary columns. Experiments e1-e14 were chosen on
those before test-dev existed; their models were not kept, so they have no test-dev figures (the committed
e12 + e13 ensemble was scored on test-dev as a whole).

Validation figures are on a patient-grouped, stratified split of `train/`, at each model's own threshold (the
highest with validation sensitivity >= the profile's minimum), with seeded bootstrap 95% intervals. The
*stress* columns score the same validation images again under acquisition-like changes (gamma 0.6 and 1.6,
contrast x0.6, blur, noise, zoom in and out; `pneumo_utils/model/robustness.py`): the mean over those changes and
the worst specificity. Training minutes are wall time on the machine that trained each model
(`results/experiments_notes.md` records the circumstances; `results/bench_train.json` is the benchmark).

"""


VIEWS_HEADER = """
## Shift views: what the random split cannot show

Each recipe is trained again on each view's training rows (the epoch and the threshold chosen on a
patient-grouped validation carved from those rows, as for the committed model) and scored once on the
view's held-out rows, at that threshold (`pneumo_utils/data/splits.py: shift_view`):

- **random**: the usual patient-grouped split (saturated: every recipe scores about the same);
- **cross-batch IM->NORMAL2 / NORMAL2->IM**: the NORMAL images of one acquisition batch are never seen in
  training; the held-out rows are the other batch's normals with held-out pneumonia patients;
- **id-range**: the patients with the lowest and the highest acquisition ids of each class (and NORMAL
  batch) held out, a proxy for images taken before and after the training period.

Recipes are chosen by the *worst* of the three held-out views (the `worst` columns), not by the random
split. Ensembles (`a + b`) are scored from the members' per-view scores by averaging logits, exactly as the
saved ensemble does, with the threshold chosen on the averaged inner validation.

"""


def _keep_recorded_rows(views: pd.DataFrame, previous_path: Path) -> pd.DataFrame:
    """A recipe row that this machine cannot score (an ensemble whose members' per-image view scores were
    recorded elsewhere: they are not committed) keeps the figures of the table it replaces, instead of
    turning into "not trained"."""
    if not len(views) or not previous_path.exists():
        return views
    previous = pd.read_csv(previous_path).set_index("recipe")
    figures = [column for column in views.columns if column != "recipe"]
    rows = []
    for row in views.to_dict("records"):
        empty = all(row.get(column) in ("not trained", None) or pd.isna(row.get(column)) for column in figures)
        if empty and row["recipe"] in previous.index:
            row = {"recipe": row["recipe"], **previous.loc[row["recipe"]].to_dict()}
        rows.append(row)
    return pd.DataFrame(rows, columns=views.columns).fillna("not trained")


def _all_have(root: str | os.PathLike, names: list[str], record: str) -> bool:
    return all((Path(root) / name / record).exists() for name in names)


TEST_DEV_HEADER = """## test-dev: what recipes are chosen on (used for selection)

test-dev is half of the official test split (patients with `sha256(patient id) % 5 < 2`; 106 NORMAL, 157
PNEUMONIA), from the test period, which is earlier than all of `train/`. Every model here was trained on
`train/` only; test-dev chose between them, so these figures are *used for selection*. Accuracy, sensitivity
and specificity are at each model's own threshold, chosen on validation except where the table says test-dev
(a model calibrated there, as the committed one is). A recipe beats another only when the paired bootstrap
interval of the difference in test-dev ROC-AUC (2,000 resamples) excludes 0. test-final, the other half, is
measured independently.

"""


def recorded_rows(csv_path: str | os.PathLike) -> int:
    """How many experiments a written table holds (0 when there is none or it cannot be read)."""
    try:
        return len(pd.read_csv(csv_path))
    except (OSError, ValueError):
        return 0


def write_table(
    root: str | os.PathLike, output: str | os.PathLike, notes: str = "", ensembles: list[list[str]] | None = None
) -> Path:
    """The experiments table, and the shift-views table where views were recorded, as Markdown (and CSV)."""
    table = experiments_table(root)
    views = views_table(root, [names for names in ensembles or [] if _all_have(root, names, VIEWS_NAME)])
    views = _keep_recorded_rows(views, Path(output).with_name(Path(output).stem + "_views.csv"))
    selection = test_dev_table(root, [names for names in ensembles or [] if _all_have(root, names, TEST_DEV_NAME)])
    output = Path(output)
    text = ""
    if selection is not None:
        text += TEST_DEV_HEADER + selection.to_markdown(index=False) + "\n\n"
        write_text_atomic(output.with_name(output.stem + "_test_dev.csv"), selection.to_csv(index=False))
    text = HEADER + text + "## Validation split and stress\n\n" + table.to_markdown(index=False) + "\n"
    if len(views):
        text += VIEWS_HEADER + views.to_markdown(index=False) + "\n"
        write_text_atomic(output.with_name(output.stem + "_views.csv"), views.to_csv(index=False))
    write_text_atomic(output, text + (f"\n{notes}\n" if notes else ""))
    write_text_atomic(output.with_suffix(".csv"), table.to_csv(index=False))
    return output
