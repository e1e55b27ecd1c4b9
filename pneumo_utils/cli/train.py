"""``pneumo train`` (one recorded experiment, with its shift views) and ``pneumo experiments`` (the table)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pneumo_utils import config
from pneumo_utils.cli.common import (
    DATA_HELP,
    UsageError,
    parse_overrides,
)


def _command_train(args: argparse.Namespace) -> int:
    from pneumo_utils.data import SHIFT_VIEWS
    from pneumo_utils.runs import experiments

    views = _parse_views(args.views, SHIFT_VIEWS)
    overrides = parse_overrides(args.parameter)
    record_path = Path(args.root) / args.name / experiments.RECORD_NAME
    if args.views_only and (not views or "random" in views):
        raise UsageError(
            "--views-only needs --views with held-out views only (the random view is the model that --views-only skips)"
        )
    if args.views_only:
        print(f"{args.name}: shift views only; no model on the usual split is trained", file=sys.stderr)
    elif record_path.exists() and views and not args.overwrite:
        print(f"{args.name}: already recorded; training the missing shift views only", file=sys.stderr)
    else:
        record = experiments.run_experiment(
            args.name,
            args.root,
            profile=args.profile,
            data_dir=args.data_dir,
            overrides=overrides,
            overwrite=args.overwrite,
            description=args.description,
        )
        validation = record["validation"]
        print(
            f"{args.name}: validation accuracy {validation['accuracy']:.3f}, sensitivity "
            f"{validation['sensitivity']:.3f}, specificity {validation['specificity']:.3f}, ROC-AUC "
            f"{validation['roc_auc']:.3f}, {record['training']['seconds'] / 60:.1f} min"
        )
        print(f"wrote {record_path}")
    if views:
        record = experiments.run_views(
            args.name, args.root, views, profile=args.profile, data_dir=args.data_dir, overrides=overrides
        )
        for view, result in record["views"].items():
            shifted = result["shifted"]
            print(
                f"  {view}: ROC-AUC {shifted['roc_auc']:.3f}, sensitivity {shifted['sensitivity']:.3f}, "
                f"specificity {shifted['specificity']:.3f}"
            )
        print(f"wrote {record_path.with_name(experiments.VIEWS_NAME)}")
    return 0


def _parse_views(text: str, known: tuple[str, ...]) -> list[str]:
    """``all``, ``none`` or a comma-separated list of shift view names."""
    if text == "all":
        return list(known)
    if text == "none":
        return []
    views = [item.strip() for item in text.split(",") if item.strip()]
    unknown = [view for view in views if view not in known]
    if unknown:
        raise UsageError(f"unknown shift view(s) {unknown}; choose all, none or from {list(known)}")
    return views


def _command_experiments(args: argparse.Namespace) -> int:
    from pneumo_utils.runs import experiments, tables

    if args.data_dir:
        for name in experiments.add_missing_stress(args.root, args.data_dir):
            print(f"stress-validated {name}", file=sys.stderr)
    for item in args.score_on_test_dev:
        name, separator, model_path = item.partition("=")
        if not separator or not name or "/" in name or name.startswith("."):
            raise UsageError(f"--score-on-test-dev expects NAME=MODEL_PATH with a plain NAME, got {item!r}")
        record = experiments.record_saved_model_on_test_dev(
            name, model_path, args.root, config.resolve_data_dir(args.data_dir)
        )
        print(
            f"{name}: test-dev (used for selection) ROC-AUC {record['roc_auc']:.3f}, accuracy "
            f"{record['accuracy']:.3f}, sensitivity {record['sensitivity']:.3f}, specificity "
            f"{record['specificity']:.3f}",
            file=sys.stderr,
        )
    notes = Path(args.notes).read_text() if args.notes else ""
    ensembles = [item.split("+") for item in args.ensemble]
    held = tables.recorded_rows(Path(args.output).with_suffix(".csv"))
    found = len(tables.experiments_table(args.root))
    if found < held and not args.overwrite:
        raise UsageError(
            f"{args.output}: holds {held} experiments, --root {args.root} has {found}; a table is not "
            "rewritten from fewer records (pass --overwrite to replace it)"
        )
    output = tables.write_table(args.root, args.output, notes, ensembles=ensembles)
    print(output.read_text())
    return 0


def register(commands) -> None:
    """Add this module's command(s) to the ``pneumo`` parser."""
    train = commands.add_parser("train", help="train one configuration and record it as an experiment")
    train.add_argument("--name", required=True, help="experiment name (a folder under --root)")
    train.add_argument("--description", default="", help="one line on what this experiment tries")
    train.add_argument("--root", default=str(config.PROJECT_ROOT / "results" / "experiments"))
    train.add_argument("--profile", choices=config.available_profiles(), default=None)
    train.add_argument("--data-dir", default=None, help=DATA_HELP)
    train.add_argument("-p", "--parameter", action="append", default=[], metavar="KEY=VALUE")
    train.add_argument("--overwrite", action="store_true", help="redo an experiment already recorded")
    train.add_argument(
        "--views",
        default="none",
        help="shift views to train and score as well (each costs a training): all, none (default), "
        "or a comma-separated list of: random, cross-batch IM->NORMAL2, cross-batch NORMAL2->IM, "
        "id-range; an experiment already recorded gets only the views it lacks",
    )
    train.add_argument(
        "--views-only",
        action="store_true",
        help="train and score only the --views given, not the model on the usual split (a cheaper "
        "screen of a recipe, or an ensemble member scored with pneumo experiments --ensemble)",
    )
    train.set_defaults(handler=_command_train)

    table = commands.add_parser("experiments", help="gather recorded experiments into one table")
    table.add_argument("--root", default=str(config.PROJECT_ROOT / "results" / "experiments"))
    table.add_argument("--output", default=str(config.PROJECT_ROOT / "results" / "experiments.md"))
    table.add_argument("--data-dir", default=None, help="also stress-validate experiments that lack it")
    table.add_argument(
        "--ensemble",
        action="append",
        default=[],
        metavar="A+B",
        help="a recipe's seeds (or an ensemble of recipes): its mean and ensemble on test-dev, and "
        "its ensemble on the shift views (repeatable)",
    )
    table.add_argument("--notes", default=None, help="a Markdown file appended below the table")
    table.add_argument(
        "--overwrite", action="store_true", help="rewrite the table even from fewer records than it holds"
    )
    table.add_argument(
        "--score-on-test-dev",
        action="append",
        default=[],
        metavar="NAME=MODEL",
        help="score a saved model (e.g. the committed one) on test-dev of --data-dir and record it "
        "as NAME in the test-dev table (repeatable)",
    )
    table.set_defaults(handler=_command_experiments)
