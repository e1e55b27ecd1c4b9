"""Operating modes: the thresholds that turn a probability into a decision, fitted so that their promise holds
on new images with a stated confidence.

A threshold put exactly where a labelled sample shows 95% sensitivity gives less than 95% on fresh images
about half the time: the sample is one draw, and the threshold sits on its luckiest side. The *bounded* rule
asks more of the sample: the highest threshold whose one-sided lower confidence bound (exact Clopper-Pearson,
confidence 0.95 by default) of sensitivity is still at or above the target. If the positives of the sample are
an independent draw from those the model will see, the promised rate then holds on new images with at least
that confidence (the threshold is an order statistic of the sample's positive scores, and the bound is exact
for it). The plain *empirical* rule stays available, named as such.

Three modes, fitted together on one sample (:func:`fit_modes`) and written into the model card:

- ``single``: one threshold; NORMAL below it, PNEUMONIA at or above. Promise: sensitivity.
- ``rule-out``: NORMAL only below a low threshold that promises a high sensitivity (0.98 by default); every
  other image is ``REFER``: what a reader's list would still hold. Promise: sensitivity.
- ``triage``: NORMAL below ``lo`` (a sensitivity promise), PNEUMONIA at or above ``hi`` (a specificity promise,
  0.90 by default), ``REFER`` in between. ``REFER`` is never counted as correct.

A sample too small to support a promise is refused in one line that says how many images it would need: with
no miss at all among ``n`` positives the lower bound is ``(1 - confidence) ** (1 / n)``, so a 0.99 promise at
95% confidence needs at least 299 positives. A mode that cannot be supported is left out of the card.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

MODES = ("single", "rule-out", "triage")
NORMAL, PNEUMONIA, REFER = "NORMAL", "PNEUMONIA", "REFER"
# the gate's decision (model.ood), written where a decision is: no probability of such an image means anything
OUT_OF_DISTRIBUTION = "OUT_OF_DISTRIBUTION"
VERDICT = "this does not look like the chest X-rays the model was trained on"
RULES = ("bounded", "empirical")
DEFAULT_CONFIDENCE = 0.95
DEFAULT_SENSITIVITY = 0.95
DEFAULT_RULE_OUT_SENSITIVITY = 0.98
DEFAULT_TRIAGE_SPECIFICITY = 0.90
INTERVAL_METHOD = "exact Clopper-Pearson, two-sided 95%"


class OperatingPointError(ValueError):
    """A promise the sample cannot support (too few images of the class it is about), or a bad target."""


# --------------------------------------------------------------------------------------------------------------
# Exact binomial bounds
# --------------------------------------------------------------------------------------------------------------


def lower_bound(successes: int, n: int, confidence: float = DEFAULT_CONFIDENCE) -> float:
    """One-sided exact (Clopper-Pearson) lower confidence bound of a proportion: ``successes`` of ``n``."""
    _check_confidence(confidence)
    if n <= 0:
        return 0.0
    if successes <= 0:
        return 0.0
    from scipy import stats  # on first use: reading a card's bands needs no SciPy

    return float(stats.beta.ppf(1.0 - confidence, successes, n - successes + 1))


def upper_bound(successes: int, n: int, confidence: float = DEFAULT_CONFIDENCE) -> float:
    """One-sided exact (Clopper-Pearson) upper confidence bound of a proportion."""
    _check_confidence(confidence)
    if n <= 0 or successes >= n:
        return 1.0
    from scipy import stats

    return float(stats.beta.ppf(confidence, successes + 1, n - successes))


def interval(successes: int, n: int, level: float = 0.95) -> list[float | None]:
    """Two-sided exact (Clopper-Pearson) interval at ``level``; ``[None, None]`` when ``n`` is 0."""
    if n <= 0:
        return [None, None]
    tail = (1.0 + level) / 2.0
    return [lower_bound(successes, n, tail), upper_bound(successes, n, tail)]


def minimum_sample(target: float, confidence: float = DEFAULT_CONFIDENCE) -> int:
    """The fewest images that can support a promise of ``target`` at ``confidence``: with none wrong, the lower
    bound ``(1 - confidence) ** (1 / n)`` must reach the target."""
    _check_target(target, "target")
    _check_confidence(confidence)
    if target >= 1.0:
        raise OperatingPointError("a promise of exactly 1.0 cannot be supported by any finite sample; use < 1")
    n = math.ceil(math.log(1.0 - confidence) / math.log(target))
    while n > 1 and lower_bound(n - 1, n - 1, confidence) >= target:  # guard against rounding in the formula
        n -= 1
    while lower_bound(n, n, confidence) < target:
        n += 1
    return n


def allowed_failures(n: int, target: float, confidence: float) -> int:
    """The most failures among ``n`` whose lower bound of the success rate still reaches ``target``; -1 if none."""
    allowed = -1
    for failures in range(n + 1):
        if lower_bound(n - failures, n, confidence) >= target:
            allowed = failures
        else:
            break
    return allowed


def _check_confidence(confidence: float) -> None:
    if not (isinstance(confidence, int | float) and 0.5 <= confidence < 1.0):
        raise OperatingPointError(f"confidence must be in [0.5, 1), got {confidence!r}")


def _check_target(target: float, name: str) -> None:
    if not (isinstance(target, int | float) and 0.0 < target <= 1.0):
        raise OperatingPointError(f"{name} must be in (0, 1], got {target!r}")


# --------------------------------------------------------------------------------------------------------------
# Fitting one threshold
# --------------------------------------------------------------------------------------------------------------


def _between(upper: float, others: np.ndarray) -> float:
    """Midway between ``upper`` and the largest score below it (0 when none): never a score itself, so that a
    rounding difference on another machine cannot move an image across it."""
    below = others[others < upper]
    return (upper + (float(below.max()) if below.size else 0.0)) / 2.0


def _above(lower: float, others: np.ndarray) -> float:
    """Midway between ``lower`` and the smallest score above it (1 when none)."""
    above = others[others > lower]
    return (lower + (float(above.min()) if above.size else 1.0)) / 2.0


def _allowed_failures(n: int, target: float, confidence: float, rule: str, mode: str, rate: str) -> int:
    """How many of the ``n`` images a promise of ``rate`` is about may be wrong at the chosen threshold: the most
    whose lower bound still meets ``target`` (bounded), or whose share does (empirical). One line refuses a
    sample too small for the bound, naming the size it would need."""
    kind, wrong = ("PNEUMONIA", "miss") if rate == "sensitivity" else ("NORMAL", "false alarm")
    if rule == "bounded":
        needed = minimum_sample(target, confidence)
        if n < needed:
            raise OperatingPointError(
                f"{mode}: a {rate} of {target:g} at {confidence:.0%} confidence needs at least {needed} "
                f"{kind} images (with no {wrong}); the sample has {n}"
            )
        return allowed_failures(n, target, confidence)
    if rule == "empirical":
        if n == 0:
            raise OperatingPointError(f"{mode}: the sample has no {kind} image; no {rate} can be fitted")
        return int(math.floor(n * (1.0 - target) + 1e-9))
    raise OperatingPointError(f"rule must be one of {', '.join(RULES)}, got {rule!r}")


def sensitivity_threshold(
    targets,
    probabilities,
    target: float,
    confidence: float = DEFAULT_CONFIDENCE,
    rule: str = "bounded",
    mode: str = "single",
) -> dict[str, Any]:
    """The highest threshold (NORMAL below it) whose sensitivity on the sample meets ``target``: its lower
    confidence bound (``rule="bounded"``) or the sample's own rate (``rule="empirical"``).

    Returns the threshold, the misses it allows on the sample, and the promise as a record."""
    targets, probabilities = _arrays(targets, probabilities)
    _check_target(target, f"{mode}: the sensitivity target")
    positives = np.sort(probabilities[targets == 1])
    n = int(positives.size)
    misses = _allowed_failures(n, target, confidence, rule, mode, "sensitivity")
    threshold = _between(float(positives[misses]), probabilities) if misses < n else 1.0
    kept = int((positives >= threshold).sum())
    return {"threshold": threshold, "promise": _promise("sensitivity", target, confidence, rule, kept, n)}


def specificity_threshold(
    targets,
    probabilities,
    target: float,
    confidence: float = DEFAULT_CONFIDENCE,
    rule: str = "bounded",
    mode: str = "triage",
) -> dict[str, Any]:
    """The lowest threshold (PNEUMONIA at or above it) whose specificity on the sample meets ``target``."""
    targets, probabilities = _arrays(targets, probabilities)
    _check_target(target, f"{mode}: the specificity target")
    negatives = np.sort(probabilities[targets == 0])[::-1]  # highest first
    n = int(negatives.size)
    alarms = _allowed_failures(n, target, confidence, rule, mode, "specificity")
    threshold = _above(float(negatives[alarms]), probabilities) if alarms < n else 0.0
    kept = int((negatives < threshold).sum())
    return {"threshold": threshold, "promise": _promise("specificity", target, confidence, rule, kept, n)}


def _promise(rate: str, target: float, confidence: float, rule: str, kept: int, n: int) -> dict[str, Any]:
    return {
        "rate": rate,
        "target": target,
        "confidence": confidence,
        "rule": rule,
        "n": n,
        "on_sample": kept / n if n else None,
        "lower_bound": lower_bound(kept, n, confidence),
        "failures_on_sample": n - kept,
    }


def _arrays(targets, probabilities) -> tuple[np.ndarray, np.ndarray]:
    targets = np.asarray(targets).astype(int).reshape(-1)
    probabilities = np.asarray(probabilities, dtype=np.float64).reshape(-1)
    if targets.shape != probabilities.shape:
        raise ValueError(f"{targets.size} labels but {probabilities.size} probabilities")
    if not np.all(np.isfinite(probabilities)):
        raise ValueError("probabilities must be finite")
    return targets, probabilities


# --------------------------------------------------------------------------------------------------------------
# Decisions
# --------------------------------------------------------------------------------------------------------------


def decide(probabilities, mode: Mapping[str, Any]) -> np.ndarray:
    """``NORMAL`` below ``mode["lo"]``, ``PNEUMONIA`` at or above ``mode["hi"]`` (never when it is None),
    ``REFER`` in between: one decision per probability."""
    probabilities = np.asarray(probabilities, dtype=np.float64).reshape(-1)
    lo, hi = mode["lo"], mode.get("hi")
    decisions = np.full(probabilities.shape, REFER, dtype=object)
    decisions[probabilities < lo] = NORMAL
    if hi is not None:
        decisions[probabilities >= hi] = PNEUMONIA
    return decisions


def single_mode(threshold: float) -> dict[str, Any]:
    """A mode of one threshold with no promise of its own (a card that has no fitted modes)."""
    return {"lo": float(threshold), "hi": float(threshold), "description": "one threshold: the card's"}


def mode_of(card: Mapping[str, Any], name: str | None = None) -> tuple[str, dict[str, Any]]:
    """The mode ``name`` of a card (its ``default_mode`` when None); a card without fitted modes has only
    ``single``, at its threshold. :class:`OperatingPointError` names a mode the card does not hold."""
    modes = card.get("operating_modes") or {}
    chosen = name or card.get("default_mode") or "single"
    if chosen not in MODES:
        raise OperatingPointError(f"mode must be one of {', '.join(MODES)}, got {chosen!r}")
    if chosen in modes:
        return chosen, dict(modes[chosen])
    if chosen == "single":
        return chosen, single_mode(card["threshold"]["value"])
    held = ", ".join(modes) or "none"
    raise OperatingPointError(
        f"the model card holds no {chosen} mode (fitted modes: {held}); fit the modes with pneumo calibrate"
    )


# --------------------------------------------------------------------------------------------------------------
# Fitting the three modes together, and what a mode does on a labelled sample
# --------------------------------------------------------------------------------------------------------------


def fit_modes(
    targets,
    probabilities,
    sample: Mapping[str, Any],
    sensitivity: float = DEFAULT_SENSITIVITY,
    rule_out_sensitivity: float = DEFAULT_RULE_OUT_SENSITIVITY,
    triage_specificity: float = DEFAULT_TRIAGE_SPECIFICITY,
    triage_sensitivity: float | None = None,
    confidence: float = DEFAULT_CONFIDENCE,
    rule: str = "bounded",
) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """The three modes fitted on one labelled sample, and, for each mode the sample cannot support, why.

    ``sample`` (split, size, fingerprint, where) is recorded in each mode with its promise(s) and its coverage
    on the sample (with an exact interval). The triage band's lower end promises ``triage_sensitivity``
    (``sensitivity`` when None); a ``hi`` below ``lo`` means both promises hold at one threshold: the band is
    then empty and ``hi`` equals ``lo``.
    """
    targets, probabilities = _arrays(targets, probabilities)
    _check_confidence(confidence)
    triage_sensitivity = sensitivity if triage_sensitivity is None else triage_sensitivity
    record = {**dict(sample), "n": int(targets.size), "counts": _counts(targets)}
    fitted: dict[str, dict[str, Any]] = {}
    refused: dict[str, str] = {}

    def attempt(name: str, build) -> None:
        try:
            fitted[name] = build()
        except OperatingPointError as error:
            refused[name] = str(error)

    def single():
        point = sensitivity_threshold(targets, probabilities, sensitivity, confidence, rule, "single")
        return {
            "lo": point["threshold"],
            "hi": point["threshold"],
            "description": "one threshold: NORMAL below it, PNEUMONIA at or above it",
            "promises": [point["promise"]],
        }

    def rule_out():
        point = sensitivity_threshold(targets, probabilities, rule_out_sensitivity, confidence, rule, "rule-out")
        return {
            "lo": point["threshold"],
            "hi": None,
            "description": "NORMAL only below lo; every other image is REFER (it goes to a reader)",
            "promises": [point["promise"]],
        }

    def triage():
        low = sensitivity_threshold(targets, probabilities, triage_sensitivity, confidence, rule, "triage")
        high = specificity_threshold(targets, probabilities, triage_specificity, confidence, rule, "triage")
        lo, hi = low["threshold"], max(high["threshold"], low["threshold"])
        specificity = high["promise"]
        if hi != high["threshold"]:  # the band closed: the specificity promise is re-measured at hi
            kept = int((probabilities[targets == 0] < hi).sum())
            specificity = _promise("specificity", triage_specificity, confidence, rule, kept, specificity["n"])
        return {
            "lo": lo,
            "hi": hi,
            "description": "NORMAL below lo, PNEUMONIA at or above hi, REFER in between",
            "promises": [low["promise"], specificity],
        }

    for name, build in (("single", single), ("rule-out", rule_out), ("triage", triage)):
        attempt(name, build)
    for mode in fitted.values():
        mode["rule"] = _rule_text(rule, confidence)
        mode["sample"] = record
        mode["on_sample"] = mode_figures(targets, probabilities, mode)
    return fitted, refused


def _rule_text(rule: str, confidence: float) -> str:
    if rule == "bounded":
        return (
            f"bounded: each threshold is the most decisive one whose one-sided {confidence:.0%} lower confidence "
            "bound (exact Clopper-Pearson) of the promised rate meets its target on the sample"
        )
    return "empirical: each threshold is the most decisive one whose rate on the sample meets its target (no bound)"


def _counts(targets: np.ndarray) -> dict[str, int]:
    return {NORMAL: int((targets == 0).sum()), PNEUMONIA: int((targets == 1).sum())}


def _rate(count: int, n: int) -> dict[str, Any]:
    return {"value": count / n if n else None, "count": int(count), "n": int(n), "ci95": interval(count, n)}


def mode_figures(targets, probabilities, mode: Mapping[str, Any]) -> dict[str, Any]:
    """What a mode does on labelled images, each rate with its count, denominator and exact 95% interval:

    - ``coverage``: images decided (not REFER) of all; ``referred``: the rest;
    - ``normals_cleared``: NORMAL images decided NORMAL, of all NORMAL images;
    - ``decided_accuracy``: correct decisions among the decided (REFER is never counted correct);
    - ``sensitivity``: PNEUMONIA images not decided NORMAL (a REFER still reaches a reader), of all PNEUMONIA;
      ``specificity``: NORMAL images not decided PNEUMONIA, of all NORMAL (the rates the promises are about);
    - ``sensitivity_decided`` / ``specificity_decided``: the same among the decided images only;
    - ``misses``: PNEUMONIA images decided NORMAL, of all PNEUMONIA; ``false_alarms``: NORMAL decided PNEUMONIA.
    """
    targets, probabilities = _arrays(targets, probabilities)
    decisions = decide(probabilities, mode)
    normal, pneumonia = decisions == NORMAL, decisions == PNEUMONIA
    decided = normal | pneumonia
    positive, negative = targets == 1, targets == 0
    correct = (normal & negative) | (pneumonia & positive)
    n, n_pos, n_neg = int(targets.size), int(positive.sum()), int(negative.sum())
    return {
        "n": n,
        "counts": {NORMAL: int(normal.sum()), PNEUMONIA: int(pneumonia.sum()), REFER: int((~decided).sum())},
        "coverage": _rate(int(decided.sum()), n),
        "referred": _rate(int((~decided).sum()), n),
        "normals_cleared": _rate(int((normal & negative).sum()), n_neg),
        "decided_accuracy": _rate(int(correct.sum()), int(decided.sum())),
        "sensitivity": _rate(int((positive & ~normal).sum()), n_pos),
        "specificity": _rate(int((negative & ~pneumonia).sum()), n_neg),
        "sensitivity_decided": _rate(int((positive & pneumonia).sum()), int((positive & decided).sum())),
        "specificity_decided": _rate(int((negative & normal).sum()), int((negative & decided).sum())),
        "misses": _rate(int((positive & normal).sum()), n_pos),
        "false_alarms": _rate(int((negative & pneumonia).sum()), n_neg),
        "interval_method": INTERVAL_METHOD,
    }


def modes_figures(targets, probabilities, card: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """:func:`mode_figures` of every mode the card holds (``single`` at its threshold when it holds none),
    with each mode's thresholds and promises as the card states them."""
    names = [name for name in MODES if name in (card.get("operating_modes") or {})] or ["single"]
    figures = {}
    for name in names:
        _, mode = mode_of(card, name)
        figures[name] = {
            "lo": mode["lo"],
            "hi": mode.get("hi"),
            "promises": mode.get("promises", []),
            **mode_figures(targets, probabilities, mode),
        }
    return figures


