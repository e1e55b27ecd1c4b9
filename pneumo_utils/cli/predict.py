"""``pneumo predict`` and ``pneumo gradcam``: new X-rays through the saved model."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pneumo_utils.cli.common import (
    DEFAULT_MODEL,
    UsageError,
    json_bytes,
    positive_int,
    refuse_existing,
    save,
)


def _load_for_prediction(args: argparse.Namespace):
    """Inputs and model for predict/gradcam; bad paths and bad models are usage errors (exit 2)."""
    from pneumo_utils import predict
    from pneumo_utils.model import load_model
    from pneumo_utils.model.ood import Detector

    files, problems = predict.collect_inputs(args.inputs)
    network, card = load_model(args.model)
    args.mode, args.mode_thresholds = card.mode(args.mode)  # a mode the card lacks: one line, before any image
    detector = None if args.no_ood else Detector.load(args.model, card)
    if detector is None and not args.no_ood:
        print(
            f"note: {args.model} has no out-of-distribution gate (its card names none); every input gets a label",
            file=sys.stderr,
        )
    return files, problems, network, card, detector


def _warn_out_of_distribution(records, detector) -> None:
    from pneumo_utils import outputs
    from pneumo_utils.model.ood import VERDICT

    threshold = detector.threshold if detector is not None else None
    for record in records:
        if record.in_distribution is False:
            why = (
                f"the model cannot read it: {record.quality}"
                if record.quality
                else f"ood_score {record.ood_score:.0f}, {record.ood_score / threshold:.1f} times the gate's "
                f"threshold {threshold:.0f}"
            )
            print(
                f"warning: {outputs.display(record.path)}: {VERDICT} ({why}); labelled OUT_OF_DISTRIBUTION",
                file=sys.stderr,
            )


DECISION_FIELDS = (
    "probability",
    "label",
    "mode",
    "decision",
    "ood_score",
    "ood_ratio",
    "in_distribution",
    "quality",
    "probability_if_in_distribution",
)


def _decision_fields(record, mode: str, detector) -> dict:
    """What a row says of one input: probability, label and the mode's decision; the gate's score and its ratio to
    the gate's threshold (<= 1 passes). An input the gate stops has no probability (it would mean nothing): the
    model's output is kept apart, as ``probability_if_in_distribution``."""
    stopped = record.in_distribution is False
    return {
        "probability": None if stopped else record.probability,
        "label": record.label,
        "mode": mode,
        "decision": record.decision,
        "ood_score": record.ood_score,
        "ood_ratio": None if record.ood_score is None else record.ood_score / detector.threshold,
        "in_distribution": record.in_distribution,
        "quality": record.quality,
        "probability_if_in_distribution": record.probability if stopped else None,
    }


def _thresholds(mode: dict) -> dict:
    return {"normal_below": mode["lo"], "pneumonia_from": mode.get("hi")}


def _mode_line(name: str, mode: dict) -> str:
    """How the decision column is made, in one line: the mode and its thresholds (and its promises)."""
    from pneumo_utils.model import operating

    promises = "; ".join(operating.promise_text(p) for p in mode.get("promises", []))
    return f"mode {name}: {operating.band_text(mode)}" + (f" ({promises})" if promises else "")


def _overlay_folder(folder: str, flag: str) -> Path:
    """The overlays' folder, made before any work: a file there, or a folder that cannot be made, is one line."""
    from pneumo_utils import outputs

    path = Path(folder)
    if path.exists() and not path.is_dir():
        raise UsageError(f"{outputs.display(path)}: {flag} must be a folder, and this is a file")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"{outputs.display(path)}: {flag} folder cannot be made ({outputs.describe(error)})") from None
    return path


def _command_gradcam(args: argparse.Namespace) -> int:
    from pneumo_utils import outputs, predict

    report_path = Path(args.out) / "gradcam.json"
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise UsageError(f"{outputs.display(args.out)}: --out must be a folder, and this is a file")
    refuse_existing(report_path, args.overwrite)
    files, problems, network, card, detector = _load_for_prediction(args)
    _overlay_folder(args.out, "--out")
    threshold = card.threshold
    writer = predict.OverlayWriter(network, threshold, args.out, args.method, args.layer, overwrite=args.overwrite)
    records = problems + predict.predict_files(
        network, card, files, batch_size=args.batch_size, on_batch=writer, detector=detector, mode=args.mode_thresholds
    )
    _warn_out_of_distribution(records, detector)  # the verdict before any heatmap is looked at
    report = []
    for record in records:
        error = record.error or writer.failures.get(record.path)
        error = outputs.display(error) if error else None
        entry = {
            "path": outputs.display(record.path),
            **_decision_fields(record, args.mode, detector),
            "method": args.method,
            "error": error,
        }
        if error:
            print(f"error: {error}", file=sys.stderr)
        else:
            entry.update(writer.statistics[record.path])
            why = record.quality or "gate {:.1f} times its threshold".format(entry["ood_ratio"] or 0.0)
            said = (
                f"{record.decision} ({why})"
                if record.in_distribution is False
                else f"{record.probability:.3f} {record.label} ({args.mode}: {record.decision})"
            )
            print(f"{entry['path']}: {said} -> {outputs.display(Path(args.out) / entry['overlay'])}")
        report.append(entry)
    status = save(
        report_path,
        json_bytes(
            {
                "model": str(args.model),
                "threshold": threshold,
                "mode": args.mode,
                "mode_thresholds": _thresholds(args.mode_thresholds),
                "method": args.method,
                "target_layer": writer.explainer.layer_name,
                "images": report,
            }
        ),
        args.overwrite,
    )
    return 1 if status or any(entry["error"] for entry in report) else 0


