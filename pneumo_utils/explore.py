"""The explorer's logic: everything notebook 05 (and ``pneumo explore``, which serves it with Voilà) shows.

The notebook only wires widgets to these functions, so every number a student sees is computed here and
tested: the threshold lab (confusion matrix, sensitivity, specificity, PPV and NPV at a chosen prevalence,
the operating point on the ROC curve), the choice of images (by class and by outcome), uploads read by the
project's one image reader (a bad file gives the same one-line error as the command line), the stress
sliders (gamma, contrast, blur), and the heatmap of one image.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd

from pneumo_utils import data, scores
from pneumo_utils.config import (
    DATA_DIR_ENV,
    DEFAULT_DATA_DIR,
    PROJECT_ROOT,
    REFERENCE_RESULTS,
    SAVED_MODEL,
    SettingsError,
    load_config,
    user_path,
)
from pneumo_utils.data import CLASS_NAMES
from pneumo_utils.evaluate import outcome_of
from pneumo_utils.explain import overlays
from pneumo_utils.images import ImageReadError, Preprocessing, after_resize, read_image
from pneumo_utils.model import operating
from pneumo_utils.model.card import ModelCard
from pneumo_utils.subgroups import normal_batch, pneumonia_kind

RUN_ENV = "PNEUMO_EXPLORE_RUN"
MODEL_ENV = "PNEUMO_EXPLORE_MODEL"
DATA_ENV = "PNEUMO_EXPLORE_DATA"
OUTCOMES = ("all", "correct", "false alarm", "missed")
LABELS = ("all", "NORMAL", "PNEUMONIA")


# --- what to explore ---------------------------------------------------------------------------------------


@dataclass
class Session:
    """A model with its card, and the scored sets of a run (``split -> rows``) with the data root."""

    model_path: Path
    run_dir: Path | None
    data_root: Path | None
    scores: dict[str, pd.DataFrame]
    scored_now: bool = False  # the run kept no per-image scores: its validation split was scored on loading
    data_problem: str | None = None  # one line when the run's images are not where it looked for them


def _refuse_another_model(model: Path, run: Path) -> None:
    """A run's stored per-image scores are its own model's: shown at another model's threshold they would be
    wrong figures (sensitivity 0.597 shown where that model has 0.758). So ``--run R --model M`` is allowed
    only where M is R's model file, byte for byte."""
    own = sorted((run / "model").glob("*.keras")) or (
        [SAVED_MODEL] if run.resolve() == REFERENCE_RESULTS.resolve() else []
    )
    if not own or model.resolve() == own[0].resolve():
        return
    if own[0].is_file() and own[0].stat().st_size == model.stat().st_size and own[0].read_bytes() == model.read_bytes():
        return
    raise SettingsError(
        f"{model}: not the model that scored {run} (its per-image scores are {own[0].name}'s, and another model's "
        "threshold on them gives wrong figures); explore the run with its own model, or this model with "
        "--model and --data-dir alone (its validation split is scored now)"
    )


