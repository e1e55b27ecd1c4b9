"""Training experiments: one record per run (settings, validation figures, time), and the table of all.

Each experiment trains with :mod:`pneumo_utils.train` exactly as notebook 02 does, on the same
patient-grouped validation split, and writes ``<root>/<name>/experiment.json``. Only the validation
split is ever scored here: the official test split is not used to choose anything.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pandas as pd

from pneumo_utils import config as config_module
from pneumo_utils.evaluate import with_ci
from pneumo_utils.records import provenance, write_json_atomic

RECORD_NAME = "experiment.json"
TABLE_COLUMNS = ("accuracy", "sensitivity", "specificity", "f1", "roc_auc", "brier")


def run_experiment(name: str, root: str | os.PathLike, profile: str | None = None, data_dir: str | None = None,
                   overrides: dict[str, Any] | None = None, overwrite: bool = False,
                   description: str = "") -> dict[str, Any]:
    """Train one configuration and record its validation figures; the model stays in ``<root>/<name>``."""
    from pneumo_utils import evaluate, train

    folder = Path(root) / name
    record_path = folder / RECORD_NAME
    if record_path.exists() and not overwrite:
        raise FileExistsError(f"{record_path}: experiment {name!r} already recorded; pass --overwrite to redo it")
    overrides = dict(overrides or {})
    settings = config_module.load_config(profile, data_dir=data_dir, output_dir=str(folder),
                                         model_path=str(folder / "model.keras"), **overrides)
    data_root = config_module.prepare_data_dir(settings)
    run = train.prepare(settings, data_root)
    train.fit(run, checkpoint_dir=folder / "checkpoints")
    card = train.finish(run, settings["model_path"])
    validation = evaluate.evaluate_probabilities(run.val_targets, run.val_probabilities, card["threshold"]["value"])
    record = {
        "name": name,
        "description": description,
        "overrides": overrides,
        "settings": {key: value for key, value in settings.items() if key not in ("output_dir", "data_dir")},
        "split": "validation (patient-grouped split of train/)",
        "validation": validation,
        "threshold": card["threshold"],
        "training": card["training"],
        "data": card["data"],
        **provenance(),
    }
    from pneumo_utils import robustness

    robustness.write_stress(folder, data_root)
    write_json_atomic(record_path, record)
    return record


def experiments_table(root: str | os.PathLike) -> pd.DataFrame:
    """One row per recorded experiment: what changed, validation figures with CIs, training time."""
    rows = []
    for record_path in sorted(Path(root).glob(f"*/{RECORD_NAME}")):
        record = json.loads(record_path.read_text())
        validation = record["validation"]
        row = {"experiment": record["name"], "description": record.get("description", ""),
               "changes": ", ".join(f"{key}={value}" for key, value in record["overrides"].items()) or "(profile)"}
        for metric in TABLE_COLUMNS:
            row[metric] = with_ci(validation, metric)
        stress_path = record_path.with_name("robustness.json")
        if stress_path.exists():
            stress = json.loads(stress_path.read_text())
            mean = stress["mean_over_changes"]
            row["stress roc_auc"] = round(mean["roc_auc"], 3)
            row["stress sensitivity"] = round(mean["sensitivity"], 3)
            row["stress specificity"] = round(mean["specificity"], 3)
            row["worst specificity"] = round(stress["worst_specificity"], 3)
        row["threshold"] = round(record["threshold"]["value"], 4)
        row["epochs (kept)"] = f"{record['training']['epochs_run']} ({record['training']['kept_epoch']})"
        row["train minutes"] = round(record["training"]["seconds"] / 60, 1)
        rows.append(row)
    return pd.DataFrame(rows)


def add_missing_stress(root: str | os.PathLike, data_dir: str | os.PathLike) -> list[str]:
    """Stress-validate recorded experiments that have a model but no ``robustness.json`` yet."""
    from pneumo_utils import robustness

    done = []
    for record_path in sorted(Path(root).glob(f"*/{RECORD_NAME}")):
        folder = record_path.parent
        if (folder / "model.keras").exists() and not (folder / "robustness.json").exists():
            robustness.write_stress(folder, data_dir)
            done.append(folder.name)
    return done


HEADER = """# Training experiments

All figures are on the **validation split** (a patient-grouped, stratified split of `train/`), at each
model's own threshold (the highest with validation sensitivity >= the profile's minimum), with seeded
bootstrap 95% intervals. The official test split was not used for anything here.

The *stress* columns score the same validation images again under acquisition-like changes (gamma 0.6
and 1.6, contrast x0.6, blur, noise, zoom in and out; `pneumo_utils/robustness.py`) and give the mean over
those changes and the worst specificity. They stand in for the shift to other data, which the clean
validation split cannot show. Training minutes are wall time on this 2-core machine, measured while other
work shared the cores, so they overstate the time of a quiet run (see `results/bench_train.json`).

"""


def write_table(root: str | os.PathLike, output: str | os.PathLike, notes: str = "") -> Path:
    """The experiments table as Markdown (and CSV beside it)."""
    table = experiments_table(root)
    output = Path(output)
    output.write_text(HEADER + table.to_markdown(index=False) + "\n" + (f"\n{notes}\n" if notes else ""))
    table.to_csv(output.with_suffix(".csv"), index=False)
    return output
