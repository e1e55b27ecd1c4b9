"""``pneumo evaluate``: a saved model's metrics on one split, with provenance."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pneumo_utils import config
from pneumo_utils.cli.common import (
    DATA_HELP,
    DEFAULT_MODEL,
    json_bytes,
    positive_int,
    refuse_existing,
    save,
)


def _command_evaluate(args: argparse.Namespace) -> int:
    from pneumo_utils import predict

    output = Path(args.output) if args.output else None
    refuse_existing(output, args.overwrite)
    metrics, record = predict.evaluate_saved_model(
        args.model, config.resolve_data_dir(args.data_dir), args.split, batch_size=args.batch_size
    )
    counts = record["splits"][args.split]
    if counts["unreadable_skipped"]:
        print(f"skipped {counts['unreadable_skipped']} unreadable image(s) of {counts['images_in_split']}")
    print(f"{args.split} split of {record['data_dir']} (fingerprint {record['data_fingerprint']})")
    print(_format_metrics_table(metrics))
    from pneumo_utils.subgroups import below_overall, subgroup_table

    print("\nfor whom it works (95% Wilson intervals: a subgroup is a count, so its interval is the binomial one):")
    print(subgroup_table(metrics["subgroups"]).to_string(index=False))
    for sentence in below_overall(metrics["subgroups"]):
        print(f"below overall: {sentence}")
    from pneumo_utils.model.operating import modes_table

    print("\noperating modes (the card's; REFER is never counted correct; exact Clopper-Pearson 95% intervals):")
    print(modes_table(metrics["modes"], by_mode=False).to_string())
    if output:
        status = save(output, json_bytes(metrics), args.overwrite)
        status = max(status, save(output.with_suffix(".provenance.json"), json_bytes(record), args.overwrite))
        return status
    return 0


def _format_metrics_table(metrics: dict[str, Any]) -> str:
    from pneumo_utils.evaluate import METRIC_NAMES, with_ci

    lines = [f"{'metric':<12} value [95% bootstrap interval over images]", "-" * 52]
    for name in METRIC_NAMES:
        lines.append(f"{name:<12} {with_ci(metrics, name)}")
    (tn, fp), (fn, tp) = metrics["confusion_matrix"]
    lines.append(f"n={metrics['n']}  threshold={metrics['threshold']:.4f}  TN={tn} FP={fp} FN={fn} TP={tp}")
    return "\n".join(lines)


def register(commands) -> None:
    """Add this module's command(s) to the ``pneumo`` parser."""
    evaluate = commands.add_parser("evaluate", help="score a saved model on a split and write metrics JSON")
    evaluate.add_argument("--model", default=str(DEFAULT_MODEL), help=f"model file (default: {DEFAULT_MODEL})")
    evaluate.add_argument("--data-dir", default=None, help=DATA_HELP)
    evaluate.add_argument(
        "--split",
        default="test",
        choices=["test", "test-dev", "test-final", "val", "train", "val-folder"],
        help="test/ folder (default); its halves test-dev (used for selection) and test-final "
        "(sha256(patient id) %% 5 < 2 is test-dev); the patient-grouped validation split (val) "
        "or training side (train) of train/; or the data set's own val/ folder",
    )
    evaluate.add_argument("--output", default=None, metavar="FILE.json", help="write the metrics here")
    evaluate.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    evaluate.add_argument("--batch-size", type=positive_int, default=64)
    evaluate.set_defaults(handler=_command_evaluate)