def _command_predict(args: argparse.Namespace) -> int:
    from pneumo_utils import outputs, predict

    output = Path(args.output) if args.output else None
    if output and output.suffix.lower() not in (".csv", ".json"):
        raise UsageError(f"{output}: --output must end in .csv or .json")
    refuse_existing(output, args.overwrite)
    files, problems, network, card, detector = _load_for_prediction(args)
    if args.gradcam:
        _overlay_folder(args.gradcam, "--gradcam")
    writer = (
        predict.OverlayWriter(network, card.threshold, args.gradcam, overwrite=args.overwrite) if args.gradcam else None
    )
    records = problems + predict.predict_files(
        network, card, files, batch_size=args.batch_size, on_batch=writer, detector=detector, mode=args.mode_thresholds
    )
    _warn_out_of_distribution(records, detector)
    # names that are not valid UTF-8 are shown and written with their odd bytes as \xNN
    rows = [
        {
            "path": outputs.display(r.path),
            **_decision_fields(r, args.mode, detector),
            "error": r.error and outputs.display(r.error),
        }
        for r in records
    ]
    width = max([len(row["path"]) for row in rows] + [4])
    gated = detector is not None
    print(_mode_line(args.mode, args.mode_thresholds), file=sys.stderr)
    print(f"{'path':<{width}}  probability  {'decision':<20}" + ("  gate (<= 1 passes)" if gated else ""))
    for row in rows:
        if row["error"]:
            print(f"error: {row['error']}", file=sys.stderr)
        else:
            shown = "" if row["probability"] is None else f"{row['probability']:.4f}"  # a stopped input: no probability
            line = f"{row['path']:<{width}}  {shown:>11}  {row['decision']:<20}"
            print(f"{line}  {row['ood_ratio']:>6.2f}" if gated else line.rstrip())
    status = 0
    if output:
        if output.suffix.lower() == ".json":
            payload = json_bytes(rows)
        else:
            import pandas as pd

            columns = ["path", *DECISION_FIELDS, "error"]
            payload = outputs.spreadsheet_safe_csv(pd.DataFrame(rows, columns=columns))
        status = save(output, payload, args.overwrite)
    overlay_failures = 0
    if writer is not None:  # the predictions above are saved whatever happens to the overlays
        for message in writer.failures.values():
            print(f"error: {message}", file=sys.stderr)
        overlay_failures = len(writer.failures)
        if writer.statistics:
            print(
                f"wrote {len(writer.statistics)} Grad-CAM overlay(s) to {outputs.display(args.gradcam)}",
                file=sys.stderr,
            )
    failed = sum(1 for row in rows if row["error"])
    if failed:
        print(f"{failed} of {len(rows)} input(s) failed", file=sys.stderr)
    return 1 if failed or status or overlay_failures else 0


def _add_mode_option(parser) -> None:
    parser.add_argument(
        "--mode",
        choices=["single", "rule-out", "triage"],
        default=None,
        help="operating mode of the decision: single (one threshold), rule-out (NORMAL only when very sure, "
        "else REFER) or triage (NORMAL / REFER / PNEUMONIA); default: the model card's default_mode",
    )


def register(commands) -> None:
    """Add this module's command(s) to the ``pneumo`` parser."""
    gradcam = commands.add_parser("gradcam", help="Grad-CAM overlays and CAM statistics for X-ray files")
    gradcam.add_argument("inputs", nargs="+", metavar="IMAGE", help="image files or folders (searched recursively)")
    gradcam.add_argument("--out", required=True, help="folder for the overlay PNGs and gradcam.json")
    gradcam.add_argument("--method", choices=["gradcam", "gradcam++"], default="gradcam")
    gradcam.add_argument("--model", default=str(DEFAULT_MODEL), help=f"model file (default: {DEFAULT_MODEL})")
    gradcam.add_argument("--layer", default=None, help="target layer (default: the last convolution)")
    gradcam.add_argument("--overwrite", action="store_true", help="replace an existing gradcam.json in --out")
    gradcam.add_argument("--batch-size", type=positive_int, default=32)
    gradcam.add_argument(
        "--no-ood",
        action="store_true",
        help="no out-of-distribution gate: every readable input gets NORMAL or PNEUMONIA, however unlike an X-ray",
    )
    _add_mode_option(gradcam)
    gradcam.set_defaults(handler=_command_gradcam)

    predict = commands.add_parser("predict", help="probability and label for new X-rays (JPEG, PNG, DICOM)")
    predict.add_argument("inputs", nargs="+", metavar="PATH", help="image files or folders (searched recursively)")
    predict.add_argument("--model", default=str(DEFAULT_MODEL), help=f"model file (default: {DEFAULT_MODEL})")
    predict.add_argument("--gradcam", default=None, metavar="DIR", help="also write a Grad-CAM overlay per image here")
    predict.add_argument(
        "--output",
        default=None,
        metavar="FILE.csv|FILE.json",
        help="one row per input: path, probability, label, mode, decision, ood_score, ood_ratio, in_distribution, "
        "quality, probability_if_in_distribution, error",
    )
    predict.add_argument(
        "--no-ood",
        action="store_true",
        help="no out-of-distribution gate: every readable input gets NORMAL or PNEUMONIA, however unlike an X-ray",
    )
    predict.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    predict.add_argument("--batch-size", type=positive_int, default=64)
    _add_mode_option(predict)
    predict.set_defaults(handler=_command_predict)