def band_text(mode: Mapping[str, Any], digits: int = 4) -> str:
    """A mode's thresholds in words: ``NORMAL below lo, REFER from lo to hi, PNEUMONIA from hi`` (or ``REFER
    otherwise`` for rule-out, no REFER for one threshold). Every place that shows a band says it this way."""
    lo, hi = mode["lo"], mode.get("hi")
    if hi is None:
        return f"NORMAL below {lo:.{digits}f}, REFER otherwise"
    if hi == lo:
        return f"NORMAL below {lo:.{digits}f}, PNEUMONIA from {lo:.{digits}f}"
    return (
        f"NORMAL below {lo:.{digits}f}, REFER from {lo:.{digits}f} to {hi:.{digits}f}, PNEUMONIA from {hi:.{digits}f}"
    )


def rate_text(rate: Mapping[str, Any], interval: bool = True) -> str:
    """``0.963 [0.929, 0.984] (209/217)``: a rate of :func:`mode_figures` with its interval and counts."""
    if rate["value"] is None:
        return "n/a"
    low, high = rate["ci95"]
    shown = f" [{low:.3f}, {high:.3f}]" if interval else ""
    return f"{rate['value']:.3f}{shown} ({rate['count']}/{rate['n']})"


def modes_table(figures: Mapping[str, Mapping[str, Any]], by_mode: bool = True):
    """One row per mode: thresholds, promise, coverage, decided accuracy, sensitivity, specificity, misses
    (with exact 95% intervals), for a report or a notebook; ``by_mode=False``: one column per mode and no
    promise (narrow enough for a terminal)."""
    import pandas as pd

    cell = rate_text
    rows = []
    for name, mode in figures.items():
        hi = mode.get("hi")
        rows.append(
            {
                "mode": name,
                "NORMAL below": f"{mode['lo']:.4f}",
                "PNEUMONIA from": "never" if hi is None else f"{hi:.4f}",
                "promise": "; ".join(promise_text(p) for p in mode.get("promises", []))
                or "none (the card's threshold)",
                "coverage": cell(mode["coverage"]),
                "normals cleared": cell(mode["normals_cleared"]),
                "decided accuracy": cell(mode["decided_accuracy"]),
                "sensitivity": cell(mode["sensitivity"]),
                "specificity": cell(mode["specificity"]),
                "misses": cell(mode["misses"]),
            }
        )
    table = pd.DataFrame(rows)
    if by_mode:
        return table
    return table.drop(columns=["promise"]).set_index("mode").T.rename_axis(None, axis=1)