def resolve(
    run_dir: str | os.PathLike | None = None,
    model_path: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
) -> Session:
    """Find the model, the run's per-image scores and the data they refer to.

    ``run_dir`` (or ``$PNEUMO_EXPLORE_RUN``) is a run folder (``runs/full-...``, or ``results/`` for the
    committed run); its model is ``run_dir/model/*.keras`` (``saved_models/`` for ``results/``) unless
    ``model_path`` names one. The data root is ``data_dir``, else the one the run recorded.
    """
    run_dir = run_dir or os.environ.get(RUN_ENV) or None
    model_path = model_path or os.environ.get(MODEL_ENV) or None
    data_dir = data_dir or os.environ.get(DATA_ENV) or None
    run = Path(run_dir).resolve() if run_dir else (REFERENCE_RESULTS if not model_path else None)
    if run is not None and not ((run / "run_summary.json").is_file() or (run / "metrics").is_dir()):
        raise SettingsError(f"{run}: not a run folder (no run_summary.json, no metrics/)")
    if model_path is None:
        candidates = sorted((run / "model").glob("*.keras")) if run else []
        if not candidates and run is not None and run.resolve() != REFERENCE_RESULTS.resolve():
            raise SettingsError(f"{run}: the run has no model (model/*.keras); name one with --model")
        model = candidates[0] if candidates else SAVED_MODEL
    else:
        model = Path(model_path).resolve()
    if not model.is_file():
        raise SettingsError(f"{model}: no such model file")
    if model_path is not None and run is not None:
        _refuse_another_model(model, run)
    summary = json.loads((run / "run_summary.json").read_text()) if run and (run / "run_summary.json").is_file() else {}
    recorded = None
    if summary.get("data_dir"):
        recorded = Path(summary["data_dir"])
        recorded = recorded if recorded.is_absolute() else (PROJECT_ROOT / recorded).resolve()
    if data_dir:
        root = Path(data_dir).resolve()
    else:  # as everywhere else: $PNEUMO_DATA_DIR, then the folder the run recorded, then data/chest_xray
        candidates = [user_path(os.environ[DATA_DIR_ENV])] if os.environ.get(DATA_DIR_ENV) else []
        candidates += [recorded] if recorded else []
        candidates.append(DEFAULT_DATA_DIR)
        root = next((candidate for candidate in candidates if candidate.is_dir()), recorded)
    scored = {}
    for path in sorted((run / "metrics").glob(scores.SPLIT_SCORES.format(split="*"))) if run else []:
        frame = scores.read_scores(path, root)
        scored[path.stem.removeprefix("scores_")] = frame if root else frame.assign(path=frame["file"])
    scored_now = False
    if not scored and root is not None and (root / "train").is_dir():
        scored["validation"] = score_validation(model, root)  # a run from before per-image scores were kept
        scored_now = True
    problem = None
    first = next((frame["path"].iloc[0] for frame in scored.values() if len(frame)), None)
    if scored and (root is None or not Path(first).is_file()):
        where = root or recorded or "the folder the run used"
        problem = f"images of this run not found at {where}; start with --data-dir DIR (or set ${DATA_DIR_ENV})"
    return Session(
        model_path=model, run_dir=run, data_root=root, scores=scored, scored_now=scored_now, data_problem=problem
    )


def score_validation(model_path: str | os.PathLike, data_root: str | os.PathLike) -> pd.DataFrame:
    """The model's validation split (rebuilt from the seed and fraction in its card) scored now, in the
    shape of ``metrics/scores_validation.csv``."""
    from pneumo_utils import model, predict

    network, card = model.load_model(model_path)
    rows, _ = predict.score_split(network, card, data.index_dataset(data_root), "val")
    return rows.assign(file=scores.scores_frame(rows)["file"])


def notebook_session(
    profile: str | None,
    data_dir: str | None,
    output_dir: str | None,
    overrides: dict | None,
    run_dir: str | None,
    model_path: str | None,
) -> Session:
    """What notebook 05 explores: the run or model named (parameters, then ``$PNEUMO_EXPLORE_*``, which
    ``pneumo explore`` sets), else the profile's own output folder when notebooks 01-04 left a model there
    (how nbval and ``pneumo run`` use it), else the committed run (``results/`` and ``saved_models/``)."""
    if run_dir or model_path or os.environ.get(RUN_ENV) or os.environ.get(MODEL_ENV):
        return resolve(run_dir, model_path, data_dir)
    settings = load_config(profile, data_dir=data_dir, output_dir=output_dir, **(overrides or {}))
    if Path(settings.model_path).is_file() and (Path(settings.output_dir) / "metrics").is_dir():
        return resolve(settings.output_dir, settings.model_path, data_dir or settings.data_dir)
    return resolve(None, None, data_dir)


# --- threshold lab -----------------------------------------------------------------------------------------


