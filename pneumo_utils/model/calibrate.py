"""Site calibration: refit a trained model's temperature and threshold on a labelled sample of a new period
or site, without touching its weights.

A threshold fixed in one place does not carry to another: the committed model's validation threshold, taken
from a split of ``train/``, gives far fewer correct normals on the earlier test period (notebook 03). What
does carry is the ranking of images (ROC-AUC); what has to be refitted are the two numbers that turn a
logit into a decision:

1. the **temperature** ``T`` of ``sigmoid(logit / T)`` (Guo et al. 2017), fitted by log loss on the sample;
2. the **operating modes** (:mod:`pneumo_utils.model.operating`): one threshold (``single``), a rule-out
   threshold and a triage band, each the most decisive whose one-sided lower confidence bound (exact
   Clopper-Pearson) of its promised rate meets the target on the sample, so that the promise holds on new images
   with that confidence. The card's threshold is the ``single`` mode's.

The result is a new ``.keras`` file with the same layers up to ``logit`` (Grad-CAM, which explains the logit,
is unchanged) and a card that records the rule, the sample (where, which split, its size and fingerprint)
and its figures before and after, with 95% bootstrap intervals. Calibrated on the same sample it is then
scored on, those "after" figures are optimistic by construction: the card says so.
"""

from __future__ import annotations

import copy
import datetime as _dt
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd

from pneumo_utils import evaluate
from pneumo_utils import model as model_module
from pneumo_utils.data import make_dataset
from pneumo_utils.model import operating

MIN_IMAGES_PER_CLASS = 20  # fewer than this of a class cannot fix a threshold (one image = 5 points)


class CalibrationSampleError(ValueError):
    """A calibration sample too small, or of one class only, to fix a threshold."""


def check_sample(targets: np.ndarray, where: str, minimum: int = MIN_IMAGES_PER_CLASS) -> dict[str, int]:
    """Counts per class of a calibration sample; one line naming the sample when a class has too few images."""
    targets = np.asarray(targets).astype(int)
    counts = {"NORMAL": int((targets == 0).sum()), "PNEUMONIA": int((targets == 1).sum())}
    small = [f"{count} {label}" for label, count in counts.items() if count < minimum]
    if small:
        raise CalibrationSampleError(
            f"{where}: {' and '.join(small)} image(s); a threshold needs at least {minimum} images of each class"
        )
    return counts


def distinct_sample(rows: pd.DataFrame, where: str) -> tuple[np.ndarray, int]:
    """The positions of the sample's distinct images (the first file of each content hash) and how many copies
    were left out. A file copied 20 times is one image: a bound computed on the copies would promise what one
    image cannot support. The same image under both labels is refused: one of the two labels is wrong."""
    if "hash" not in rows or rows["hash"].isna().any():
        return np.arange(len(rows)), 0
    labels = rows.groupby("hash")["target"].nunique()
    conflicting = labels[labels > 1].index
    if len(conflicting):
        files = rows.loc[rows["hash"] == conflicting[0], "path"].map(lambda path: Path(str(path)).name).tolist()
        raise CalibrationSampleError(
            f"{where}: {len(conflicting)} image(s) appear under both labels (first: {' and '.join(files[:2])} are "
            "the same file); fix the labels before calibrating"
        )
    keep = ~rows["hash"].duplicated().to_numpy()
    return np.flatnonzero(keep), int((~keep).sum())


def check_discrimination(before: dict[str, Any], where: str) -> None:
    """Refuse a sample on which the model cannot tell the classes apart: a ROC-AUC whose 95% interval reaches
    0.5 means any threshold fitted there is chance, and a promise made from it would mean nothing."""
    interval = (before.get("ci95") or {}).get("roc_auc")
    value = before.get("roc_auc")
    if value is None or not interval or interval[0] is None:
        return
    if interval[0] <= 0.5:
        raise CalibrationSampleError(
            f"{where}: the model does not tell the classes apart on this sample (ROC-AUC {value:.3f}, 95% interval "
            f"[{interval[0]:.3f}, {interval[1]:.3f}] {'reaches' if interval[1] > 0.5 else 'lies below'} 0.5); a "
            "threshold fitted here would be chance or worse: check "
            "the labels, or that these are chest X-rays like the training ones"
        )


