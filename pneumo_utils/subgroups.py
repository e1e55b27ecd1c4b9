"""For whom does the model work? Figures per subgroup of a scored split, each with its count and a 95% interval.

The overall figures of a split hide differences between the images in it. The public data set names two
such groups in its file names, and the files differ in size:

- **pneumonia kind** (``person1_bacteria_1.jpeg``, ``person1_virus_6.jpeg``): sensitivity per kind;
- **NORMAL acquisition batch** (``IM-0001-0001.jpeg``, ``NORMAL2-IM-0101-0001.jpeg``): specificity per batch;
- **image-size tertiles** of the stored file (pixel count), where sizes vary: accuracy per tertile.

Intervals are Wilson score intervals for a proportion (exact enough for the small groups here, and never
outside [0, 1]). A subgroup whose whole interval lies below the overall figure is named in the report.
"""

from __future__ import annotations

import math
from pathlib import PurePath
from typing import Any

import numpy as np
import pandas as pd

Z95 = 1.959963984540054


def wilson_interval(successes: int, total: int, z: float = Z95) -> list[float] | None:
    """The Wilson score interval of ``successes / total``; None for an empty group."""
    if total <= 0:
        return None
    share = successes / total
    centre = (share + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(share * (1 - share) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return [max(0.0, centre - half), min(1.0, centre + half)]


def pneumonia_kind(file_name: str) -> str | None:
    """``bacterial`` or ``viral`` from a PNEUMONIA file name of the public data set, else None."""
    name = PurePath(file_name).name.lower()
    if "bacteria" in name:
        return "bacterial"
    if "virus" in name:
        return "viral"
    return None


def normal_batch(file_name: str) -> str | None:
    """The acquisition batch of a NORMAL file name: ``NORMAL2-IM-`` or ``IM-``, else None."""
    name = PurePath(file_name).name
    if name.startswith("NORMAL2-IM-"):
        return "NORMAL2-IM-"
    if name.startswith("IM-"):
        return "IM-"
    return None


def _entry(metric: str, hits: np.ndarray) -> dict[str, Any]:
    total, successes = int(hits.size), int(hits.sum())
    return {
        "n": total,
        "metric": metric,
        "value": successes / total if total else None,
        "ci95": wilson_interval(successes, total),
    }


def subgroup_figures(rows: pd.DataFrame, threshold: float) -> dict[str, dict[str, Any]]:
    """``{name: {n, metric, value, ci95}}`` for a scored split: ``rows`` has ``target`` (or ``label``),
    ``probability`` and ``path`` or ``file``; ``width`` and ``height`` add the size tertiles. The first three
    entries are the overall sensitivity, specificity and accuracy, the figures each subgroup is compared with."""
    names = rows["path"] if "path" in rows else rows["file"]
    targets = rows["target"].to_numpy().astype(int)
    predicted = rows["probability"].to_numpy() >= threshold
    correct = predicted == (targets == 1)
    figures = {
        "overall sensitivity": _entry("sensitivity", correct[targets == 1]),
        "overall specificity": _entry("specificity", correct[targets == 0]),
        "overall accuracy": _entry("accuracy", correct),
    }
    kinds = np.array(
        [pneumonia_kind(name) if target == 1 else None for name, target in zip(names, targets, strict=True)]
    )
    for kind in ("bacterial", "viral"):
        if (kinds == kind).any():
            figures[f"pneumonia: {kind}"] = _entry("sensitivity", correct[kinds == kind])
    batches = np.array(
        [normal_batch(name) if target == 0 else None for name, target in zip(names, targets, strict=True)]
    )
    for batch in ("IM-", "NORMAL2-IM-"):
        if (batches == batch).any():
            figures[f"NORMAL batch {batch}"] = _entry("specificity", correct[batches == batch])
    if {"width", "height"} <= set(rows.columns):
        pixels = (rows["width"] * rows["height"]).to_numpy(dtype=float)
        known = np.isfinite(pixels)
        if known.sum() >= 3 and len(np.unique(pixels[known])) >= 3:
            low, high = np.quantile(pixels[known], [1 / 3, 2 / 3])
            for number, (inside, what) in enumerate(
                (
                    (pixels <= low, f"up to {low / 1e6:.2f} MP"),
                    ((pixels > low) & (pixels <= high), f"{low / 1e6:.2f}-{high / 1e6:.2f} MP"),
                    (pixels > high, f"over {high / 1e6:.2f} MP"),
                ),
                start=1,
            ):
                figures[f"size tertile {number} ({what})"] = _entry("accuracy", correct[inside & known])
    return figures


def below_overall(figures: dict[str, dict[str, Any]]) -> list[str]:
    """One sentence for every subgroup whose whole 95% interval lies below the overall figure of its metric."""
    sentences = []
    for name, entry in figures.items():
        overall = figures.get(f"overall {entry['metric']}")
        if name.startswith("overall") or overall is None or entry["ci95"] is None or overall["value"] is None:
            continue
        if entry["ci95"][1] < overall["value"]:
            sentences.append(
                f"{name}: {entry['metric']} {entry['value']:.3f} [{entry['ci95'][0]:.3f}, {entry['ci95'][1]:.3f}] "
                f"over {entry['n']} images, wholly below the overall {overall['value']:.3f}."
            )
    return sentences


def subgroup_table(figures: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """The figures as a table: subgroup, metric, n, value, 95% interval."""
    return pd.DataFrame(
        [
            {
                "subgroup": name,
                "metric": entry["metric"],
                "n": entry["n"],
                "value": "n/a" if entry["value"] is None else f"{entry['value']:.3f}",
                "95% CI": "n/a" if entry["ci95"] is None else f"[{entry['ci95'][0]:.3f}, {entry['ci95'][1]:.3f}]",
            }
            for name, entry in figures.items()
        ]
    )