def operating_point(targets, probabilities, threshold: float, prevalence: float | None = None) -> dict[str, Any]:
    """Confusion matrix and rates at ``threshold``; PPV and NPV at ``prevalence`` (the set's own if None).

    PPV and NPV depend on how common pneumonia is where the model is used, not only on the model:
    ``PPV = sens * p / (sens * p + (1 - spec) * (1 - p))``.
    """
    targets = np.asarray(targets).astype(int)
    predicted = np.asarray(probabilities) >= threshold
    tp = int(np.sum(predicted & (targets == 1)))
    fn = int(np.sum(~predicted & (targets == 1)))
    tn = int(np.sum(~predicted & (targets == 0)))
    fp = int(np.sum(predicted & (targets == 0)))
    sensitivity = tp / (tp + fn) if tp + fn else float("nan")
    specificity = tn / (tn + fp) if tn + fp else float("nan")
    if prevalence is None:
        prevalence = float(np.mean(targets == 1)) if len(targets) else float("nan")
    if not 0.0 <= prevalence <= 1.0:
        raise ValueError(f"prevalence must be between 0 and 1, got {prevalence}")
    true_positive_rate, false_positive_rate = sensitivity * prevalence, (1 - specificity) * (1 - prevalence)
    true_negative_rate, false_negative_rate = specificity * (1 - prevalence), (1 - sensitivity) * prevalence
    ppv = (
        true_positive_rate / (true_positive_rate + false_positive_rate)
        if true_positive_rate + false_positive_rate > 0
        else float("nan")
    )
    npv = (
        true_negative_rate / (true_negative_rate + false_negative_rate)
        if true_negative_rate + false_negative_rate > 0
        else float("nan")
    )
    return {
        "threshold": float(threshold),
        "tn": tn,
        "fp": fp,
        "fn": fn,
        "tp": tp,
        "sensitivity": sensitivity,
        "specificity": specificity,
        "prevalence": prevalence,
        "ppv": ppv,
        "npv": npv,
        "accuracy": (tp + tn) / len(targets) if len(targets) else float("nan"),
        "fpr": 1 - specificity,
        "tpr": sensitivity,
    }


SUBGROUP_CHOICES = ("pneumonia: bacterial", "pneumonia: viral", "NORMAL batch IM-", "NORMAL batch NORMAL2-IM-")


def subgroup_rows(frame: pd.DataFrame, name: str = "all") -> pd.DataFrame:
    """The rows of a scored set in one subgroup of :mod:`pneumo_utils.subgroups` (``all`` for every row): the
    threshold lab shows that subgroup's confusion matrix."""
    if name == "all":
        return frame
    if name not in SUBGROUP_CHOICES:
        raise ValueError(f"subgroup must be all or one of {SUBGROUP_CHOICES}, got {name!r}")
    files = frame["file"] if "file" in frame else frame["path"]
    if name.startswith("pneumonia: "):
        kind = name.removeprefix("pneumonia: ")
        keep = [
            target == 1 and pneumonia_kind(file) == kind for file, target in zip(files, frame["target"], strict=True)
        ]
    else:
        batch = name.removeprefix("NORMAL batch ")
        keep = [
            target == 0 and normal_batch(file) == batch for file, target in zip(files, frame["target"], strict=True)
        ]
    return frame[keep].reset_index(drop=True)


def subgroup_names(frames) -> list[str]:
    """``all`` and the subgroups that have rows in any of the scored sets."""
    return ["all"] + [name for name in SUBGROUP_CHOICES if any(len(subgroup_rows(frame, name)) for frame in frames)]


def lab_html(point: dict[str, Any], card_threshold: float | None = None) -> str:
    """The threshold lab's readout: the confusion matrix and the rates, as one small HTML table."""

    def rate(value):
        return "n/a" if value != value else f"{value:.3f}"  # NaN: no positive (or negative) calls at all

    def cell(value, name):
        return f'<td class="pneumo-{name}" style="padding:4px 10px;text-align:right">{value}</td>'

    marker = ""
    if card_threshold is not None:
        marker = (
            f"<p>Card threshold {card_threshold:.4f}"
            + (" (this is it)" if abs(point["threshold"] - card_threshold) < 5e-4 else "")
            + "</p>"
        )
    return (
        '<div class="pneumo-lab">'
        f'<p>Threshold <b class="pneumo-threshold">{point["threshold"]:.3f}</b></p>{marker}'
        '<table style="border-collapse:collapse">'
        "<tr><th></th><th>predicted NORMAL</th><th>predicted PNEUMONIA</th></tr>"
        f"<tr><th>NORMAL</th>{cell(point['tn'], 'tn')}{cell(point['fp'], 'fp')}</tr>"
        f"<tr><th>PNEUMONIA</th>{cell(point['fn'], 'fn')}{cell(point['tp'], 'tp')}</tr></table>"
        f'<p>sensitivity <b class="pneumo-sensitivity">{rate(point["sensitivity"])}</b> &middot; '
        f'specificity <b class="pneumo-specificity">{rate(point["specificity"])}</b> &middot; '
        f"accuracy {rate(point['accuracy'])}</p>"
        f'<p>at a prevalence of {point["prevalence"]:.0%}: PPV <b class="pneumo-ppv">{rate(point["ppv"])}</b> '
        f'&middot; NPV <b class="pneumo-npv">{rate(point["npv"])}</b></p></div>'
    )


