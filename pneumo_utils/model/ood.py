"""Know what it does not know: an out-of-distribution gate in front of the model.

The classifier answers with confidence about anything (a grey square gets PNEUMONIA, p = 0.999). The gate
scores how unlike the training X-rays an input is, *before* its answer is trusted:

- **features**: the preprocessed image (what the model sees) shrunk to 24 x 24 pixels, plus its 16-bin
  intensity histogram and a few layout statistics (mean, spread, left-right and top-bottom balance). Chest
  films share a layout (two dark lung fields, a bright mediastinum, bright bones at the edges) and an
  intensity profile; photographs, plots, text, noise, turned, inverted, cropped or badly exposed images do not;
- **score**: the squared Mahalanobis distance of those features from the training X-rays, with a Ledoit-Wolf
  shrinkage covariance (stable with a few thousand images in ~600 dimensions);
- **threshold**: fitted on the training side of the patient-grouped split only; the threshold is the
  ``quantile`` (99%) of the scores of the validation side, so about 1% of in-distribution X-rays are stopped.

The detector is independent of the network, so one gate serves a single model and an ensemble alike, and
it costs a few milliseconds per image. The alternative measured beside it in ``pneumo bench ood`` is the
model's own confidence (the absolute logit, "max-logit"), which fails exactly where the gate is needed.

Stored beside the model as ``<model>.ood.npz`` and named in the card (``ood``); ``predict`` and the explorer
read it from there.
"""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pneumo_utils import data, reading
from pneumo_utils.data import make_dataset
from pneumo_utils.model import load_model, save_model
from pneumo_utils.model.calibrate import logit_model
from pneumo_utils.model.inference import card_split, predict_probabilities
from pneumo_utils.model.operating import OUT_OF_DISTRIBUTION, VERDICT  # noqa: F401 - re-exported
from pneumo_utils.outputs import first_line, refuse_committed, write_bytes

SIDE = 24
BINS = 16
QUANTILE = 0.99
MIN_TRAIN, MIN_VALIDATION = 10, 5


class OodError(ValueError):
    """A detector file that is missing, corrupt or does not match its card."""


FRAME_LEVEL = 12  # a row or column of the model's input darker than this on average is part of a black frame
FRAME_MAX = 0.25  # at most this share of the side is taken as frame, from each edge


def without_frame(image: np.ndarray) -> np.ndarray:
    """The image without the black frame a scanned plate can have (rows and columns from each edge whose mean is
    below ``FRAME_LEVEL``, at most ``FRAME_MAX`` of the side), enlarged back to its size; unchanged without one."""
    size = image.shape[0]
    limit = int(size * FRAME_MAX)

    def inner(means: np.ndarray) -> tuple[int, int]:
        first = next((i for i in range(limit) if means[i] >= FRAME_LEVEL), limit)
        last = next((i for i in range(limit) if means[-1 - i] >= FRAME_LEVEL), limit)
        return first, len(means) - last

    top, bottom = inner(image.mean(axis=1))
    left, right = inner(image.mean(axis=0))
    if (top, bottom, left, right) == (0, image.shape[0], 0, image.shape[1]):
        return image
    return cv2.resize(image[top:bottom, left:right], (image.shape[1], size), interpolation=cv2.INTER_AREA)


