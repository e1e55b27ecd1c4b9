"""Training experiments: train one recipe and record its figures (validation, test-dev, stress), train it on each
shift view, and score saved models the same way. The tables and the Markdown page made from these records are
:mod:`pneumo_utils.runs.tables`."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pandas as pd

from pneumo_utils import config, data, evaluate, model, notebook, predict, scores
from pneumo_utils.data import CLASS_NAMES
from pneumo_utils.model import load_model, robustness, train
from pneumo_utils.outputs import OutputExists
from pneumo_utils.records import provenance, write_json_atomic

RECORD_NAME = "experiment.json"


def run_experiment(
    name: str,
    root: str | os.PathLike,
    profile: str | None = None,
    data_dir: str | None = None,
    overrides: dict[str, Any] | None = None,
    overwrite: bool = False,
    description: str = "",
) -> dict[str, Any]:
    """Train one configuration and record its validation figures; the model stays in ``<root>/<name>``."""
    folder = Path(root) / name
    record_path = folder / RECORD_NAME
    if record_path.exists() and not overwrite:
        raise OutputExists(f"{record_path}: experiment {name!r} already recorded; pass --overwrite to redo it")
    overrides = dict(overrides or {})
    settings = config.load_config(
        profile, data_dir=data_dir, output_dir=str(folder), model_path=str(folder / "model.keras"), **overrides
    )
    data_root = notebook.prepare_data_dir(settings)
    run = train.prepare(settings, data_root)
    train.fit(run, checkpoint_dir=folder / "checkpoints")
    card = train.finish(run, settings.model_path)
    validation = evaluate.evaluate_probabilities(run.val_targets, run.val_probabilities, card.threshold)
    record = {
        "name": name,
        "description": description,
        "overrides": overrides,
        "settings": config.recorded_settings(settings),
        "split": "validation (patient-grouped split of train/)",
        "validation": validation,
        "threshold": card["threshold"],
        "training": card["training"],
        "data": card["data"],
        **provenance(),
    }
    test_dev = score_test_dev(run.network, card, run.index, folder)
    if test_dev is not None:
        record["test_dev"] = test_dev
        write_json_atomic(folder / TEST_DEV_NAME, {"name": name, "model": "trained here", **test_dev})

    robustness.write_stress(folder, data_root)
    write_json_atomic(record_path, record)
    return record


TEST_DEV_SCORES = "test_dev_scores.csv"


TEST_DEV_NAME = "test_dev.json"


TEST_DEV_NOTE = "test-dev: half of the official test split, used for selection"


def score_test_dev(
    network, card: dict[str, Any], index: pd.DataFrame, folder: str | os.PathLike
) -> dict[str, Any] | None:
    """The trained model's figures on test-dev (at the validation threshold, and ROC-AUC), with its per-image
    scores in ``folder/test_dev_scores.csv`` for paired comparisons; ``None`` where the data has no test-dev.

    test-dev is the labelled half of the test period that recipes, epochs and thresholds are chosen on; no
    gradient step is ever taken on it.
    """
    try:
        rows, _ = predict.score_split(network, card, index, "test-dev")
    except data.DatasetLayoutError:
        return None
    scores.write_scores(Path(folder) / TEST_DEV_SCORES, rows)
    scored = score_view(rows["target"].to_numpy(), rows["probability"].to_numpy(), card.threshold)
    site = card.get("site_calibration")
    chosen_on = site["sample"]["split"] if site else "validation"
    return {"split": TEST_DEV_NOTE, "threshold_chosen_on": chosen_on, **scored}


VIEWS_NAME = "views.json"


VIEW_METRICS = ("roc_auc", "sensitivity", "specificity", "accuracy")


def view_slug(view: str) -> str:
    """A folder name for a view: ``cross-batch IM->NORMAL2`` -> ``cross-batch_IM-to-NORMAL2``."""
    return view.replace("->", "-to-").replace(" ", "_")


def score_view(targets, probabilities, threshold: float) -> dict[str, Any]:
    """A view's figures at the threshold chosen on its in-distribution validation, with bootstrap CIs."""
    result = evaluate.evaluate_probabilities(targets, probabilities, threshold)
    return {
        "n": result["n"],
        "threshold": threshold,
        "confusion_matrix": result["confusion_matrix"],
        **{metric: result[metric] for metric in VIEW_METRICS},
        "ci95": {metric: result["ci95"][metric] for metric in VIEW_METRICS},
    }