def band_html(name: str, mode: dict[str, Any], targets, probabilities) -> str:
    """The threshold lab's view of one operating mode: its band (NORMAL below ``lo``, REFER, PNEUMONIA from
    ``hi``), the decisions per true class, and coverage, decided accuracy and misses with exact 95% intervals."""
    figures = operating.mode_figures(targets, probabilities, mode)
    decisions = operating.decide(probabilities, mode)
    targets = np.asarray(targets).astype(int)

    def count(label: int, decision: str) -> int:
        return int(((targets == label) & (decisions == decision)).sum())

    text = {key: operating.rate_text(figures[key]) for key in ("coverage", "decided_accuracy", "misses")}
    promises = "; ".join(operating.promise_text(promise) for promise in mode.get("promises", []))
    columns = (operating.NORMAL, operating.REFER, operating.PNEUMONIA)
    header = "".join(f"<th>decided {column}</th>" for column in columns)
    body = "".join(
        f"<tr><th>{true}</th>"
        + "".join(
            f'<td class="pneumo-band-{true.lower()}-{column.lower()}" style="padding:4px 10px;text-align:right">'
            f"{count(number, column)}</td>"
            for column in columns
        )
        + "</tr>"
        for number, true in enumerate(CLASS_NAMES)
    )
    return (
        '<div class="pneumo-band">'
        f'<p>Mode <b class="pneumo-mode">{name}</b>: {operating.band_text(mode, 3)}</p>'
        + (f"<p><small>{promises}</small></p>" if promises else "")
        + f'<table style="border-collapse:collapse"><tr><th></th>{header}</tr>{body}</table>'
        f'<p>referred <b class="pneumo-referred">{figures["counts"][operating.REFER]}</b> of {figures["n"]} '
        f"&middot; coverage {text['coverage']}</p>"
        f'<p>decided accuracy <b class="pneumo-decided-accuracy">{text["decided_accuracy"]}</b> '
        f"&middot; misses {text['misses']} (REFER is never counted correct; exact 95% intervals)</p></div>"
    )


def subgroup_band(frame: pd.DataFrame, subgroup: str, card: ModelCard, wanted: str) -> str:
    """:func:`band_html` of the card's mode ``wanted`` on one subgroup of a scored set."""
    rows = subgroup_rows(frame, subgroup)
    name, mode = card.mode(wanted)
    return band_html(name, mode, rows["target"], rows["probability"])


def band_tables(session: Session, card: ModelCard) -> dict[tuple[str, str, str], str]:
    """:func:`subgroup_band` for every scored split, subgroup and operating mode of the card, keyed by
    ``(split, subgroup, mode)``: the explorer's service computes them once for every page."""
    modes = [name for name in operating.MODES if name in (card.get("operating_modes") or {})] or ["single"]
    subgroups = subgroup_names(session.scores.values())
    return {
        (split, subgroup, wanted): subgroup_band(frame, subgroup, card, wanted)
        for split, frame in session.scores.items()
        for subgroup in subgroups
        for wanted in modes
    }


def roc_points(targets, probabilities) -> tuple[np.ndarray, np.ndarray, float]:
    """The ROC curve (false and true positive rates at every distinct score, from (0, 0) to (1, 1)) and its
    area, in NumPy: the explorer's page kernels do without scikit-learn (its figures agree, see the tests).
    The area is NaN when the set lacks a class."""
    targets = np.asarray(targets).astype(int)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    order = np.argsort(-probabilities, kind="mergesort")
    ranked, hits = probabilities[order], targets[order]
    last_of_each = np.r_[np.flatnonzero(np.diff(ranked)), len(ranked) - 1] if len(ranked) else np.array([], int)
    true_positives = np.cumsum(hits)[last_of_each]
    false_positives = last_of_each + 1 - true_positives
    positives, negatives = int(hits.sum()), int(len(hits) - hits.sum())
    tpr = np.r_[0.0, true_positives / positives] if positives else np.r_[0.0, np.zeros(len(last_of_each))]
    fpr = np.r_[0.0, false_positives / negatives] if negatives else np.r_[0.0, np.zeros(len(last_of_each))]
    auc = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2)) if positives and negatives else float("nan")
    return fpr, tpr, auc


