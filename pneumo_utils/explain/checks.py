"""Checks of Grad-CAM maps, on correctly classified validation images (notebook 04):

1. model-parameter randomization (Adebayo et al. 2018): a freshly initialized copy should give different maps;
2. deletion and insertion (Petsiuk et al. 2018): removing the most highlighted pixels first should lower
   the class score faster than removing random pixels, and inserting them first should raise it faster;
3. where the mass lies: central field against the border band and its corners (Zech et al. 2018).
"""

from __future__ import annotations

import cv2
import keras
import numpy as np

from pneumo_utils.explain.cam import CamExplainer
from pneumo_utils.explain.regions import mass_shares, region_masks


def randomized_copy(model: keras.Model, seed: int = 0) -> keras.Model:
    """The same architecture with freshly initialized weights (Adebayo et al. 2018's model randomization)."""
    keras.utils.set_random_seed(seed)
    return keras.models.clone_model(model)  # a clone of a built model is built, with fresh initial weights


def spearman_per_image(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Spearman rank correlation between paired maps, one value per image (NaN when a map is constant)."""
    from scipy.stats import spearmanr

    values = []
    for a, b in zip(first.reshape(len(first), -1), second.reshape(len(second), -1), strict=True):
        values.append(np.nan if a.std() == 0 or b.std() == 0 else spearmanr(a, b).statistic)
    return np.asarray(values, dtype=np.float64)


def randomization_check(
    model: keras.Model,
    images: np.ndarray,
    target_class: int = 1,
    seed: int = 0,
    method: str = "gradcam",
    explainer: CamExplainer | None = None,
) -> dict:
    """Spearman correlation between the trained model's maps and a randomly re-initialized copy's.

    A faithful explanation depends on the learned weights: the correlation should be low. A map that
    survives randomization shows the image's edges, not the model's reasoning.
    """
    trained = (explainer or CamExplainer(model)).explain(images, target_class, method)[0]
    random_model = randomized_copy(model, seed)
    randomized = CamExplainer(random_model).explain(images, target_class, method)[0]
    correlations = spearman_per_image(trained, randomized)
    return {
        "spearman_mean": float(np.nanmean(correlations)) if np.isfinite(correlations).any() else float("nan"),
        "spearman_median": float(np.nanmedian(correlations)) if np.isfinite(correlations).any() else float("nan"),
        "images": int(len(images)),
        "constant_maps": int(np.isnan(correlations).sum()),
    }


def _perturbation_curve(
    model, image: np.ndarray, order: np.ndarray, baseline: np.ndarray, target_class: int, steps: int, insert: bool
) -> np.ndarray:
    """P(target class) as pixels are deleted (or inserted) in ``order``, ``steps`` + 1 points."""
    flat_image, flat_baseline = image.reshape(-1), baseline.reshape(-1)
    counts = np.linspace(0, flat_image.size, steps + 1).astype(int)
    batch = np.empty((steps + 1, flat_image.size), np.float32)
    for row, count in enumerate(counts):
        start, source = (flat_baseline, flat_image) if insert else (flat_image, flat_baseline)
        batch[row] = start
        batch[row, order[:count]] = source[order[:count]]
    probabilities = model.predict(batch.reshape(steps + 1, *image.shape, 1), verbose=0).reshape(-1)
    return probabilities if target_class == 1 else 1.0 - probabilities


def deletion_insertion(
    model: keras.Model, images: np.ndarray, cams: np.ndarray, target_class: int = 1, steps: int = 16, seed: int = 0
) -> dict:
    """Deletion and insertion AUC (Petsiuk et al. 2018) for the maps and for random maps.

    Deletion replaces the most important pixels first with a blurred copy of the image; a faithful map
    makes the class probability fall fast (low AUC). Insertion starts from the blurred image and restores
    the most important pixels first (high AUC is better). Random orderings give the baseline.
    """
    rng = np.random.default_rng(seed)
    results = {"deletion_auc": [], "insertion_auc": [], "deletion_auc_random": [], "insertion_auc_random": []}
    for image, cam in zip(images.astype(np.float32), cams, strict=True):
        blurred = cv2.GaussianBlur(image, (0, 0), sigmaX=max(image.shape) / 16)
        cam_order = np.argsort(-cam.reshape(-1), kind="stable")
        random_order = rng.permutation(cam.size)
        for suffix, order in (("", cam_order), ("_random", random_order)):
            for kind, insert in (("deletion", False), ("insertion", True)):
                curve = _perturbation_curve(model, image, order, blurred, target_class, steps, insert)
                results[f"{kind}_auc{suffix}"].append(float(np.trapezoid(curve, dx=1.0 / steps)))
    return {key: float(np.mean(values)) if values else float("nan") for key, values in results.items()} | {
        "images": int(len(images)),
        "steps": steps,
        "baseline": "Gaussian-blurred image",
    }


def run_checks(
    model: keras.Model,
    images_by_class: dict[str, np.ndarray],
    method: str = "gradcam",
    border_fraction: float = 0.15,
    deletion_images: int = 16,
    seed: int = 0,
) -> dict:
    """The three quantitative checks, per class, on correctly classified images.

    ``images_by_class`` maps "NORMAL"/"PNEUMONIA" to images of that class the model got right; each is
    explained for its own class. Returns randomization, deletion/insertion and mass-share results.
    """
    explainer = CamExplainer(model)
    area = {
        name: float(mask.mean())
        for name, mask in region_masks(*next(iter(images_by_class.values())).shape[1:3], border_fraction).items()
    }
    results = {
        "method": method,
        "target_layer": explainer.layer_name,
        "border_fraction": border_fraction,
        "area_share": area,
        "by_class": {},
    }
    for name, images in images_by_class.items():
        target_class = 1 if name == "PNEUMONIA" else 0
        if len(images) == 0:
            continue
        cams = explainer.explain(images, target_class=target_class, method=method)[0]
        shares = mass_shares(cams, border_fraction)
        subset = slice(0, deletion_images)
        results["by_class"][name] = {
            "images": int(len(images)),
            "mass_share": {region: _mean_or_nan(values) for region, values in shares.items()},
            "randomization": randomization_check(model, images, target_class, seed, method, explainer),
            "deletion_insertion": deletion_insertion(model, images[subset], cams[subset], target_class, seed=seed),
        }
    return results


def _mean_or_nan(values: np.ndarray) -> float:
    """The mean of the finite values; NaN (without a warning) when there are none (all maps empty)."""
    finite = np.asarray(values, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    return float(finite.mean()) if len(finite) else float("nan")


def describe_checks(results: dict) -> list[str]:
    """Plain sentences on what the check numbers show, whatever they show."""
    lines = []
    area = results["area_share"]
    for name, result in results["by_class"].items():
        if result["randomization"]["constant_maps"] == result["images"]:
            lines.append(
                f"{name}: every map is empty (no positive evidence for the class at this layer); "
                "the checks cannot be read."
            )
            continue
        randomization = result["randomization"]["spearman_mean"]
        verdict = (
            "low: the maps depend on the learned weights"
            if randomization < 0.3
            else "moderate: part of the map survives random weights (image structure, not only learning)"
            if randomization < 0.6
            else "HIGH: the maps look alike with random weights, so they show image structure, not the model"
        )
        lines.append(f"{name}: randomization Spearman {randomization:.2f} ({verdict}).")
        scores = result["deletion_insertion"]
        deletion_better = scores["deletion_auc"] < scores["deletion_auc_random"]
        insertion_better = scores["insertion_auc"] > scores["insertion_auc_random"]
        lines.append(
            f"{name}: deletion AUC {scores['deletion_auc']:.3f} vs random {scores['deletion_auc_random']:.3f}, "
            f"insertion AUC {scores['insertion_auc']:.3f} vs random {scores['insertion_auc_random']:.3f} "
            + (
                "(better than random on both: the highlighted pixels carry the evidence)."
                if deletion_better and insertion_better
                else "(NOT better than random on both: the maps do not reliably point at the evidence)."
            )
        )
        border, corners = result["mass_share"]["border"], result["mass_share"]["corners"]
        where = (
            "mostly in the central field"
            if border < area["border"] - 0.1
            else "spread like the image area itself"
            if border < area["border"] + 0.1
            else "CONCENTRATED ON THE BORDER, where markers and text sit"
        )
        lines.append(
            f"{name}: {border:.0%} of the map's mass lies in the border band ({area['border']:.0%} of the area), "
            f"{corners:.0%} in the corners ({area['corners']:.0%} of the area): {where}."
        )
    return lines