def promise_text(promise: Mapping[str, Any]) -> str:
    """``sensitivity >= 0.98 (95% lower bound 0.981 on 157 PNEUMONIA, 0 missed)``: a promise with its sample."""
    kind = "PNEUMONIA" if promise["rate"] == "sensitivity" else "NORMAL"
    wrong = "missed" if promise["rate"] == "sensitivity" else "false alarms"
    if promise["rule"] == "bounded":
        return (
            f"{promise['rate']} >= {promise['target']:g} ({promise['confidence']:.0%} lower bound "
            f"{promise['lower_bound']:.3f} on {promise['n']} {kind}, {promise['failures_on_sample']} {wrong})"
        )
    return (
        f"{promise['rate']} >= {promise['target']:g} on the sample only (empirical rule, no bound; "
        f"{promise['n']} {kind}, {promise['failures_on_sample']} {wrong})"
    )


def modes_summary(card: dict | None) -> list[str]:
    """One sentence per operating mode of the card: its thresholds, its promises with their sample, or why a
    mode is absent."""
    if not card or not card.get("operating_modes"):
        return [
            "This model's card holds no fitted operating modes: its one threshold decides (pneumo calibrate fits them)."
        ]
    sentences = []
    for name, mode in card["operating_modes"].items():
        sample = mode.get("sample", {})
        promises = "; ".join(promise_text(promise) for promise in mode.get("promises", []))
        sentences.append(
            f"{name}: {band_text(mode)}. Promise: {promises}; fitted on {sample.get('split', 'a sample')} "
            f"({sample.get('n', '?')} images, fingerprint {sample.get('fingerprint', '?')})."
        )
    for name, reason in ((card.get("site_calibration") or {}).get("modes_not_fitted") or {}).items():
        sentences.append(f"{name}: not fitted ({reason}).")
    default = card.get("default_mode") or "single"
    sentences.append(f"pneumo predict decides with the {default} mode unless --mode says otherwise.")
    return sentences