class RocPlot:
    """The ROC curve drawn once, as pixels; :meth:`png` draws only the operating point on a copy (fast enough
    for a slider, and without matplotlib: ``pneumo explore``'s model service draws each split's curve once and
    every page's kernel only marks its point)."""

    def __init__(self, targets, probabilities, card_threshold: float | None = None, title: str = "ROC curve"):
        import textwrap

        import matplotlib

        matplotlib.use("Agg")
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.lines import Line2D

        fpr, tpr, auc = roc_points(targets, probabilities)
        figure = Figure(figsize=(3.8, 3.9), dpi=90)
        axis = figure.add_subplot()
        axis.plot(fpr, tpr, lw=1.5, label=f"ROC (AUC {auc:.3f})")
        axis.plot([0, 1], [0, 1], ls=":", color="grey")
        if card_threshold is not None:
            card = operating_point(targets, probabilities, card_threshold)
            axis.plot(card["fpr"], card["tpr"], "s", color="black", mfc="none", label="card threshold")
        handles, _ = axis.get_legend_handles_labels()
        handles.append(Line2D([], [], marker="o", ls="", color="crimson", label="this threshold"))
        axis.set(xlabel="1 - specificity", ylabel="sensitivity", xlim=(-0.02, 1.02), ylim=(-0.02, 1.02))
        axis.set_title(textwrap.fill(title, 42), fontsize=9)  # a split's long name wraps instead of being cut
        axis.legend(handles=handles, loc="lower right", fontsize=8)
        figure.tight_layout()
        canvas = FigureCanvasAgg(figure)
        canvas.draw()
        self.image = np.asarray(canvas.buffer_rgba())[..., :3].copy()
        height = self.image.shape[0]
        (left, bottom), (right, top) = axis.transData.transform([(0.0, 0.0), (1.0, 1.0)])
        self.corners = (float(left), float(height - bottom), float(right), float(height - top))  # pixel x, y

    POINT_COLOUR = (220, 20, 60)  # crimson

    def pixel(self, fpr: float, tpr: float) -> tuple[int, int]:
        """Where (``fpr``, ``tpr``) lies on the image (column, row)."""
        left, bottom, right, top = self.corners
        return round(left + fpr * (right - left)), round(bottom + tpr * (top - bottom))

    def png(self, point: dict[str, Any]) -> bytes:
        image = self.image.copy()
        if point["fpr"] == point["fpr"] and point["tpr"] == point["tpr"]:  # NaN: a set without one class
            cv2.circle(image, self.pixel(point["fpr"], point["tpr"]), 5, self.POINT_COLOUR, -1, cv2.LINE_AA)
        return png_bytes(image)


def split_roc_plot(split: str, frame: pd.DataFrame, card_threshold: float) -> RocPlot:
    """The threshold lab's ROC curve of one scored split, titled with the split's name."""
    return RocPlot(frame["target"], frame["probability"], card_threshold, title=f"ROC, {data.split_label(split)}")


def roc_plots(session: Session, card_threshold: float) -> dict[str, RocPlot]:
    """Each scored split's ROC curve, drawn once (by the explorer's service for every page)."""
    return {split: split_roc_plot(split, frame, card_threshold) for split, frame in session.scores.items()}


# --- choosing images ---------------------------------------------------------------------------------------


def split_order(scored: dict[str, pd.DataFrame]) -> list[str]:
    """The scored splits as the explorer's menu lists them: test-dev first where the run scored it (on
    validation, nearly saturated, a threshold barely moves the point), then validation, then the rest."""
    first = ("test-dev", "validation")
    return sorted(scored, key=lambda name: (first.index(name) if name in first else 2, name))


def first_image(session: Session, threshold: float) -> str | None:
    """The image a page of the explorer opens on: the first of its first split's list (None if empty)."""
    names = split_order(session.scores)
    rows = select_images(session.scores[names[0]], threshold) if names else None
    return None if rows is None or not len(rows) else str(rows["path"].iloc[0])


