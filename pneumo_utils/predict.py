"""Scoring with a saved model: new files (collected, read with the model card's preprocessing, predicted in
batches) and the splits of a data set (:func:`score_split`, :func:`evaluate_saved_model`).

A file that cannot be read gets an error message (naming the file and the problem) instead of a
probability; the other files are still scored.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pneumo_utils import data, evaluate, outputs
from pneumo_utils.config import portable_path
from pneumo_utils.data import CLASS_NAMES
from pneumo_utils.explain import cam, overlays, regions
from pneumo_utils.explain.cam import CamExplainer
from pneumo_utils.images import IMAGE_EXTENSIONS, ImageReadError, Preprocessing, is_image_file, read_image
from pneumo_utils.model import card_split, load_model, operating, predict_probabilities
from pneumo_utils.model.ood import OUT_OF_DISTRIBUTION, quality_problem
from pneumo_utils.records import provenance
from pneumo_utils.subgroups import subgroup_figures


class InputPathError(ValueError):
    """A path given on the command line that does not exist (a usage error)."""


@dataclass
class Scored:
    path: str
    probability: float | None = None
    label: str | None = None
    error: str = ""
    image: np.ndarray | None = None
    ood_score: float | None = None  # how unlike the training X-rays (None: no gate)
    in_distribution: bool | None = None
    quality: str | None = None  # why the model cannot read it (a thumbnail enlarged, JPEG blocks); stopped too
    decision: str | None = None  # NORMAL, PNEUMONIA, REFER or OUT_OF_DISTRIBUTION, by the operating mode


def collect_inputs(paths: list[str | os.PathLike]) -> tuple[list[Path], list[Scored]]:
    """Files as given, folders searched recursively for images (sorted).

    Returns the files, and a failed record for each folder that holds no image (it is an input that
    did not work). A path that does not exist raises :class:`InputPathError`.
    """
    files, problems = [], []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            found = sorted(item for item in path.rglob("*") if item.is_file() and is_image_file(item))
            if not found:
                kinds = ", ".join(IMAGE_EXTENSIONS)
                problems.append(Scored(str(path), error=f"{path}: folder holds no images ({kinds})"))
            files.extend(found)
        elif path.exists():
            files.append(path)
        else:
            raise InputPathError(f"{path}: no such file or folder")
    return files, problems


def read_inputs(files: list[Path], preprocessing: Preprocessing) -> list[Scored]:
    """Read every file; unreadable ones carry their error message."""
    records = []
    for path in files:
        try:
            records.append(Scored(str(path), image=read_image(path, preprocessing, for_the_model=True)))
        except ImageReadError as error:
            records.append(Scored(str(path), error=str(error)))
        except OSError as error:
            records.append(Scored(str(path), error=f"{path}: {error.strerror or error}"))
    return records


def score(
    network, records: list[Scored], threshold: float, batch_size: int = 64, detector=None, mode=None
) -> list[Scored]:
    """Fill in probability, label and decision for the readable records, predicting in batches.

    The label is the card's one threshold; the decision is the operating ``mode``'s (``lo``/``hi``, see
    :mod:`pneumo_utils.model.operating`: NORMAL, PNEUMONIA or REFER; the label when no mode is given). With an
    out-of-distribution ``detector`` (:mod:`pneumo_utils.model.ood`), an input unlike the training X-rays gets
    ``OUT_OF_DISTRIBUTION`` as label and decision instead (its probability is still given), and so does an
    input the model cannot read (:func:`pneumo_utils.model.ood.quality_problem`, which ``quality`` names)."""
    readable = [record for record in records if record.image is not None]
    if readable:
        images = np.stack([r.image for r in readable])
        probabilities = predict_probabilities(network, images, batch_size)
        gate = detector.score(images) if detector is not None else [None] * len(readable)
        for record, probability, ood_score in zip(readable, probabilities, gate, strict=True):
            record.probability = float(probability)
            record.label = CLASS_NAMES[int(probability >= threshold)]
            record.decision = str(operating.decide([probability], mode)[0]) if mode is not None else record.label
            if ood_score is not None:
                record.ood_score = float(ood_score)
                record.quality = quality_problem(record.image)
                record.in_distribution = bool(detector.in_distribution(ood_score)) and record.quality is None
                if not record.in_distribution:
                    record.label = record.decision = OUT_OF_DISTRIBUTION
    return records


def predict_files(
    network,
    card: dict,
    files: list[Path],
    batch_size: int = 64,
    progress: bool = True,
    on_batch=None,
    detector=None,
    mode=None,
) -> list[Scored]:
    """Read and score ``files`` a batch at a time (memory stays flat for long lists); ``mode`` is the operating
    mode whose decision each record gets (:meth:`ModelCard.mode`; None: the card's default mode).

    ``on_batch(records)`` is called with each scored batch while its images are still in memory (to
    write Grad-CAM overlays, say); the returned records no longer hold images.
    """
    from tqdm.auto import tqdm

    preprocessing, threshold = card.preprocessing, card.threshold
    mode = card.mode()[1] if mode is None else mode
    results = []
    with tqdm(total=len(files), unit="image", disable=not progress or len(files) <= batch_size, file=sys.stderr) as bar:
        for start in range(0, len(files), batch_size):
            records = score(
                network,
                read_inputs(files[start : start + batch_size], preprocessing),
                threshold,
                batch_size,
                detector,
                mode,
            )
            if on_batch is not None:
                on_batch(records)
            for record in records:
                record.image = None
            results.extend(records)
            bar.update(len(records))
    return results


MAX_STEM = 100  # characters of an input's name kept in its overlay's name (file systems allow 255 bytes)


def overlay_name(path: str | os.PathLike, suffix: str = "_gradcam.png") -> tuple[str, str | None]:
    """A file name for an input's overlay, and why it differs from the input's own stem (or None).

    A stem that is not valid UTF-8 (a Latin-1 name on a UTF-8 system) has its undecodable bytes written as
    ``xNN``; a stem longer than :data:`MAX_STEM` characters is cut and given a short hash, so that two long
    names stay distinct.
    """
    import hashlib

    raw = os.fsencode(Path(path).stem)
    stem = raw.decode("utf-8", "backslashreplace").replace("\\x", "x")
    reason = None if stem.encode("utf-8", "surrogateescape") == raw else "name not valid UTF-8: bytes written as xNN"
    stem = "".join(character if character.isprintable() and character not in "/\\" else "_" for character in stem)
    if len(stem) > MAX_STEM:
        stem = f"{stem[:MAX_STEM]}-{hashlib.sha256(raw).hexdigest()[:8]}"
        reason = (reason + "; " if reason else "") + f"name longer than {MAX_STEM} characters: shortened"
    return stem + suffix, reason


class OverlayWriter:
    """Writes one Grad-CAM overlay PNG per scored image (original beside overlay, with probability and label).

    Each overlay is written as every result is (:mod:`pneumo_utils.outputs`): whole or not at all, never over an
    existing file without ``overwrite``; one that cannot be written is noted in :attr:`failures` (one line) and
    does not stop the others, nor the predictions. :attr:`statistics` lists only overlays that were written.
    """

    def __init__(
        self,
        network,
        threshold: float,
        out: str | os.PathLike,
        method: str = "gradcam",
        layer_name: str | None = None,
        overwrite: bool = False,
    ):

        self.explainer = CamExplainer(network, layer_name)
        self.threshold, self.out, self.method, self.overwrite = threshold, Path(out), method, overwrite
        self.used_names: set[str] = set()
        self.statistics: dict[str, dict] = {}
        self.failures: dict[str, str] = {}

    def __call__(self, records: list[Scored]) -> None:
        import cv2

        readable = [record for record in records if record.image is not None]
        if not readable:
            return
        images = np.stack([record.image for record in readable])
        probabilities = np.array([record.probability for record in readable])
        cams = cam.predicted_class_maps(self.explainer, images, probabilities, self.threshold, self.method)
        for record, heatmap in zip(readable, cams, strict=True):
            name, renamed = overlay_name(record.path)
            while name in self.used_names:
                name = f"{Path(name).stem}_2.png"
            self.used_names.add(name)
            shown = outputs.display(Path(record.path).name)
            caption = [
                f"{shown}: P(pneumonia) = {record.probability:.3f} -> {record.label}",
                f"threshold {self.threshold:.3f}; {self.method} heatmap of {record.label}",
            ]
            picture = overlays.side_by_side(record.image, heatmap, caption)
            encoded, payload = cv2.imencode(".png", cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
            try:
                if not encoded:
                    raise outputs.OutputError(f"{outputs.display(self.out / name)}: the overlay could not be encoded")
                outputs.write_bytes(self.out / name, payload.tobytes(), overwrite=self.overwrite)
            except outputs.OutputError as error:
                self.failures[record.path] = str(error)
                continue
            self.statistics[record.path] = {
                "overlay": name,
                "explained_class": record.label,
                "cam": regions.cam_statistics(heatmap),
                **({"overlay_name_note": renamed} if renamed else {}),
            }


def score_split(network, card: dict, index, split: str, batch_size: int = 64):
    """The rows of one split (see ``data.select_split``) that could be read, with a ``probability`` column,
    scored with the card's preprocessing; and how many rows the split had before unreadable files."""
    images, _, kept, total = card_split(card, index, split)
    return kept.assign(probability=predict_probabilities(network, images, batch_size)), total


def evaluation_record(model_path, card: dict, index, data_dir, scored: dict) -> dict:
    """Provenance of an evaluation: the model and its commit, the data fingerprint, the splits and their
    sizes (``scored`` maps split name to ``(rows, images_in_split)``), the bootstrap, library versions."""
    return {
        "model": portable_path(model_path),
        "model_git_commit": card.get("git_commit"),
        "model_trained": card.get("date"),
        "data_dir": portable_path(data_dir),
        "data_fingerprint": data.dataset_fingerprint(index),
        "splits": {
            name: {"images_in_split": total, "scored": int(len(rows)), "unreadable_skipped": int(total - len(rows))}
            for name, (rows, total) in scored.items()
        },
        "threshold": card["threshold"],
        "bootstrap": {"resamples": evaluate.BOOTSTRAP_RESAMPLES, "seed": evaluate.BOOTSTRAP_SEED},
        "evaluation": provenance(),
    }


def evaluate_saved_model(model_path, data_dir, split: str = "test", batch_size: int = 64) -> tuple[dict, dict]:
    """Score a saved model on one split with its card's preprocessing and threshold.

    ``split="val"`` rebuilds the patient-grouped validation split with the seed and fraction stored in
    the card, so it is exactly the split the threshold was chosen on. Returns the metrics (the keys of
    every metrics JSON) and the :func:`evaluation_record`.
    """
    index = data.index_dataset(data_dir)  # layout errors first: they need no model
    network, card = load_model(model_path)
    rows, total = score_split(network, card, index, split, batch_size)
    present = set(rows["target"].astype(int))
    if present != {0, 1}:
        missing = [name for number, name in enumerate(data.CLASS_NAMES) if number not in present]
        raise data.DatasetLayoutError(
            f"{split} split of {data_dir}: no readable {' or '.join(missing)} image "
            f"({total - len(rows)} of {total} unreadable); its figures need both classes"
        )
    metrics = split_figures(rows, card.threshold, card)
    return metrics, evaluation_record(model_path, card, index, data_dir, {split: (rows, total)})


def split_figures(rows, threshold: float, card=None) -> dict:
    """The figures of one scored split (``rows`` with ``target`` and ``probability``) at ``threshold``: the
    keys of every metrics JSON, with bootstrap CIs, ``subgroups``, for whom it works, and, given the model's
    ``card``, ``modes``: what each of its operating modes decides (coverage, decided accuracy, sensitivity,
    specificity, misses, each with an exact 95% interval). ``pneumo evaluate`` and notebook 03 both write these."""
    targets, probabilities = rows["target"].to_numpy(), rows["probability"].to_numpy()
    metrics = evaluate.evaluate_probabilities(targets, probabilities, threshold)
    metrics["subgroups"] = subgroup_figures(rows, threshold)
    if card is not None:
        metrics["modes"] = operating.modes_figures(targets, probabilities, card)
    return metrics