def train_view(
    view: str,
    folder: str | os.PathLike,
    settings: dict[str, Any],
    data_root: str | os.PathLike,
    index: pd.DataFrame | None = None,
) -> dict[str, Any]:
    """Train the recipe on one shift view (``pneumo_utils.data.shift_view``) and score its shifted rows.

    The epoch and the threshold are chosen on the view's in-distribution validation, exactly as the
    committed model's are; the shifted rows are scored once, at that threshold. Their probabilities are
    written to ``folder/scores.csv`` so that ensembles of recipes can be scored without training again.
    """
    import shutil

    folder = Path(folder)
    index = data.index_dataset(data_root) if index is None else index
    train_rows, inner_val, shifted = data.shift_view(index, view, settings.val_fraction, settings.seed)
    run = train.prepare(settings, data_root, index=index, rows=(train_rows, inner_val))
    train.fit(run, checkpoint_dir=folder / "checkpoints", verbose=2)
    inner_probabilities = model.predict_probabilities(run.network, run.val_images)
    threshold = evaluate.choose_threshold(run.val_targets, inner_probabilities, settings.min_sensitivity)
    images, targets, kept = data.load_split(shifted, run.preprocessing, population=len(index))
    probabilities = model.predict_probabilities(run.network, images)
    scores.write_scores(folder / "scores.csv", kept, probabilities)
    scores.write_scores(folder / "inner_scores.csv", run.val_rows, inner_probabilities)
    shutil.rmtree(folder / "checkpoints", ignore_errors=True)
    return {
        "view": view,
        "train_images": len(run.train_images),
        "inner_val_images": len(run.val_images),
        "shifted_images": {label: int((kept["label"] == label).sum()) for label in data.CLASS_NAMES},
        "kept_epoch": train.best_epoch(run.history),
        "epochs_run": len(run.history),
        "seconds": round(run.seconds, 1),
        "shifted": score_view(targets, probabilities, threshold["threshold"]),
        "inner_validation": score_view(run.val_targets, inner_probabilities, threshold["threshold"]),
    }


def run_views(
    name: str,
    root: str | os.PathLike,
    views: list[str],
    profile: str | None = None,
    data_dir: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train and score an experiment's recipe on each shift view; views already recorded are kept.

    The ``random`` view is the experiment's own model (trained by :func:`run_experiment`); its
    validation scores are recorded here too so that every view sits in one file.
    """
    folder = Path(root) / name
    record_path = folder / VIEWS_NAME
    record = json.loads(record_path.read_text()) if record_path.exists() else {"name": name, "views": {}}
    settings = config.load_config(
        profile,
        data_dir=data_dir,
        output_dir=str(folder),
        model_path=str(folder / "model.keras"),
        **dict(overrides or {}),
    )
    data_root = notebook.prepare_data_dir(settings)
    index = data.index_dataset(data_root)
    for view in views:
        if view in record["views"]:
            continue
        if view == "random":
            record["views"][view] = score_saved_model_view(folder / "model.keras", index, folder / "views" / "random")
        else:
            record["views"][view] = train_view(view, folder / "views" / view_slug(view), settings, data_root, index)
        record.update(provenance())
        write_json_atomic(record_path, record)
    return record


def score_saved_model_view(
    model_path: str | os.PathLike, index: pd.DataFrame, folder: str | os.PathLike
) -> dict[str, Any]:
    """The random view of an already trained model: its validation split at its card's threshold."""
    network, card = load_model(model_path)
    rows, _ = predict.score_split(network, card, index, "val")
    for name in ("scores.csv", "inner_scores.csv"):  # in the random view the scored rows are the inner validation
        scores.write_scores(Path(folder) / name, rows)
    return {
        "view": "random",
        "train_images": card["training"]["train_images"],
        "shifted_images": {label: int((rows["label"] == label).sum()) for label in CLASS_NAMES},
        "kept_epoch": card["training"]["kept_epoch"],
        "epochs_run": card["training"]["epochs_run"],
        "seconds": card["training"]["seconds"],
        "shifted": score_view(rows["target"].to_numpy(), rows["probability"].to_numpy(), card.threshold),
    }


def record_saved_model_on_test_dev(
    name: str, model_path: str | os.PathLike, root: str | os.PathLike, data_dir: str | os.PathLike
) -> dict[str, Any]:
    """Score an already saved model (e.g. the committed one) on test-dev and record it as ``name`` beside
    the trained experiments, so that it joins the test-dev table and its paired comparisons."""
    network, card = load_model(model_path)
    folder = Path(root) / name
    result = score_test_dev(network, card, data.index_dataset(data_dir), folder)
    if result is None:
        raise data.DatasetLayoutError(f"{data_dir}: no test-dev images to score")
    record = {"name": name, "model": config.portable_path(model_path), **result, **provenance()}
    write_json_atomic(folder / TEST_DEV_NAME, record)
    return record


def add_missing_stress(root: str | os.PathLike, data_dir: str | os.PathLike) -> list[str]:
    """Stress-validate recorded experiments that have a model but no ``robustness.json`` yet."""
    done = []
    for record_path in sorted(Path(root).glob(f"*/{RECORD_NAME}")):
        folder = record_path.parent
        if (folder / "model.keras").exists() and not (folder / "robustness.json").exists():
            robustness.write_stress(folder, data_dir)
            done.append(folder.name)
    return done