def logit_model(network: keras.Model) -> keras.Model:
    """The model up to its ``logit`` layer (before any temperature and the sigmoid); a model without one is
    refused in one line (calibration rescales that score, so there is nothing to calibrate without it)."""
    try:
        logit = network.get_layer("logit")
    except ValueError:
        raise model_module.ModelLoadError(
            f"{model_module.source_of(network)}: the model has no layer named 'logit' (its pre-sigmoid score, "
            "which calibration and the operating modes rescale); models this project trains have one"
        ) from None
    return keras.Model(network.inputs, logit.output, name=f"{network.name}_logit")


def predict_logits(network: keras.Model, images: np.ndarray, batch_size: int = 64) -> np.ndarray:

    return logit_model(network).predict(make_dataset(images, batch_size=batch_size), verbose=0).reshape(-1)


def current_temperature(card: dict[str, Any]) -> float:
    """The temperature a model's card says is built into it (1.0 when none is)."""
    calibration = (card.get("validation_metrics") or {}).get("calibration") or {}
    site = card.get("site_calibration") or {}
    return float(site.get("temperature") or calibration.get("temperature") or 1.0)


def calibrate_model(
    network: keras.Model,
    card: dict[str, Any],
    images: np.ndarray,
    rows: pd.DataFrame,
    sample: dict[str, Any],
    min_sensitivity: float = operating.DEFAULT_SENSITIVITY,
    minimum_per_class: int = MIN_IMAGES_PER_CLASS,
    confidence: float = operating.DEFAULT_CONFIDENCE,
    rule_out_sensitivity: float = operating.DEFAULT_RULE_OUT_SENSITIVITY,
    triage_specificity: float = operating.DEFAULT_TRIAGE_SPECIFICITY,
    triage_sensitivity: float | None = None,
    rule: str = "bounded",
    training_hashes: set[str] | None = None,
) -> tuple[keras.Model, dict[str, Any]]:
    """Refit temperature and the operating modes on a labelled sample; the new model and its card.

    The sample counts its distinct images (copies of one file count once; the same file under both labels is
    refused), and a sample on which the model's ROC-AUC interval reaches 0.5 is refused. Images whose content
    is in ``training_hashes`` (the hashes of a ``train/`` folder) are allowed but named in the card's
    ``site_calibration.warnings``.

    ``rows`` are the index rows of ``images`` (``target`` column); ``sample`` describes where they come from
    (``data_dir``, ``split``, ``fingerprint``), and is recorded in the card with the sample's size and its
    figures before (the model as it was, at its own threshold) and after. The ``single`` mode must be supported
    by the sample (:class:`~pneumo_utils.model.operating.OperatingPointError` otherwise, naming the size it
    would need); a rule-out or triage mode the sample cannot support is left out of the card and named in
    ``site_calibration.modes_not_fitted``.
    """
    where = f"{sample.get('split', 'sample')} of {sample.get('data_dir', 'the data')}"
    positions, copies = distinct_sample(rows, where)
    images, rows = images[positions], rows.iloc[positions].reset_index(drop=True)
    targets = rows["target"].to_numpy().astype(int)
    counts = check_sample(
        targets, where + (f" ({copies} copies of other images not counted)" if copies else ""), minimum_per_class
    )
    warnings = []
    seen_in_training = int(rows["hash"].isin(training_hashes).sum()) if training_hashes and "hash" in rows else 0
    if seen_in_training:
        warnings.append(
            f"{seen_in_training} of the sample's {len(rows)} images are files of train/ (the model may have learnt "
            "from them): its figures on them are optimistic and its promises may not hold on new images"
        )
    if not 0.0 < min_sensitivity <= 1.0:
        raise ValueError(f"sensitivity must be in (0, 1], got {min_sensitivity}")
    logits = predict_logits(network, images)
    if not np.all(np.isfinite(logits)):
        raise ValueError(f"the model gives non-finite logits on {where}; it cannot be calibrated")
    previous_temperature = current_temperature(card)
    before_probabilities = evaluate.apply_temperature_to_logits(logits, previous_temperature)
    before = evaluate.evaluate_probabilities(targets, before_probabilities, card["threshold"]["value"])
    check_discrimination(before, where)
    temperature = evaluate.fit_temperature_to_logits(targets, logits)
    probabilities = evaluate.apply_temperature_to_logits(logits, temperature)
    modes_sample = {key: sample[key] for key in ("split", "fingerprint", "data_dir") if key in sample}
    modes, refused = operating.fit_modes(
        targets,
        probabilities,
        modes_sample,
        sensitivity=min_sensitivity,
        rule_out_sensitivity=rule_out_sensitivity,
        triage_specificity=triage_specificity,
        triage_sensitivity=triage_sensitivity,
        confidence=confidence,
        rule=rule,
    )
    if "single" not in modes:
        raise operating.OperatingPointError(f"{where}: {refused['single']}")
    single = modes["single"]
    (promise,) = single["promises"]
    threshold = single["lo"]
    after = evaluate.evaluate_probabilities(targets, probabilities, threshold)
    calibrated = model_module.with_temperature(network, temperature)
    new_card = copy.deepcopy(dict(card))  # a card as read is read-only: the new one is written
    split_name = sample.get("split", "the sample")
    new_card["threshold"] = {
        "value": threshold,
        "rule": f"the single mode, fitted on {split_name} (site calibration): "
        + operating.promise_text(promise)
        + (" (the most decisive threshold whose lower bound meets the target)" if rule == "bounded" else ""),
        "min_sensitivity": min_sensitivity,
        **({"confidence": confidence} if rule == "bounded" else {}),
    }
    new_card["operating_modes"] = modes
    new_card["default_mode"] = "single"
    earlier = card.get("site_calibration") or {}  # calibrated before: the training threshold is the earlier one's
    new_card["site_calibration"] = {
        "method": "temperature scaling of the logit (log loss), then the operating modes "
        f"({operating.MODES[0]}, {operating.MODES[1]}, {operating.MODES[2]}; {rule} rule), both fitted on the "
        "sample below; the weights are unchanged",
        "temperature": temperature,
        "previous_temperature": previous_temperature,
        "previous_threshold": card["threshold"],
        "training_threshold": earlier.get("training_threshold", earlier.get("previous_threshold", card["threshold"])),
        "training_temperature": earlier.get(
            "training_temperature", earlier.get("previous_temperature", previous_temperature)
        ),
        "sample": {**sample, "n": int(len(targets)), "counts": counts, "copies_not_counted": copies},
        "warnings": warnings,
        "before": before,
        "after": after,
        "ece_before": evaluate.expected_calibration_error(targets, before_probabilities),
        "ece_after": evaluate.expected_calibration_error(targets, probabilities),
        "modes_not_fitted": refused,
        "note": "the 'after' figures are measured on the sample the temperature and threshold were fitted on: "
        "optimistic by construction (used for selection); the modes' promises are lower confidence bounds, "
        "meant to hold on new images of the same kind",
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    return calibrated, new_card


def threshold_transfer(
    targets, probabilities, card: dict[str, Any], sample: str = "test-dev", min_sensitivity: float | None = None
) -> pd.DataFrame:
    """The same images at the threshold chosen on validation (the ``train/`` period) and at the one chosen on
    ``sample`` itself: why a threshold fixed in one period does not carry to another.

    ``probabilities`` are the model's own (with whatever temperature it carries). For a site-calibrated card
    the validation threshold is the one it replaced (moved into today's probability scale through the logit);
    otherwise the sample's threshold is fitted here with the card's sensitivity target.
    """
    targets = np.asarray(targets).astype(int)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    site = card.get("site_calibration")
    target = min_sensitivity or card["threshold"].get("min_sensitivity") or 0.95
    if site:  # the threshold training chose, moved into today's probability scale through the logit
        training = site.get("training_threshold", site["previous_threshold"])
        logit = float(evaluate.logits_of(training["value"])) * site.get(
            "training_temperature", site["previous_temperature"]
        )
        validation_threshold = float(evaluate.apply_temperature_to_logits(logit, site["temperature"]))
        sample_threshold = float(card["threshold"]["value"])
    else:
        validation_threshold = float(card["threshold"]["value"])
        sample_threshold = evaluate.choose_threshold(targets, probabilities, target, sample=sample)["threshold"]
    rows = {}
    fitted_rule = "the card's threshold" if site else f"sensitivity >= {target:g}"
    for name, threshold in (
        (f"chosen on validation (train/ period), sensitivity >= {target:g}", validation_threshold),
        (f"fitted on {sample} itself: {fitted_rule}", sample_threshold),
    ):
        result = evaluate.compute_metrics(targets, probabilities, threshold)
        (tn, fp), (fn, tp) = result["confusion_matrix"]
        rows[name] = {
            "threshold": round(threshold, 4),
            "sensitivity": round(result["sensitivity"], 3),
            "specificity": round(result["specificity"], 3),
            "accuracy": round(result["accuracy"], 3),
            "false alarms": fp,
            "missed": fn,
        }
    return pd.DataFrame(rows).T
