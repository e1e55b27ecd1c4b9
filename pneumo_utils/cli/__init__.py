"""The ``pneumo`` command: one entry point for the project's stages.

  pneumo run          execute the four notebooks with papermill (profiles smoke|full) into runs/<profile>-<time>
  pneumo sweep        the notebooks for many parameter sets (a grid file) on a local or remote Dask cluster
  pneumo promote      make a finished run's model and results the committed ones (saved_models/, results/)
  pneumo train        train one configuration and record it as an experiment (validation figures only)
  pneumo experiments  gather the recorded experiments into one table
  pneumo predict      probability, label and decision (--mode single|rule-out|triage) for new X-rays, overlays
  pneumo gradcam      Grad-CAM / Grad-CAM++ overlays and CAM statistics for image files
  pneumo evaluate     score a saved model on a split of a data set and write metrics JSON
  pneumo calibrate    refit temperature and the operating modes (bounded promises) on a labelled sample of a site
  pneumo explore      the interactive explorer (threshold lab, heatmaps, stress sliders) as a web app
  pneumo report       one self-contained HTML report of a run (figures embedded; --pdf with Chromium)
  pneumo bench        train: training speed and memory; gradcam: batched vs per-image; sweep: serial vs Dask
  pneumo download     fetch the public data set (Mendeley or Kaggle), or the ImageNet weights (--weights)
  pneumo index        index a data set and report its layout, patients and duplicates

Exit codes: 0 success, 1 a failure while working (a notebook, unreadable data), 2 a usage error.
"""

from __future__ import annotations

import argparse
import sys

from pneumo_utils._quiet import import_tensorflow_quietly
from pneumo_utils.cli import bench, calibrate, download, evaluate, explore, index, predict, run, sweep, train
from pneumo_utils.cli.common import UsageError, parse_overrides  # noqa: F401 - part of the package interface

# Each command declares its options next to its code (``register`` in its module); TensorFlow is imported
# only by the commands that need it, so ``pneumo --help`` and ``pneumo run`` start fast.
COMMAND_MODULES = (run, sweep, evaluate, calibrate, train, predict, explore, bench, download, index)
NEEDS_TENSORFLOW = {
    "evaluate",
    "calibrate",
    "gate",
    "promote",
    "train",
    "bench",
    "gradcam",
    "predict",
    "experiments",
    "explore",
}


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pneumo-utils")
    except PackageNotFoundError:
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pneumo", description=__doc__.split("\n\n")[0].replace("``", ""))
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", required=True)
    for module in COMMAND_MODULES:
        module.register(commands)
    return parser


# the options that name something a command writes; `pneumo promote` is the one command that writes the
# committed saved_models/ and results/ (the experiments commands keep the lab notebook's records there)
OUTPUT_OPTIONS = {
    "output": "--output",
    "output_dir": "--output-dir",
    "out": "--out",
    "gradcam": "--gradcam",
    "dest": "--dest",
    "log": "--log",
    "root": "--root",
}
NAME_OPTIONS = {"name": "--name"}


def _refuse_committed_outputs(args) -> None:
    from pneumo_utils import outputs

    if args.command == "promote":
        return
    allowed = outputs.EXPERIMENT_RECORDS if args.command in ("train", "experiments") else ()
    for attribute, flag in OUTPUT_OPTIONS.items():
        value = getattr(args, attribute, None)
        if isinstance(value, str) and value:
            outputs.refuse_committed(value, flag, allowed)
    for attribute, flag in NAME_OPTIONS.items():
        value = getattr(args, attribute, None)
        if isinstance(value, str):
            outputs.check_name(value, flag)


# The one table from the project's error types to exit codes, for every command: the user can fix it (bad
# input, a usage problem, an output that exists or is not allowed): 2; it failed while working: 1;
# interrupted: 130. Types are named, not imported, so a command that needs no TensorFlow does not load it.
EXIT_CODES = {
    "pneumo_utils.cli.common.UsageError": 2,
    "pneumo_utils.config.SettingsError": 2,
    "pneumo_utils.data.index.DatasetLayoutError": 2,
    "pneumo_utils.outputs.CommittedOutput": 2,
    "pneumo_utils.outputs.OutputExists": 2,
    "pneumo_utils.model.card.ModelLoadError": 2,
    "pneumo_utils.predict.InputPathError": 2,
    "pneumo_utils.model.calibrate.CalibrationSampleError": 2,
    "pneumo_utils.model.ood.OodError": 2,
    "pneumo_utils.model.operating.OperatingPointError": 2,
    "pneumo_utils.explain.cam.ExplainError": 2,
    "pneumo_utils.reading.FileRefused": 2,
    "pneumo_utils.outputs.OutputError": 1,
    "pneumo_utils.model.inference.InvalidScores": 1,
    "pneumo_utils.images.TooManyUnreadableError": 1,
    "pneumo_utils.data.download.DownloadError": 1,
    "pneumo_utils.runs.pipeline.NotebookFailed": 1,
    "pneumo_utils.runs.report.PdfError": 1,
    "pneumo_utils.runs.pipeline.RunInterrupted": 130,
    "builtins.KeyboardInterrupt": 130,
}


def exit_code(error: BaseException) -> int | None:
    """The exit code of an error the project raises on purpose (its most specific type in :data:`EXIT_CODES`),
    or None for an unexpected one (a bug: its traceback is shown)."""
    for kind in type(error).__mro__:
        code = EXIT_CODES.get(f"{kind.__module__}.{kind.__qualname__}")
        if code is not None:
            return code
    return None


def _finish_interrupted_promote() -> None:
    """A promote killed midway leaves its journal in saved_models/: every command (even ``--version``) first
    finishes it (all files were swapped) or undoes it (any were not), and says so in one line."""
    from pneumo_utils import outputs
    from pneumo_utils.config import SAVED_MODEL

    if not (SAVED_MODEL.parent / outputs.JOURNAL_NAME).exists():
        return
    try:
        done = outputs.recover_promote(SAVED_MODEL.parent)
    except outputs.FolderBusy:
        return  # a promote is running now: it is its own to finish
    except outputs.OutputError as error:
        print(f"error: {error}", file=sys.stderr)
        return
    if done:
        print(
            f"note: a pneumo promote into {SAVED_MODEL.parent.name}/ had stopped midway; it was {done}", file=sys.stderr
        )


def main(argv: list[str] | None = None) -> int:
    _finish_interrupted_promote()
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command in NEEDS_TENSORFLOW:
        import_tensorflow_quietly()
    try:
        _refuse_committed_outputs(args)
        return args.handler(args)
    except (Exception, KeyboardInterrupt) as error:
        code = exit_code(error)
        if code is None:
            raise
        message = str(error) or "interrupted"
        print(message if isinstance(error, KeyboardInterrupt) or code == 130 else f"error: {message}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
