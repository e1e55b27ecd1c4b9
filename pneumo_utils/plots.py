"""Every figure of the project. Each function returns a matplotlib Figure; the caller saves or shows it."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from sklearn import metrics as skm

from pneumo_utils.data import CLASS_NAMES
from pneumo_utils.evaluate import compute_metrics
from pneumo_utils.explain.overlays import overlay
from pneumo_utils.model import operating

PALETTE = {"NORMAL": "#4C72B0", "PNEUMONIA": "#DD8452"}


def class_balance(index: pd.DataFrame) -> plt.Figure:
    """Images and patients per split and class."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    images = index.groupby(["split", "label"]).size().rename("images").reset_index()
    patients = index.groupby(["split", "label"])["patient"].nunique().rename("patients").reset_index()
    for axis, frame, column in ((axes[0], images, "images"), (axes[1], patients, "patients")):
        sns.barplot(frame, x="split", y=column, hue="label", palette=PALETTE, ax=axis)
        for container in axis.containers:
            axis.bar_label(container, fontsize=8)
        axis.set_title(f"{column.capitalize()} per split and class")
    fig.tight_layout()
    return fig


def image_sizes(index: pd.DataFrame) -> plt.Figure:
    """Width against height of the stored files, per class."""
    fig, axis = plt.subplots(figsize=(5, 4))
    sizes = index[["width", "height"]].drop_duplicates()
    if len(sizes) == 1:  # one dot says nothing: a sentence instead
        width, height = (int(value) for value in sizes.iloc[0])
        axis.text(0.5, 0.5, f"every stored image is {width} x {height} px", ha="center", va="center", fontsize=12)
        axis.set_axis_off()
        axis.set_title("Stored image sizes (px)")
        return fig
    sns.scatterplot(index, x="width", y="height", hue="label", palette=PALETTE, s=10, alpha=0.5, ax=axis)
    axis.set_title("Stored image sizes (px)")
    fig.tight_layout()
    return fig


def intensity_histograms(images: np.ndarray, targets: np.ndarray) -> plt.Figure:
    """Pixel intensity distribution of preprocessed images, per class (normalized)."""
    fig, axis = plt.subplots(figsize=(6, 3.8))
    for target, name in enumerate(CLASS_NAMES):
        pixels = images[np.asarray(targets) == target].reshape(-1)
        axis.hist(pixels, bins=64, range=(0, 255), density=True, histtype="step", lw=2, label=name, color=PALETTE[name])
    axis.set(xlabel="pixel intensity (0-255)", ylabel="density", title="Intensity histograms")
    axis.legend()
    fig.tight_layout()
    return fig


