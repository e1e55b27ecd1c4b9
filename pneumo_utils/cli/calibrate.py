"""``pneumo calibrate``: refit a model's temperature and threshold on a labelled sample of a site or period."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pneumo_utils import config
from pneumo_utils.cli.common import DATA_HELP, DEFAULT_MODEL, UsageError, refuse_existing

SPLITS = ["test-dev", "test", "test-final", "val", "train", "val-folder"]


def _command_calibrate(args: argparse.Namespace) -> int:
    from pneumo_utils import data, model, outputs
    from pneumo_utils.evaluate import with_ci
    from pneumo_utils.model import calibrate

    for flag in ("sensitivity", "rule_out_sensitivity", "triage_specificity", "triage_sensitivity"):
        value = getattr(args, flag)
        if value is not None and not 0.0 < value < 1.0:
            raise UsageError(f"--{flag.replace('_', '-')} must be in (0, 1), got {value}")
    if not 0.5 <= args.confidence < 1.0:
        raise UsageError(f"--confidence must be in [0.5, 1), got {args.confidence}")
    name = args.name or Path(args.model).stem  # --name is checked by the command line (a name, not a path)
    output = Path(args.output_dir) / f"{name}.keras"
    if output.resolve() == Path(args.model).resolve():
        raise UsageError(
            f"{output}: the calibrated model would replace the model it is made from; choose "
            "another --output-dir or --name"
        )
    refuse_existing(output, args.overwrite)
    refuse_existing(model.card_path(output), args.overwrite)
    refuse_existing(Path(args.output_dir) / f"{name}.ood.npz", args.overwrite)
    data_root = config.resolve_data_dir(args.data_dir)
    index = data.index_dataset(data_root)
    network, card = model.load_model(args.model)
    images, _, kept, _ = model.card_split(card, index, args.split)
    sample = {
        "data_dir": args.data_dir or config.portable_path(data_root),
        "split": args.split,
        "fingerprint": data.dataset_fingerprint(kept),
    }
    calibrated, new_card = calibrate.calibrate_model(
        network,
        card,
        images,
        kept,
        sample,
        min_sensitivity=args.sensitivity,
        confidence=args.confidence,
        rule_out_sensitivity=args.rule_out_sensitivity,
        triage_specificity=args.triage_specificity,
        triage_sensitivity=args.triage_sensitivity,
        rule=args.rule,
        training_hashes=set(index.loc[index["split"] == "train", "hash"].dropna()) if "hash" in index else None,
    )
    site = new_card["site_calibration"]
    for warning in site["warnings"]:
        print(f"warning: {args.split} of {sample['data_dir']}: {warning}", file=sys.stderr)
    print(
        f"{args.split} of {sample['data_dir']}: {site['sample']['n']} images "
        f"({site['sample']['counts']['NORMAL']} NORMAL, {site['sample']['counts']['PNEUMONIA']} PNEUMONIA)"
    )
    print(
        f"temperature {site['previous_temperature']:.3f} -> {site['temperature']:.3f}; threshold "
        f"{site['previous_threshold']['value']:.4f} -> {new_card['threshold']['value']:.4f}"
    )
    print(f"{'metric':<12} {'before':<24} after (fitted on this sample: optimistic)")
    for metric in ("accuracy", "sensitivity", "specificity", "roc_auc"):
        print(f"{metric:<12} {with_ci(site['before'], metric):<24} {with_ci(site['after'], metric)}")
    _print_modes(new_card, site)
    from pneumo_utils.model import ood

    if new_card.get("ood") and ood.detector_path(args.model).is_file():  # the same gate goes with the copy
        outputs.write_bytes(ood.detector_path(output), ood.detector_path(args.model).read_bytes(), args.overwrite)
        new_card["ood"] = {**new_card["ood"], "file": ood.detector_path(output).name}
    elif new_card.pop("ood", None):
        print(f"note: {ood.detector_path(args.model)} is missing: the calibrated copy has no gate", file=sys.stderr)
    model.save_model(calibrated, output, new_card)
    print(f"wrote {output} and {model.card_path(output).name}", file=sys.stderr)
    return 0


def _print_modes(new_card: dict, site: dict) -> None:
    from pneumo_utils.model import operating

    modes = new_card["operating_modes"]
    rules = sorted({mode["rule"].split(":")[0] for mode in modes.values()})
    print(f"\noperating modes ({' / '.join(rules)} rule), figures on this sample (exact 95% intervals):")
    table = operating.modes_table({name: {**mode, **mode["on_sample"]} for name, mode in modes.items()}, False)
    print(table.to_string())
    for name, mode in modes.items():
        print(f"{name} promises: " + "; ".join(operating.promise_text(p) for p in mode["promises"]))
    for name, reason in site["modes_not_fitted"].items():
        print(f"note: {name} not fitted: {reason}", file=sys.stderr)


def _command_gate(args: argparse.Namespace) -> int:
    from pneumo_utils import model
    from pneumo_utils.model import ood

    output = Path(args.output_dir) / f"{args.name or Path(args.model).stem}.keras"
    if output.resolve() == Path(args.model).resolve():
        raise UsageError(f"{output}: would replace the model it is made from; choose another --output-dir")
    for path in (output, model.card_path(output), ood.detector_path(output)):
        refuse_existing(path, args.overwrite)
    card = ood.fit_for_model(args.model, config.resolve_data_dir(args.data_dir), output)
    gate = card["ood"]
    print(
        f"gate fitted on {gate['train_images']} training images; threshold {gate['threshold']:.0f} "
        f"({gate['threshold_rule']}: {gate['validation_stopped']:.1%} of {gate['validation_images']} validation "
        f"X-rays stopped)"
    )
    print(f"wrote {output}, {model.card_path(output).name} and {gate['file']}", file=sys.stderr)
    return 0


def register(commands) -> None:
    """Add this module's command(s) to the ``pneumo`` parser."""
    parser = commands.add_parser(
        "calibrate",
        help="refit a model's temperature and operating modes (single, rule-out, triage) on a labelled sample",
    )
    parser.add_argument("--model", default=str(DEFAULT_MODEL), help=f"model to calibrate (default: {DEFAULT_MODEL})")
    parser.add_argument("--data-dir", default=None, help=DATA_HELP + "; the standard layout, labelled")
    parser.add_argument(
        "--split", default="test-dev", choices=SPLITS, help="the labelled sample to fit on (default: test-dev)"
    )
    parser.add_argument(
        "--sensitivity",
        type=float,
        default=0.95,
        help="the single threshold (and the triage band's lower end) promises this sensitivity (default 0.95)",
    )
    parser.add_argument(
        "--confidence",
        type=float,
        default=0.95,
        help="each promise is a one-sided exact (Clopper-Pearson) lower bound at this confidence (default 0.95)",
    )
    parser.add_argument(
        "--rule-out-sensitivity",
        type=float,
        default=0.98,
        help="rule-out mode: NORMAL only below a threshold promising this sensitivity, the rest REFER (default 0.98)",
    )
    parser.add_argument(
        "--triage-specificity",
        type=float,
        default=0.90,
        help="triage mode: PNEUMONIA only at or above a threshold promising this specificity (default 0.90)",
    )
    parser.add_argument(
        "--triage-sensitivity",
        type=float,
        default=None,
        help="triage mode: the sensitivity its NORMAL threshold promises (default: --sensitivity)",
    )
    parser.add_argument(
        "--rule",
        choices=["bounded", "empirical"],
        default="bounded",
        help="bounded (default): each promise's lower confidence bound meets its target; empirical: the "
        "sample's own rate does (no bound: it holds on new images only about half the time)",
    )
    parser.add_argument("--output-dir", required=True, help="where <name>.keras and its card are written")
    parser.add_argument("--name", default=None, help="file name of the calibrated model (default: the model's)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing calibrated model")
    parser.set_defaults(handler=_command_calibrate)

    gate = commands.add_parser(
        "gate", help="give a model an out-of-distribution gate fitted on its training split (a copy, with its card)"
    )
    gate.add_argument("--model", default=str(DEFAULT_MODEL), help=f"the model (default: {DEFAULT_MODEL})")
    gate.add_argument("--data-dir", default=None, help=DATA_HELP + "; the data set the model was trained on")
    gate.add_argument("--output-dir", required=True, help="where <name>.keras, its card and <name>.ood.npz go")
    gate.add_argument("--name", default=None, help="file name of the copy (default: the model's)")
    gate.add_argument("--overwrite", action="store_true", help="replace an existing copy")
    gate.set_defaults(handler=_command_gate)