def select_images(
    frame: pd.DataFrame, threshold: float, label: str = "all", outcome: str = "all", search: str = ""
) -> pd.DataFrame:
    """The rows of a scored set with this label and this outcome at ``threshold`` (``all`` for any), whose
    file name contains ``search`` (ignoring case; empty for any)."""
    if label not in LABELS:
        raise ValueError(f"label must be one of {LABELS}, got {label!r}")
    if outcome not in OUTCOMES:
        raise ValueError(f"outcome must be one of {OUTCOMES}, got {outcome!r}")
    outcomes = [
        outcome_of(row_label, probability, threshold)
        for row_label, probability in zip(frame["label"], frame["probability"], strict=True)
    ]
    chosen = frame.assign(outcome=outcomes)
    if label != "all":
        chosen = chosen[chosen["label"] == label]
    if outcome != "all":
        chosen = chosen[chosen["outcome"] == outcome]
    search = search.strip().lower()
    if search:
        names = chosen["file"] if "file" in chosen else chosen["path"]
        chosen = chosen[[search in str(name).lower() for name in names]]
    return chosen.reset_index(drop=True)


UPLOAD_LIMIT = 32 * 2**20  # an upload this large or larger is refused in one line (a chest film is 0.1-10 MB)
# The browser sends an upload to the page's kernel as one websocket message; the server accepts messages up to
# this size (Voilà's tornado default is 10 MB, and a larger message dropped the page's connection in silence).
# Above it the page still loses its connection: say so where uploads are offered.
UPLOAD_MESSAGE_LIMIT = 128 * 2**20


def read_upload(name: str, content: bytes, preprocessing: Preprocessing) -> np.ndarray:
    """An uploaded file through the project's one image reader; errors name the uploaded file, as the
    command line names the file it was given. A file of :data:`UPLOAD_LIMIT` or more is refused unread."""
    safe = Path(name).name or "upload"
    if len(content) >= UPLOAD_LIMIT:
        raise ImageReadError(
            f"{safe}: {len(content) / 2**20:.1f} MB, more than the explorer reads ({UPLOAD_LIMIT / 2**20:.0f} MB); "
            "pneumo predict reads files of any size"
        )
    with tempfile.TemporaryDirectory(prefix="pneumo-upload-") as folder:
        path = Path(folder) / safe
        path.write_bytes(bytes(content))
        try:
            return read_image(path, preprocessing, for_the_model=True)
        except ImageReadError as error:
            raise ImageReadError(str(error).replace(str(path), safe)) from None


# --- what changes a prediction -----------------------------------------------------------------------------


def stressed(
    raw: np.ndarray, preprocessing: Preprocessing, gamma: float = 1.0, contrast: float = 1.0, blur: float = 0.0
) -> np.ndarray:
    """One resized uint8 image after an exposure (gamma), a contrast factor around mid-grey and a Gaussian
    blur (sigma in pixels), then the model's own finishing steps; 1, 1, 0 leave it unchanged."""
    if gamma <= 0 or contrast < 0 or blur < 0:
        raise ValueError(f"gamma must be > 0, contrast and blur >= 0 (got {gamma}, {contrast}, {blur})")
    image = raw.astype(np.float32)
    if gamma != 1.0:
        image = 255.0 * (image / 255.0) ** gamma
    if contrast != 1.0:
        image = (image - 127.5) * contrast + 127.5
    if blur > 0:
        image = cv2.GaussianBlur(image, (0, 0), blur)
    return after_resize(np.clip(image, 0, 255).astype(np.uint8), preprocessing)


# --- the model, one image at a time ------------------------------------------------------------------------