def sample_grid(
    images: np.ndarray, titles: list[str], columns: int = 6, cams: np.ndarray | None = None, title: str | None = None
) -> plt.Figure:
    """A grid of X-rays with titles, optionally with Grad-CAM maps overlaid."""
    rows = max(1, int(np.ceil(len(images) / columns)))
    fig, axes = plt.subplots(rows, columns, figsize=(2.2 * columns, 2.4 * rows), squeeze=False)
    for position, axis in enumerate(axes.flat):
        axis.axis("off")
        if position >= len(images):
            continue
        if cams is None:
            axis.imshow(images[position], cmap="gray", vmin=0, vmax=255)
        else:
            axis.imshow(overlay(images[position], cams[position]))
        axis.set_title(titles[position], fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    if cams is not None:
        add_evidence_colour_bar(fig, axes)
    return fig


def add_evidence_colour_bar(figure: plt.Figure, axes) -> None:
    """One colour bar for every heatmap of a figure: each map is scaled to its own maximum, so the bar reads
    from least to most evidence within an image, not an absolute quantity."""
    from matplotlib import cm, colors

    mappable = cm.ScalarMappable(norm=colors.Normalize(0, 1), cmap="jet")
    bar = figure.colorbar(mappable, ax=np.ravel(axes).tolist(), shrink=0.6, pad=0.02)
    bar.set_ticks([0, 1], labels=["least", "most"])
    bar.set_label("evidence, scaled per map", fontsize=9)  # each map to its own maximum


def training_curves(
    history: pd.DataFrame, best_epoch: int | list[int] | None = None, monitored: str = "validation"
) -> plt.Figure:
    """Loss, accuracy and AUC per epoch, training against the set early stopping watched (``monitored``:
    the validation split, or ``test-dev (used for selection)``); one row of panels per ensemble member when
    the history has a ``member`` column (``best_epoch`` then lists one kept epoch per member)."""
    from matplotlib.ticker import MaxNLocator

    members = list(history.groupby("member", sort=True)) if "member" in history else [(None, history)]
    kept = best_epoch if isinstance(best_epoch, list | tuple) else [best_epoch] * len(members)
    fig, grid = plt.subplots(len(members), 3, figsize=(13, 3.8 * len(members)), squeeze=False)
    for (member, rows), axes, kept_epoch in zip(members, grid, kept, strict=True):
        for axis, metric in zip(axes, ("loss", "accuracy", "auc"), strict=True):
            axis.plot(rows["epoch"], rows[metric], marker="o", label="training")
            axis.plot(rows["epoch"], rows[f"val_{metric}"], marker="o", label=monitored)
            if kept_epoch is not None:
                axis.axvline(kept_epoch, color="gray", ls="--", lw=1, label="kept epoch")
            title = metric if member is None else f"{metric}, member {member}"
            axis.set(xlabel="epoch", title=title)
            axis.xaxis.set_major_locator(MaxNLocator(integer=True))
            axis.legend()
    fig.tight_layout()
    return fig


def confusion_matrix(matrix: list[list[int]], title: str = "Confusion matrix") -> plt.Figure:
    """Counts with row-normalized shares: rows are the true class."""
    matrix = np.asarray(matrix)
    shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    labels = np.array(
        [
            [f"{count}\n({share:.1%})" for count, share in zip(row, share_row, strict=True)]
            for row, share_row in zip(matrix, shares, strict=True)
        ]
    )
    fig, axis = plt.subplots(figsize=(4.2, 3.8))
    sns.heatmap(
        shares,
        annot=labels,
        fmt="",
        cmap="Blues",
        vmin=0,
        vmax=1,
        cbar=False,
        xticklabels=CLASS_NAMES,
        yticklabels=CLASS_NAMES,
        ax=axis,
    )
    axis.set(xlabel="predicted", ylabel="true", title=title)
    fig.tight_layout()
    return fig


def roc_pr_curves(curves: dict[str, tuple[np.ndarray, np.ndarray]], threshold: float | None = None) -> plt.Figure:
    """ROC and precision-recall curves, one line per named split; the operating point marked."""
    fig, (roc_axis, pr_axis) = plt.subplots(1, 2, figsize=(10, 4.8))
    for name, (targets, probabilities) in curves.items():
        fpr, tpr, _ = skm.roc_curve(targets, probabilities)
        precision, recall, _ = skm.precision_recall_curve(targets, probabilities)
        auc = skm.roc_auc_score(targets, probabilities)
        ap = skm.average_precision_score(targets, probabilities)
        roc_axis.plot(fpr, tpr, label=f"{name} (AUC {auc:.3f})")
        pr_axis.plot(recall, precision, label=f"{name} (AP {ap:.3f})")
        if threshold is not None:
            point = compute_metrics(targets, probabilities, threshold)
            roc_axis.plot(1 - point["specificity"], point["sensitivity"], "ko")
            pr_axis.plot(point["sensitivity"], point["precision"], "ko")
    roc_axis.plot([0, 1], [0, 1], color="gray", ls=":", lw=1)
    roc_axis.set(xlabel="1 - specificity", ylabel="sensitivity", title="ROC curve")
    pr_axis.set(xlabel="recall (sensitivity)", ylabel="precision", title="Precision-recall curve")
    for axis in (roc_axis, pr_axis):  # below the axes: over the curves it hid them and the tick labels
        axis.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


def reliability_diagram(curves: dict[str, tuple[np.ndarray, np.ndarray]], bins: int = 10) -> plt.Figure:
    """Predicted probability against observed pneumonia rate, per split (calibration)."""
    from sklearn.calibration import calibration_curve

    fig, axis = plt.subplots(figsize=(4.8, 4.4))
    axis.plot([0, 1], [0, 1], color="gray", ls=":", lw=1, label="perfectly calibrated")
    for name, (targets, probabilities) in curves.items():
        observed, predicted = calibration_curve(targets, probabilities, n_bins=bins, strategy="quantile")
        axis.plot(predicted, observed, marker="o", label=name)
    axis.set(
        xlabel="predicted probability of pneumonia",
        ylabel="observed share with pneumonia",
        title="Reliability diagram",
        xlim=(0, 1),
        ylim=(0, 1),
    )
    axis.legend(loc="upper left")
    fig.tight_layout()
    return fig


def threshold_tradeoff(
    targets: np.ndarray,
    probabilities: np.ndarray,
    threshold: float,
    title: str = "Sensitivity and specificity against threshold",
) -> plt.Figure:
    """Sensitivity and specificity for every threshold, with the chosen one marked."""
    targets = np.asarray(targets).astype(bool)
    probabilities = np.asarray(probabilities)
    grid = np.linspace(0, 1, 201)
    sensitivity = [(probabilities[targets] >= t).mean() for t in grid]
    specificity = [(probabilities[~targets] < t).mean() for t in grid]
    fig, axis = plt.subplots(figsize=(6, 4))
    axis.plot(grid, sensitivity, label="sensitivity", color=PALETTE["PNEUMONIA"])
    axis.plot(grid, specificity, label="specificity", color=PALETTE["NORMAL"])
    axis.axvline(threshold, color="black", ls="--", lw=1, label=f"chosen threshold {threshold:.3f}")
    axis.set(xlabel="threshold on P(pneumonia)", ylabel="rate", title=title, ylim=(0, 1.02))
    axis.legend(loc="lower center")
    fig.tight_layout()
    return fig


def png_bytes(figure: plt.Figure, dpi: int = 120) -> bytes:
    """A figure as PNG bytes (for a page that embeds it, or a file written through ``outputs``)."""
    import io

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return buffer.getvalue()


def save(figure: plt.Figure, folder, name: str) -> None:
    """Save a figure as ``folder/name.png`` the way every notebook does (120 dpi, tight bounding box)."""
    from pathlib import Path

    figure.savefig(Path(folder) / f"{name}.png", dpi=120, bbox_inches="tight")


def forest_plot(figures: dict[str, dict[str, dict]], title: str = "For whom does it work?") -> plt.Figure:
    """Each subgroup's figure with its 95% interval, beside the overall figure of the same metric (dashed),
    one panel per scored split. ``figures`` maps a split's label to :func:`subgroups.subgroup_figures`."""
    import textwrap

    panels = [(label, entries) for label, entries in figures.items() if entries]
    rows = max((len(entries) for _, entries in panels), default=1)
    columns = min(FOREST_COLUMNS, max(len(panels), 1))  # two panels a row: four splits side by side ran together
    grid_rows = max(1, -(-len(panels) // columns))
    figure, axes = plt.subplots(
        grid_rows, columns, figsize=(6.5 * columns, (0.45 * rows + 1.6) * grid_rows), squeeze=False
    )
    for axis in axes.flat[len(panels) :]:
        axis.axis("off")
    colours = {"sensitivity": "tab:red", "specificity": "tab:blue", "accuracy": "tab:gray"}
    for axis, (label, entries) in zip(axes.flat, panels, strict=False):
        names = list(entries)[::-1]
        for position, name in enumerate(names):
            entry = entries[name]
            if entry["value"] is None:
                continue
            low, high = entry["ci95"]
            colour = colours.get(entry["metric"], "black")
            axis.errorbar(
                entry["value"],
                position,
                xerr=[[max(entry["value"] - low, 0.0)], [max(high - entry["value"], 0.0)]],  # rounding at 0 or 1
                fmt="o",
                color=colour,
                capsize=3,
            )
            overall = entries.get(f"overall {entry['metric']}")
            if overall and overall["value"] is not None and not name.startswith("overall"):
                axis.plot([overall["value"]] * 2, [position - 0.4, position + 0.4], "--", color=colour, linewidth=1)
        axis.set_yticks(range(len(names)), [f"{name} (n={entries[name]['n']})" for name in names])
        axis.set_xlim(0, 1.02)
        axis.set_xlabel("value with 95% interval (dashed: overall)")
        axis.set_title(textwrap.fill(label, 48), fontsize=10)
    figure.suptitle(title)
    figure.tight_layout()
    return figure


FOREST_COLUMNS = 2


def risk_coverage(
    targets: np.ndarray, probabilities: np.ndarray, modes: dict[str, dict], title: str = "Risk and coverage"
) -> plt.Figure:
    """Left: the error among decided images against the share decided, when the images nearest the single
    threshold are referred first, with each operating mode's point (its 95% interval of decided error).
    Right: where each mode's thresholds lie on the scores of both classes."""
    single = modes.get("single") or next(iter(modes.values()))
    curve = operating.risk_coverage(targets, probabilities, single["lo"])
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.plot(curve["coverage"], curve["risk"], color="#555", label="refer the least sure first (single threshold)")
    markers = {"single": "o", "rule-out": "s", "triage": "D"}
    for name, mode in modes.items():
        accuracy = mode["decided_accuracy"]
        if accuracy["value"] is None:
            continue
        risk, (low, high) = 1 - accuracy["value"], accuracy["ci95"]
        left.errorbar(
            mode["coverage"]["value"],
            risk,
            yerr=[[max(risk - (1 - high), 0.0)], [max((1 - low) - risk, 0.0)]],
            fmt=markers.get(name, "o"),
            capsize=3,
            label=f"{name}: {mode['coverage']['value']:.0%} decided, error {risk:.3f}",
        )
    left.set_xlabel("coverage (share of images decided, the rest REFER)")
    left.set_ylabel("error among decided images")
    left.set_xlim(0, 1.02)
    left.set_ylim(bottom=0)
    left.legend(fontsize=8, loc="upper left")
    left.set_title(title)
    targets = np.asarray(targets).astype(int)
    bins = np.linspace(0, 1, 41)
    for number, name in enumerate(CLASS_NAMES):
        right.hist(np.asarray(probabilities)[targets == number], bins=bins, alpha=0.6, color=PALETTE[name], label=name)
    styles = {"single": "-", "rule-out": ":", "triage": "--"}
    for name, mode in modes.items():
        for value in {mode["lo"], mode.get("hi")} - {None}:
            right.axvline(value, color="k", linestyle=styles.get(name, "-"), linewidth=1)
        right.plot([], [], color="k", linestyle=styles.get(name, "-"), label=f"{name} threshold(s)")
    right.set_yscale("log")
    right.set_xlabel("P(pneumonia)")
    right.set_ylabel("images")
    right.legend(fontsize=8)
    right.set_title("Scores and the modes' thresholds")
    fig.tight_layout()
    return fig


def threshold_rule_simulation(simulated: dict[str, np.ndarray], target: float, positives: int) -> plt.Figure:
    """The true sensitivity each rule's threshold gives on fresh images, over many calibration samples
    (:func:`pneumo_utils.model.operating.simulate_threshold_rules`)."""
    fig, axis = plt.subplots(figsize=(7, 3.8))
    low = min(float(values.min()) for values in simulated.values())
    bins = np.linspace(low, 1.0, 40)
    labels = {"empirical": "empirical: exactly at the target on the sample", "bounded": "bounded: 95% lower bound"}
    for rule, values in simulated.items():
        held = float((values >= target).mean())
        axis.hist(values, bins=bins, alpha=0.6, label=f"{labels.get(rule, rule)} (holds in {held:.0%})")
    axis.axvline(target, color="k", linestyle="--", linewidth=1, label=f"promise: {target:g}")
    axis.set_xlabel("true sensitivity on fresh images")
    axis.set_ylabel(f"calibration samples (of {len(next(iter(simulated.values())))})")
    axis.set_title(f"Simulated: a threshold fitted on {positives} positives, on fresh draws")
    axis.legend(fontsize=8)
    fig.tight_layout()
    return fig