def features(images: np.ndarray, crop_frame: bool = False) -> np.ndarray:
    """``(n, s, s)`` uint8 images (the model's input) -> ``(n, d)`` float64 features: the image shrunk to
    ``SIDE x SIDE``, its intensity histogram and percentiles, its layout (left-right and top-bottom balance) and
    its texture at full resolution (how sharp, how flat, how noisy: what a shrunken image averages away).
    With ``crop_frame`` (gates fitted since stop 33), of the image without its black frame (:func:`without_frame`)."""
    images = np.asarray(images)
    if images.ndim == 2:
        images = images[None]
    rows = []
    for image in images:
        image = without_frame(image) if crop_frame else image
        full = image.astype(np.float32) / 255.0
        small = cv2.resize(full, (SIDE, SIDE), interpolation=cv2.INTER_AREA)
        histogram = np.histogram(image, bins=BINS, range=(0, 256))[0] / image.size
        half = SIDE // 2
        gradient_x, gradient_y = np.abs(np.diff(full, axis=1)), np.abs(np.diff(full, axis=0))
        laplacian = np.abs(cv2.Laplacian(full, cv2.CV_32F))
        smooth = cv2.GaussianBlur(full, (0, 0), 2.0)
        fine = cv2.GaussianBlur(full, (0, 0), 0.7)
        centred = small - small.mean()
        mirrored = float((centred * centred[:, ::-1]).sum() / ((centred * centred).sum() + 1e-9))
        layout = [
            mirrored,  # chest films are nearly left-right symmetric; crops, pages and photographs are not
            small.mean(),
            small.std(),
            small[:, :half].mean() - small[:, half:].mean(),
            small[:half].mean() - small[half:].mean(),
            small[: SIDE // 4].mean(),
            small[-SIDE // 4 :].mean(),
        ]
        texture = [
            gradient_x.mean(),
            gradient_y.mean(),
            laplacian.mean(),
            np.mean(gradient_x < 1 / 255),
            np.abs(full - smooth).mean(),
            np.abs(full - fine).mean(),
            np.abs(full - fine).std(),
            np.abs(np.diff(small, axis=0)).mean(),
            np.abs(np.diff(small, axis=1)).mean(),
        ]
        percentiles = np.percentile(full, [2, 10, 25, 50, 75, 90, 98])
        rows.append(np.concatenate([small.ravel(), histogram, percentiles, layout, texture]))
    return np.asarray(rows, dtype=np.float64)


class Detector:
    """The fitted gate: mean and precision matrix of the training features, and the threshold."""

    def __init__(
        self,
        mean: np.ndarray,
        precision: np.ndarray,
        threshold: float,
        image_size: int,
        fitted_on: dict[str, Any] | None = None,
        scale: np.ndarray | None = None,
        crop_frame: bool = False,
    ):
        self.crop_frame = bool(crop_frame)
        self.mean, self.precision = np.asarray(mean), np.asarray(precision, dtype=np.float64)
        self.scale = np.ones_like(self.mean) if scale is None else np.asarray(scale)
        self.threshold, self.image_size = float(threshold), int(image_size)
        self.fitted_on = fitted_on or {}

    @classmethod
    def fit(
        cls,
        train_images: np.ndarray,
        validation_images: np.ndarray,
        quantile: float = QUANTILE,
        fitted_on: dict[str, Any] | None = None,
        real_films: bool = True,
        seed: int = 0,
    ) -> Detector:
        """Fit on ``train_images``; the threshold is the ``quantile`` of ``validation_images``' scores.

        With ``real_films`` (the default since stop 33) the gate ignores a black frame (:func:`without_frame`),
        and both sides get one copy of each image with burned-in text or a turn of up to 10 degrees, so that
        the marks of real films pass (issue 29, class 8). ``seed`` draws those copies."""
        from sklearn.covariance import LedoitWolf

        if len(train_images) < MIN_TRAIN or len(validation_images) < MIN_VALIDATION:
            raise ValueError(
                f"the gate needs at least {MIN_TRAIN} training and {MIN_VALIDATION} validation images, got "
                f"{len(train_images)} and {len(validation_images)}"
            )
        films = (len(train_images), len(validation_images))  # before the marked copies
        if real_films:
            rng = np.random.default_rng(seed)
            train_images = np.concatenate([train_images, np.stack([film_marks(image, rng) for image in train_images])])
            validation_images = np.concatenate(
                [validation_images, np.stack([film_marks(image, rng) for image in validation_images])]
            )
        train = features(train_images, crop_frame=real_films)
        # every feature on the scale of its spread among the training X-rays, so the shrinkage of the
        # covariance does not drown the few histogram and texture features in the many pixel ones
        scale = train.std(axis=0) + 1e-6
        estimate = LedoitWolf().fit(train / scale)
        detector = cls(
            estimate.location_ * scale,
            estimate.precision_,
            np.inf,
            train_images.shape[-1],
            fitted_on,
            scale,
            crop_frame=real_films,
        )
        validation_scores = detector.score(validation_images)
        detector.threshold = float(np.quantile(validation_scores, quantile, method="higher"))  # a score of the set
        detector.fitted_on = {
            **(fitted_on or {}),
            "train_images": int(films[0]),
            "validation_images": int(films[1]),
            "quantile": quantile,
            # of the validation films themselves (the marked copies set the threshold, and are not films)
            "validation_stopped": float(np.mean(validation_scores[: films[1]] > detector.threshold)),
            **(
                {"real_films": "black frame ignored; each image also with burned-in text or a turn of <= 10 deg"}
                if real_films
                else {}
            ),
        }
        return detector

    def score(self, images: np.ndarray) -> np.ndarray:
        """The out-of-distribution score of each image (larger: less like the training X-rays)."""
        centred = (features(images, crop_frame=self.crop_frame) - self.mean) / self.scale
        return np.einsum("ij,jk,ik->i", centred, self.precision, centred)

    def in_distribution(self, scores: np.ndarray) -> np.ndarray:
        return np.asarray(scores) <= self.threshold

    def save(self, path: str | os.PathLike) -> dict[str, Any]:
        """Write the detector (``.npz``) and return the card's ``ood`` entry naming it."""
        buffer = io.BytesIO()
        np.savez_compressed(  # float32: half the size, and the scores differ in the 6th digit at most
            buffer,
            mean=self.mean,
            precision=self.precision.astype(np.float32),
            threshold=self.threshold,
            image_size=self.image_size,
            scale=self.scale,
            **({"crop_frame": np.array(1)} if self.crop_frame else {}),  # absent in gates fitted before stop 33
        )
        payload = buffer.getvalue()
        refuse_committed(path, "the gate to write")  # saved_models/ changes only through pneumo promote
        write_bytes(path, payload)
        return {
            "file": Path(path).name,
            "sha256": hashlib.sha256(payload).hexdigest(),
            "method": f"Mahalanobis distance (Ledoit-Wolf) of {SIDE}x{SIDE} pixels, a {BINS}-bin histogram "
            "and layout statistics of the model input, from the training side of the split",
            "threshold": self.threshold,
            "threshold_rule": f"{self.fitted_on.get('quantile', QUANTILE):.0%} "
            "quantile of the validation split's scores",
            **self.fitted_on,
        }

    @classmethod
    def load(cls, model_path: str | os.PathLike, card: dict[str, Any]) -> Detector | None:
        """The detector the card names (beside the model), None when the card names none."""
        entry = card.get("ood")
        if not entry:
            return None
        path = detector_path(model_path)  # always beside the model, named after it (a copy keeps the pair)
        try:
            payload = reading.read_bytes(path, reading.GATE_LIMIT, "the out-of-distribution gate")
        except reading.FileRefused as error:
            raise OodError(f"{error}; the model card names this gate (pass --no-ood to predict without it)") from None
        if entry.get("sha256") and hashlib.sha256(payload).hexdigest() != entry["sha256"]:
            raise OodError(f"{path}: does not match the SHA-256 in the model card")
        try:  # its arrays may not inflate past a bound either, whatever the hash says
            reading.check_archive(
                io.BytesIO(payload), "the out-of-distribution gate", reading.GATE_LIMIT * 4, {}, name=path
            )
        except reading.FileRefused as error:
            raise OodError(f"{error}; refit it with pneumo gate") from None
        return cls.from_arrays(
            _stored_arrays(payload, path),
            path,
            {key: value for key, value in entry.items() if key not in ("file", "sha256")},
        )

    @classmethod
    def from_arrays(cls, stored: dict[str, np.ndarray], path, fitted_on: dict[str, Any]) -> Detector:
        """A detector from its saved arrays, each checked for its kind and shape: a gate whose file matches
        its hash can still be wrong inside (written by other code, or by hand), and a NaN threshold would
        stop every image in silence."""

        def refuse(problem: str) -> OodError:
            return OodError(f"{path}: not a usable out-of-distribution gate ({problem}); refit it with pneumo gate")

        for key in GATE_ARRAYS:
            if key not in stored:
                raise refuse(f"it has no {key!r} array")
            if stored[key].dtype.kind not in "fiu":
                raise refuse(f"its {key!r} holds {stored[key].dtype} values, not numbers")
        mean, precision, scale = stored["mean"], stored["precision"], stored["scale"]
        threshold, image_size = stored["threshold"], stored["image_size"]
        if threshold.shape != () or image_size.shape != ():
            raise refuse("its threshold and image size must be single numbers")
        if not (np.isfinite(threshold) and float(threshold) > 0):
            raise refuse(f"its threshold is {float(threshold)}; it must be a positive finite number")
        if not (16 <= int(image_size) <= 4096) or float(image_size) != int(image_size):
            raise refuse(f"its image size is {float(image_size):g}")
        dimension = features(np.zeros((1, int(image_size), int(image_size)), np.float32)).shape[1]
        if mean.shape != (dimension,) or scale.shape != (dimension,) or precision.shape != (dimension, dimension):
            raise refuse(
                f"its arrays have shapes {mean.shape}, {precision.shape}, {scale.shape}; its image size needs "
                f"({dimension},), ({dimension}, {dimension}), ({dimension},)"
            )
        if not all(np.isfinite(array).all() for array in (mean, precision, scale)) or (scale <= 0).any():
            raise refuse("its mean, precision or scale holds values that are not finite, or a scale not above 0")
        crop_frame = stored.get("crop_frame", np.array(0))
        if crop_frame.shape != () or crop_frame.dtype.kind not in "biu" or int(crop_frame) not in (0, 1):
            raise refuse("its crop_frame must be 0 or 1")
        return cls(mean, precision, float(threshold), int(image_size), fitted_on, scale, crop_frame=bool(crop_frame))


GATE_ARRAYS = ("mean", "precision", "threshold", "image_size", "scale")


def _stored_arrays(payload: bytes, path) -> dict[str, np.ndarray]:
    """The gate file's arrays (no pickled objects), or one line saying why they cannot be read."""
    try:
        with np.load(io.BytesIO(payload), allow_pickle=False) as stored:
            return {key: np.asarray(stored[key]) for key in stored.files}
    except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile) as error:
        raise OodError(
            f"{path}: not a usable out-of-distribution gate ({type(error).__name__}: {first_line(error)}); "
            "refit it with pneumo gate"
        ) from None


def detector_path(model_path: str | os.PathLike) -> Path:
    """Where a model's detector lives: ``pneumonia_cnn.keras`` -> ``pneumonia_cnn.ood.npz``."""
    model_path = Path(model_path)
    return model_path.with_name(model_path.stem + ".ood.npz")


# --- what a real film carries, and what the model cannot read ------------------------------------------------
#
# Real films carry burned-in text (a side marker, a date, "PORTABLE"), a black frame where the plate was
# scanned, and a few degrees of rotation: the gate should pass them. A film enlarged from a few dozen pixels,
# or saved at a very low JPEG quality, has lost what the model reads: it should be stopped, whatever its
# layout. The two quality checks below are one-sided limits on the model's input, set from the training
# films of the real data (``pneumo bench ood`` measures both sides; the suite checks that no training film of
# ``../shared``, where it exists, trips them).

FILM_MARKS = ("R", "L", "AP", "PA", "PORTABLE", "SUPINE", "12/03/2026", "ID 4821", "ER")


def burned_in_text(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One to three marks (a side letter, a date, "PORTABLE") in white, near the film's corners."""
    out, size = image.copy(), image.shape[0]
    for _ in range(int(rng.integers(1, 4))):
        text = str(rng.choice(FILM_MARKS))
        scale = size / 400 * rng.uniform(0.8, 1.6)
        x = int(rng.uniform(0.03, 0.55) * size)
        y = int((rng.uniform(0.06, 0.16) if rng.random() < 0.5 else rng.uniform(0.88, 0.97)) * size)
        cv2.putText(out, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, 255, max(1, round(size / 200)), cv2.LINE_AA)
    return out


def black_border(image: np.ndarray, fraction: float) -> np.ndarray:
    """The film shrunk inside a black frame ``fraction`` of its side wide (a scanned plate)."""
    size = image.shape[0]
    margin = round(size * fraction)
    inner = max(1, size - 2 * margin)
    out = np.zeros_like(image)
    out[margin : margin + inner, margin : margin + inner] = cv2.resize(
        image, (inner, inner), interpolation=cv2.INTER_AREA
    )
    return out


def rotated(image: np.ndarray, degrees: float) -> np.ndarray:
    """The film turned by ``degrees`` about its centre, the corners black."""
    size = image.shape[0]
    turn = cv2.getRotationMatrix2D((size / 2, size / 2), degrees, 1.0)
    return cv2.warpAffine(image, turn, (size, size), flags=cv2.INTER_LINEAR, borderValue=0)


def enlarged_from(image: np.ndarray, side: int) -> np.ndarray:
    """The film shrunk to ``side`` pixels and enlarged back (what is left of a thumbnail)."""
    size = image.shape[0]
    small = cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (size, size), interpolation=cv2.INTER_LINEAR)


def jpeg_at(image: np.ndarray, quality: int) -> np.ndarray:
    """The film saved as a JPEG of ``quality`` (1-100) and read back."""
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("could not encode the image as JPEG")
    return cv2.imdecode(encoded, cv2.IMREAD_GRAYSCALE)


def film_marks(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One random mark of a real film for the gate's reference: burned-in text, or a turn of up to 10 degrees.
    (A black frame is not among them: the gate ignores frames instead; taught as a copy, frames made dark
    films look like films, and an under-exposed one passed half the time.)"""
    if rng.random() < 0.5:
        return burned_in_text(image, rng)
    return rotated(image, float(rng.uniform(-10, 10)))


def fine_detail(image: np.ndarray) -> float:
    """How much of the image lies above half its resolution: the mean difference between it and itself shrunk
    to half its side and enlarged back, over its mean spread. A film enlarged from a thumbnail has almost none."""
    full = np.asarray(image, np.float32)
    size = full.shape[0]
    half = cv2.resize(full, (max(1, size // 2), max(1, size // 2)), interpolation=cv2.INTER_AREA)
    back = cv2.resize(half, (full.shape[1], size), interpolation=cv2.INTER_LINEAR)
    return float(np.abs(full - back).mean() / (np.abs(full - full.mean()).mean() + 1e-6))


def block_edges(image: np.ndarray) -> float:
    """How much sharper the edges of an 8-pixel grid are than the others (about 1 for a film; a JPEG of very
    low quality, saved at the model's size, shows its 8 x 8 blocks)."""
    full = np.asarray(image, np.float32)
    # the median over grid lines: a frame's edge or a ruler that falls on a few of them does not count
    across, down = np.abs(np.diff(full, axis=1)).mean(axis=0), np.abs(np.diff(full, axis=0)).mean(axis=1)
    on_grid = np.median(across[7::8]) + np.median(down[7::8])
    off_grid = np.delete(across, np.s_[7::8]).mean() + np.delete(down, np.s_[7::8]).mean()
    return float(on_grid / max(off_grid, 0.5))  # a flat image (no edges anywhere) has no blocks either


# Limits, measured on the 4,470 training films of the patient-grouped split at 160 px (results/experiments_notes.md,
# "Gate families"): the least detailed film has FINE_DETAIL_MEASURED_MIN, the blockiest BLOCK_EDGES_MEASURED_MAX.
FINE_DETAIL_MIN = 0.02  # below: as if enlarged from a third of the model's side or less
BLOCK_EDGES_MAX = 2.0  # above: the 8 x 8 blocks of a very low JPEG quality


def quality_problem(image: np.ndarray) -> str | None:
    """Why the model cannot read this input (one line), or None: too little fine detail (a thumbnail
    enlarged) or visible compression blocks. Checked on the model's input, beside the gate."""
    detail = fine_detail(image)
    if detail < FINE_DETAIL_MIN:
        return f"too little fine detail ({detail:.3f}; films have {FINE_DETAIL_MIN} or more): an enlarged thumbnail?"
    blocks = block_edges(image)
    if blocks > BLOCK_EDGES_MAX:
        return f"compression blocks ({blocks:.1f}x sharper on the 8-pixel grid): saved at a very low JPEG quality?"
    return None


# --- the out-of-distribution benchmark: inputs a user could feed the model, made here ------------------------


def _render(draw, size: int) -> np.ndarray:
    """A matplotlib drawing as a ``size x size`` grayscale uint8 image."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure = plt.figure(figsize=(4, 4), dpi=64)
    draw(figure)
    figure.canvas.draw()
    rgba = np.asarray(figure.canvas.buffer_rgba())
    plt.close(figure)
    gray = cv2.cvtColor(rgba[:, :, :3], cv2.COLOR_RGB2GRAY)
    return cv2.resize(gray, (size, size), interpolation=cv2.INTER_AREA)


def _photographs(size: int) -> list[np.ndarray]:
    """The photographs and pictures shipped with matplotlib (no download)."""
    import matplotlib.cbook

    pictures = []
    for name in ("grace_hopper.jpg", "logo2.png", "Minduka_Present_Blue_Pack.png"):
        try:
            path = matplotlib.cbook.get_sample_data(name, asfileobj=False)
        except (OSError, ValueError):
            continue
        picture = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if picture is not None:
            pictures.append(cv2.resize(picture, (size, size), interpolation=cv2.INTER_AREA))
    return pictures


def ood_families(xrays: np.ndarray, size: int, seed: int = 0, per_family: int = 24) -> dict[str, np.ndarray]:
    """Out-of-distribution inputs by family, ``{family: (n, size, size) uint8}``: made from nothing (uniform,
    gradients, noise, text, plots, screenshot-like pages, matplotlib's sample photographs) or from the
    in-distribution ``xrays`` (turned 90 and 180 degrees, inverted, a corner cropped and stretched, over- and
    under-exposed)."""
    rng = np.random.default_rng(seed)
    n = per_family
    ramp = np.linspace(0, 255, size, dtype=np.float32)
    families: dict[str, list[np.ndarray]] = {
        "uniform": [np.full((size, size), value, np.uint8) for value in rng.integers(0, 256, n)],
        "gradient": [
            (np.tile(ramp, (size, 1)) if i % 2 == 0 else np.tile(ramp[:, None], (1, size))).astype(np.uint8)[
                :, :: (1 if i % 4 < 2 else -1)
            ]
            for i in range(n)
        ],
        "noise": [
            (
                rng.integers(0, 256, (size, size)) if i % 2 == 0 else np.clip(rng.normal(128, 40, (size, size)), 0, 255)
            ).astype(np.uint8)
            for i in range(n)
        ],
    }
    words = ["pneumonia", "chest X-ray", "hello world", "Lorem ipsum dolor", "p = 0.93", "NORMAL", "report 2026"]
    families["text"] = [
        _render(lambda f, i=i: f.text(0.05, 0.5, "\n".join(rng.choice(words, 3)), fontsize=14 + i % 10), size)
        for i in range(n)
    ]

    def plot(figure, i):
        axis = figure.add_subplot()
        x = np.linspace(0, 10, 50)
        (axis.plot(x, np.sin(x + i)) if i % 2 == 0 else axis.bar(range(6), rng.uniform(1, 5, 6)))
        axis.set_title(f"figure {i}")

    families["plots"] = [_render(lambda f, i=i: plot(f, i), size) for i in range(n)]

    def page(figure, i):
        figure.patch.set_facecolor("white")
        for row in range(6):
            figure.patches.append(
                __import__("matplotlib").patches.Rectangle(
                    (0.05, 0.9 - row * 0.15),
                    rng.uniform(0.3, 0.9),
                    0.06,
                    transform=figure.transFigure,
                    color=str(rng.uniform(0.2, 0.8)),
                )
            )
        figure.text(0.05, 0.95, "Pneumonia explorer", fontsize=12)

    families["screenshots"] = [_render(lambda f, i=i: page(f, i), size) for i in range(n)]
    photographs = _photographs(size)
    if photographs:
        families["photographs"] = [
            np.roll(photographs[i % len(photographs)], int(rng.integers(-size // 8, size // 8)), axis=1)
            for i in range(n)
        ]
    chosen = xrays[rng.choice(len(xrays), size=min(n, len(xrays)), replace=False)]
    families["turned 90"] = [np.rot90(image).copy() for image in chosen]
    families["turned 180"] = [np.rot90(image, 2).copy() for image in chosen]
    families["inverted"] = [255 - image for image in chosen]
    quarter = size // 3
    families["corner crop"] = [
        cv2.resize(
            image[:quarter, :quarter] if i % 2 == 0 else image[-quarter:, -quarter:],
            (size, size),
            interpolation=cv2.INTER_LINEAR,
        )
        for i, image in enumerate(chosen)
    ]
    families["over-exposed"] = [
        np.clip(image.astype(np.float32) * 2.5 + 60, 0, 255).astype(np.uint8) for image in chosen
    ]
    families["under-exposed"] = [(image.astype(np.float32) * 0.2).astype(np.uint8) for image in chosen]
    return {name: np.stack(images).astype(np.uint8) for name, images in families.items()}


def film_families(xrays: np.ndarray, seed: int = 0, per_family: int = 24) -> dict[str, dict[str, np.ndarray]]:
    """In-distribution ``xrays`` with the marks of real films (``"pass"``: burned-in text, a 10% black frame,
    turns of 5 and 10 degrees) and made unreadable (``"stop"``: enlarged from 32 pixels, saved at JPEG quality
    5), all at the model's input size: ``{"pass": {family: images}, "stop": {family: images}}``."""
    rng = np.random.default_rng(seed + 1)
    chosen = xrays[rng.choice(len(xrays), size=min(per_family, len(xrays)), replace=False)]
    sign = [1 if i % 2 else -1 for i in range(len(chosen))]
    passing = {
        "burned-in text": [burned_in_text(image, rng) for image in chosen],
        "black border 10%": [black_border(image, 0.10) for image in chosen],
        "rotated 5 degrees": [rotated(image, 5 * turn) for image, turn in zip(chosen, sign, strict=True)],
        "rotated 10 degrees": [rotated(image, 10 * turn) for image, turn in zip(chosen, sign, strict=True)],
    }
    stopping = {
        "enlarged from 32 px": [enlarged_from(image, 32) for image in chosen],
        "JPEG quality 5": [jpeg_at(image, 5) for image in chosen],
    }
    return {
        "pass": {name: np.stack(images) for name, images in passing.items()},
        "stop": {name: np.stack(images) for name, images in stopping.items()},
    }


def detection_figures(in_scores: np.ndarray, out_scores: np.ndarray) -> dict[str, float]:
    """AUROC of telling ``out_scores`` from ``in_scores`` (larger = more out), and the share of in-distribution
    images flagged at the threshold that catches 95% of the out-of-distribution ones (FPR at 95% TPR)."""
    from sklearn.metrics import roc_auc_score

    targets = np.r_[np.zeros(len(in_scores)), np.ones(len(out_scores))]
    auroc = float(roc_auc_score(targets, np.r_[in_scores, out_scores]))
    cut = np.quantile(out_scores, 0.05)  # 95% of the out-of-distribution scores lie at or above it
    return {"auroc": auroc, "fpr_at_95_tpr": float(np.mean(in_scores >= cut))}


def split_images(model_path: str | os.PathLike, data_dir: str | os.PathLike, splits: tuple[str, ...]):
    """The model, its card, and ``{split: images}`` at the card's preprocessing (the splits of the card's
    patient-grouped split of ``train/``; ``test-dev`` where present)."""
    index = data.index_dataset(data_dir)
    network, card = load_model(model_path)
    images = {}
    for split in splits:
        try:
            split_images, _, _, total = card_split(card, index, split)
        except data.DatasetLayoutError:
            continue  # a half of test/ that is not here
        if total:
            images[split] = split_images
    return network, card, images


def fit_for_model(model_path: str | os.PathLike, data_dir: str | os.PathLike, output: str | os.PathLike) -> dict:
    """A copy of the model at ``output`` whose card names a gate fitted on the training side of its split
    (threshold from the validation side): for a model trained before the gate existed."""
    network, card, images = split_images(model_path, data_dir, ("train", "val"))
    if "train" not in images or "val" not in images:
        raise OodError(f"{data_dir}: the gate needs the training and validation sides of train/")
    detector = Detector.fit(
        images["train"], images["val"], fitted_on={"fitted_on": "training side of the patient-grouped split"}
    )
    card = card.with_fields(ood=detector.save(detector_path(output)))
    save_model(network, output, card)
    return card


def bench_ood(model_path: str | os.PathLike, data_dir: str | os.PathLike, per_family: int = 24, seed: int = 0):
    """The gate against the families of :func:`ood_families`, beside the alternative (the model's own
    confidence, minus the absolute logit). In-distribution: the validation split and test-dev."""
    network, card, images = split_images(model_path, data_dir, ("val", "test-dev"))
    detector = Detector.load(model_path, card)
    if detector is None:
        raise OodError(f"{model_path}: its card names no out-of-distribution gate (fit one with pneumo gate)")
    inside = np.concatenate(list(images.values()))
    families = ood_families(images["val"], images["val"].shape[-1], seed=seed, per_family=per_family)
    logits = logit_model(network)  # built once: one traced function for every batch

    def max_logit(batch):
        return -np.abs(logits.predict(make_dataset(batch, batch_size=64), verbose=0).reshape(-1))

    methods = {"gate (Mahalanobis)": detector.score, "max-logit (the model's confidence)": max_logit}
    inside_scores = {name: method(inside) for name, method in methods.items()}
    result: dict[str, Any] = {"families": {}, "in_distribution": {}}
    for family, batch in families.items():
        result["families"][family] = {"images": int(len(batch))}
        for name, method in methods.items():
            result["families"][family][name] = detection_figures(inside_scores[name], method(batch))

    def stopped(batch) -> dict[str, float]:
        by_gate = ~detector.in_distribution(detector.score(batch))
        by_quality = np.array([quality_problem(image) is not None for image in batch])
        return {
            "stopped_by_gate": float(np.mean(by_gate)),
            "stopped_by_quality": float(np.mean(by_quality)),
            "stopped": float(np.mean(by_gate | by_quality)),
        }

    for family, entry in result["families"].items():
        entry.update({"expected": "stop", **stopped(families[family])})
    films = film_families(images["val"], seed=seed, per_family=per_family)
    result["films"] = {
        family: {"images": int(len(batch)), "expected": expected, **stopped(batch)}
        for expected, made in films.items()
        for family, batch in made.items()
    }
    for split, batch in images.items():
        result["in_distribution"][split] = {"images": int(len(batch)), **stopped(batch)}
    result["real_films_passed_worst"] = min(
        1 - entry["stopped"] for entry in result["films"].values() if entry["expected"] == "pass"
    )
    result["unreadable_stopped_worst"] = min(
        entry["stopped"] for entry in result["films"].values() if entry["expected"] == "stop"
    )
    gate = "gate (Mahalanobis)"
    result["worst_family_auroc"] = min(entry[gate]["auroc"] for entry in result["families"].values())
    result["settings"] = {
        "model": str(model_path),
        "per_family": per_family,
        "seed": seed,
        "threshold": detector.threshold,
        "in_distribution": "validation split and test-dev",
        "films": "validation X-rays with the marks of real films (expected: pass) or made unreadable (expected: "
        "stop), at the model's input size; stopped = by the gate or by the quality checks",
        "gate_real_films": bool(detector.crop_frame),
    }
    return result


def gate_examples(
    network,
    detector: Detector,
    xrays: np.ndarray,
    seed: int = 0,
    families: tuple[str, ...] = ("uniform", "text", "photographs", "turned 90", "inverted"),
):
    """For a lesson: one input of each of ``families`` and one of ``xrays``, their would-be probability of
    pneumonia, their out-of-distribution score and the gate's verdict. Returns ``(images, table)``."""
    import pandas as pd

    made = ood_families(xrays, xrays.shape[-1], seed=seed, per_family=2)
    shown = {name: made[name][0] for name in families if name in made}
    shown["an X-ray of the set"] = xrays[0]
    images = np.stack(list(shown.values()))
    scores = detector.score(images)
    table = pd.DataFrame(
        {
            "input": list(shown),
            "would-be P(pneumonia)": predict_probabilities(network, images).round(3),
            "ood_score": scores.round(0),
            "gate": ["passes" if ok else OUT_OF_DISTRIBUTION for ok in detector.in_distribution(scores)],
        }
    )
    return images, table
