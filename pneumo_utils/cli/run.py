"""``pneumo run`` (the four notebooks with papermill) and ``pneumo promote`` (a run becomes the committed one)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pneumo_utils import config
from pneumo_utils.cli.common import (
    DATA_HELP,
    parse_overrides,
)


def _command_run(args: argparse.Namespace) -> int:
    from pneumo_utils.runs import pipeline

    overrides = parse_overrides(args.parameter)
    summary = pipeline.run_notebooks(
        profile=args.profile,
        data_dir=args.data_dir,
        output_dir=args.output_dir,
        overrides=overrides,
        overwrite=args.overwrite,
        progress_bar=not args.quiet and sys.stderr.isatty(),  # a bar in a log file is noise
    )
    print(pipeline.summary_text(summary))
    run_dir = (config.PROJECT_ROOT / summary["parameters"]["output_dir"]).resolve()
    shown = run_dir.relative_to(Path.cwd()) if run_dir.is_relative_to(Path.cwd()) else run_dir
    if pipeline.is_synthetic_run(summary):
        print(f"a smoke run on synthetic images: look at {shown}/executed/ (not a model to promote)", file=sys.stderr)
    else:
        print(f"to make this run the committed one: pneumo promote {shown}", file=sys.stderr)
    return 0


def _command_promote(args: argparse.Namespace) -> int:
    from pneumo_utils.config import REFERENCE_RESULTS
    from pneumo_utils.runs import pipeline

    if Path(args.run_dir).resolve() != REFERENCE_RESULTS.resolve():
        written = pipeline.promote(args.run_dir, allow_synthetic=args.allow_synthetic)
        print(f"promoted {args.run_dir}: {len(written)} files written to saved_models/ and results/")
    pages = pipeline.write_pages()
    print("pages written from the committed files: " + ", ".join(config.portable_path(page) for page in pages))
    return 0


def register(commands) -> None:
    """Add this module's command(s) to the ``pneumo`` parser."""
    run = commands.add_parser("run", help="execute the four notebooks in order with papermill")
    run.add_argument(
        "--profile",
        choices=config.available_profiles(),
        default=None,
        help="parameter set: smoke (synthetic data, minutes) or full (real data); default full",
    )
    run.add_argument("--data-dir", default=None, help=DATA_HELP)
    run.add_argument(
        "--output-dir",
        default=None,
        help="where the run goes (default: a new runs/<profile>-<time>); never saved_models/ or results/",
    )
    run.add_argument(
        "-p",
        "--parameter",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one profile setting, e.g. -p epochs=5 (repeatable)",
    )
    run.add_argument("--overwrite", action="store_true", help="replace a run already in the output directory")
    run.add_argument(
        "--quiet",
        action="store_true",
        help="no papermill progress bar (none either when the output goes to a file or pipe)",
    )
    run.set_defaults(handler=_command_run)

    promote = commands.add_parser("promote", help="make a finished run's model and results the committed ones")
    promote.add_argument(
        "run_dir",
        help="the run folder (runs/<profile>-<time>); `results` only writes the "
        "pages again (results/README.md, results/report.html, README's table)",
    )
    promote.add_argument(
        "--allow-synthetic",
        action="store_true",
        help="promote a run trained on synthetic images (a smoke run) all the same",
    )
    promote.set_defaults(handler=_command_promote)