class Explorer:
    """A loaded model with its card and a compiled Grad-CAM per target layer: one image in, probability,
    label and heatmap out."""

    def __init__(self, model_path: str | os.PathLike):
        from pneumo_utils import model
        from pneumo_utils.explain import cam
        from pneumo_utils.model.ood import Detector, quality_problem

        self.network, self.card = model.load_model(model_path)
        self.preprocessing, self.threshold = self.card.preprocessing, self.card.threshold
        self.threshold_rule = self.card["threshold"].get("rule", "")
        self.layers = conv_layer_names(self.network) or (
            [MEMBERS_LAST_LAYER] if model.ensemble_members(self.network) else [cam.last_conv_layer_name(self.network)]
        )
        self._explainers: dict[str, Any] = {}

        self.detector = Detector.load(model_path, self.card)  # None: the card names no gate
        self.quality_problem = quality_problem

    def read(self, path: str | os.PathLike) -> np.ndarray:
        return read_image(path, self.preprocessing, for_the_model=True)

    def explain_map(self, image: np.ndarray, method: str = "gradcam", layer: str | None = None) -> dict[str, Any]:
        """Probability of pneumonia, label at the card's threshold, gate verdict and the heatmap map."""
        from pneumo_utils.explain import cam

        layer = layer or self.layers[-1]
        if layer not in self._explainers:  # an ensemble: each member at its own last convolution (or backbone)
            self._explainers[layer] = cam.CamExplainer(self.network, None if layer == MEMBERS_LAST_LAYER else layer)
        maps, probabilities = self._explainers[layer].explain(image[None], method=method)
        probability = float(probabilities[0])
        ood_score = float(self.detector.score(image[None])[0]) if self.detector is not None else None
        quality = None if ood_score is None else self.quality_problem(image)  # what the model cannot read: stopped
        in_distribution = None if ood_score is None else bool(self.detector.in_distribution(ood_score)) and not quality
        label = "PNEUMONIA" if probability >= self.threshold else "NORMAL"
        return {
            "probability": probability,
            "label": operating.OUT_OF_DISTRIBUTION if in_distribution is False else label,
            "would_be_label": label,
            "ood_score": ood_score,
            "in_distribution": in_distribution,
            "quality": quality,
            "map": maps[0],
            "layer": layer,
            "method": method,
        }

    def explain(
        self, image: np.ndarray, method: str = "gradcam", layer: str | None = None, opacity: float = 0.4
    ) -> dict[str, Any]:
        """:meth:`explain_map` and the overlay (RGB) of the map on the image at ``opacity``."""
        result = self.explain_map(image, method, layer)
        result["overlay"] = overlays.overlay(image, result["map"], alpha=opacity)
        return result


MEMBERS_LAST_LAYER = "each member's last convolution"  # the one layer choice of an ensemble


def conv_layer_names(network) -> list[str]:
    """The convolution layers a heatmap can be taken from, input to output (none for an ensemble, whose
    map is the mean of its members' maps at their last convolution)."""
    import keras

    from pneumo_utils.model import ensemble_members

    if ensemble_members(network):
        return []
    return [layer.name for layer in network.layers if isinstance(layer, keras.layers.Conv2D)]


def display_png(image: np.ndarray, width: int = 256) -> bytes:
    """PNG bytes of an image enlarged by a whole factor to about ``width`` pixels (sharp pixels, no blur)."""
    return png_bytes(image, max(1, width // image.shape[1]))


def verdict_html(name: str, result: dict[str, Any], threshold: float, css_class: str = "pneumo-probability") -> str:
    """One line under a heatmap: the file, P(pneumonia), the label at the card's threshold, method and layer."""
    import html

    why = (
        f"the model cannot read it: {html.escape(result['quality'])}"
        if result.get("quality")
        else f"out-of-distribution score {result['ood_score']:.0f}"
    )
    warning = (
        f"<div class='pneumo-ood' style='color:#b00'><b>{operating.VERDICT[0].upper() + operating.VERDICT[1:]}</b> "
        f"({why}): its answer would be {result['would_be_label']}, and it means nothing here.</div>"
        if result.get("in_distribution") is False
        else ""
    )
    return warning + (
        f"<b>{html.escape(name)}</b>: P(pneumonia) = <b class='{css_class}'>{result['probability']:.3f}</b> "
        f"&rarr; <b>{result['label']}</b> at the card's threshold {threshold:.3f} "
        f"({result['method']}, layer {result['layer']})"
    )


def png_bytes(image: np.ndarray, scale: int = 1) -> bytes:
    """A grayscale or RGB array as PNG bytes (RGB channel order), optionally enlarged for display."""
    if scale > 1:
        image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(".png", image)
    if not ok:
        raise ValueError("could not encode the image as PNG")
    return encoded.tobytes()