# --------------------------------------------------------------------------------------------------------------
# Risk and coverage; why the bound: a simulation
# --------------------------------------------------------------------------------------------------------------


def risk_coverage(targets, probabilities, threshold: float) -> dict[str, np.ndarray]:
    """The selective-classification curve at one threshold: refer the images whose logit lies nearest the
    threshold's, first; ``coverage[i]`` is the share still decided and ``risk[i]`` the error among them."""
    targets, probabilities = _arrays(targets, probabilities)
    clipped = np.clip(probabilities, 1e-7, 1 - 1e-7)
    cut = float(np.clip(threshold, 1e-7, 1 - 1e-7))
    distance = np.abs(np.log(clipped / (1 - clipped)) - math.log(cut / (1 - cut)))
    order = np.argsort(-distance, kind="stable")  # most confident first
    wrong = ((probabilities[order] >= threshold).astype(int) != targets[order]).astype(float)
    decided = np.arange(1, targets.size + 1)
    return {"coverage": decided / targets.size, "risk": np.cumsum(wrong) / decided}


def simulate_threshold_rules(
    positives: int = 157,
    target: float = 0.95,
    confidence: float = DEFAULT_CONFIDENCE,
    repeats: int = 400,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """The true sensitivity that each rule's threshold gives on new images, over ``repeats`` calibration samples of
    ``positives`` PNEUMONIA scores drawn from one known distribution (uniform, so a threshold's true sensitivity
    is ``1 - threshold``; any continuous distribution gives the same picture, the rules see only ranks)."""
    rng = np.random.default_rng(seed)
    results = {rule: np.empty(repeats) for rule in RULES}
    for repeat in range(repeats):
        scores = rng.uniform(size=positives)
        targets = np.ones(positives, dtype=int)
        for rule in RULES:
            threshold = sensitivity_threshold(targets, scores, target, confidence, rule)["threshold"]
            results[rule][repeat] = 1.0 - threshold
    return results


PUBLIC_TEST_DEV_POSITIVES = 157  # PNEUMONIA images in test-dev of the public data set


def simulation_size(positives: int, target: float, confidence: float = DEFAULT_CONFIDENCE) -> int:
    """How many positives the rule simulation draws: as many as the labelled sample has where that can support
    the bounded promise, else as many as the public data set's test-dev has."""
    return positives if positives >= minimum_sample(target, confidence) else PUBLIC_TEST_DEV_POSITIVES


def simulation_summary(simulated: Mapping[str, np.ndarray], target: float) -> list[str]:
    """One line per rule: how often its promise held over the simulated samples, and the median true rate."""
    return [
        f"{rule:>9}: promise held in {(values >= target).mean():.0%} of {len(values)} samples; "
        f"median true sensitivity {np.median(values):.3f}"
        for rule, values in simulated.items()
    ]
