"""The ``pneumo`` command: one entry point for the project's stages.

  pneumo run          execute the four notebooks with papermill (profiles smoke|full) into runs/<profile>-<time>
  pneumo promote      make a finished run's model and results the committed ones (saved_models/, results/)
  pneumo train        train one configuration and record it as an experiment (validation figures only)
  pneumo experiments  gather the recorded experiments into one table
  pneumo predict      probability and label for new X-rays (JPEG, PNG, DICOM), optional overlays
  pneumo gradcam      Grad-CAM / Grad-CAM++ overlays and CAM statistics for image files
  pneumo evaluate     score a saved model on a split of a data set and write metrics JSON
  pneumo bench        train: training/inference speed and peak memory; gradcam: batched vs per-image
  pneumo download     fetch the public data set (Mendeley or Kaggle), verified and extracted safely
  pneumo index        index a data set and report its layout, patients and duplicates

Exit codes: 0 success, 1 a failure while working (a notebook, unreadable data), 2 a usage error.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from pneumo_utils import config as config_module
from pneumo_utils._quiet import import_tensorflow_quietly

DATA_HELP = "data set root (default: $PNEUMO_DATA_DIR, then data/chest_xray)"
NEEDS_TENSORFLOW = {"evaluate", "train", "bench", "gradcam", "predict", "experiments"}
DEFAULT_MODEL = config_module.PROJECT_ROOT / "saved_models" / "pneumonia_cnn.keras"


class UsageError(Exception):
    """Bad command-line input: exit code 2."""


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pneumo-utils")
    except PackageNotFoundError:
        return "unknown (not installed)"


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``["epochs=3", "resume=true"]`` -> ``{"epochs": 3, "resume": True}`` (values parsed as YAML)."""
    overrides = {}
    for pair in pairs:
        key, separator, value = pair.partition("=")
        if not separator or not key.strip():
            raise UsageError(f"-p expects key=value, got {pair!r}")
        overrides[key.strip()] = yaml.safe_load(value)
    return overrides


def _command_run(args: argparse.Namespace) -> int:
    from pneumo_utils import pipeline

    overrides = parse_overrides(args.parameter)
    try:
        summary = pipeline.run_notebooks(
            profile=args.profile,
            data_dir=args.data_dir,
            output_dir=args.output_dir,
            overrides=overrides,
            overwrite=args.overwrite,
            progress_bar=not args.quiet,
        )
    except pipeline.OutputExists as error:
        raise UsageError(str(error)) from None
    except pipeline.NotebookFailed as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except pipeline.RunInterrupted as error:
        print(f"error: {error}", file=sys.stderr)
        return 130
    print(pipeline.summary_text(summary))
    run_dir = (config_module.PROJECT_ROOT / summary["parameters"]["output_dir"]).resolve()
    shown = run_dir.relative_to(Path.cwd()) if run_dir.is_relative_to(Path.cwd()) else run_dir
    print(f"to make this run the committed one: pneumo promote {shown}", file=sys.stderr)
    return 0


def _command_promote(args: argparse.Namespace) -> int:
    from pneumo_utils import pipeline

    written = pipeline.promote(args.run_dir)
    print(f"promoted {args.run_dir}: {len(written)} files written to saved_models/ and results/")
    return 0


def _format_metrics_table(metrics: dict[str, Any]) -> str:
    from pneumo_utils.evaluate import METRIC_NAMES, with_ci

    lines = [f"{'metric':<12} value [95% CI]", "-" * 36]
    for name in METRIC_NAMES:
        lines.append(f"{name:<12} {with_ci(metrics, name)}")
    (tn, fp), (fn, tp) = metrics["confusion_matrix"]
    lines.append(f"n={metrics['n']}  threshold={metrics['threshold']:.4f}  TN={tn} FP={fp} FN={fn} TP={tp}")
    return "\n".join(lines)


def _command_evaluate(args: argparse.Namespace) -> int:
    from pneumo_utils import data, evaluate, model
    from pneumo_utils.images import TooManyUnreadableError

    output = Path(args.output) if args.output else None
    _refuse_existing(output, args.overwrite)
    try:
        metrics, record = evaluate.evaluate_saved_model(
            args.model, config_module.resolve_data_dir(args.data_dir), args.split, batch_size=args.batch_size
        )
    except (model.ModelLoadError, data.DatasetLayoutError) as error:
        raise UsageError(str(error)) from None
    except TooManyUnreadableError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    counts = record["splits"][args.split]
    if counts["unreadable_skipped"]:
        print(f"skipped {counts['unreadable_skipped']} unreadable image(s) of {counts['images_in_split']}")
    print(f"{args.split} split of {record['data_dir']} (fingerprint {record['data_fingerprint']})")
    print(_format_metrics_table(metrics))
    if output:
        status = _save(output, _json_bytes(metrics), args.overwrite)
        status = max(status, _save(output.with_suffix(".provenance.json"), _json_bytes(record), args.overwrite))
        return status
    return 0


def _refuse_existing(output: Path | None, overwrite: bool) -> None:
    """Before any work: an output that exists (and no --overwrite), or that is a folder, is a usage error."""
    from pneumo_utils import outputs

    if output is None:
        return
    try:
        outputs.refuse_existing(output, overwrite)
    except outputs.OutputError as error:
        raise UsageError(str(error)) from None


def _json_bytes(payload: Any) -> bytes:
    from pneumo_utils.records import finite

    return (json.dumps(finite(payload), indent=2, default=str, allow_nan=False) + "\n").encode()


def _save(output: Path, payload: bytes, overwrite: bool) -> int:
    """Write one finished result (exclusive unless --overwrite); on failure say so in one line, keep the
    work in a rescue file, and return exit status 1."""
    from pneumo_utils import outputs

    written, problem = outputs.save_or_rescue(output, payload, overwrite)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 1
    print(f"wrote {outputs.display(written)}", file=sys.stderr)
    return 0


def _command_train(args: argparse.Namespace) -> int:
    from pneumo_utils import experiments
    from pneumo_utils.data import SHIFT_VIEWS

    views = _parse_views(args.views, SHIFT_VIEWS)
    overrides = parse_overrides(args.parameter)
    record_path = Path(args.root) / args.name / experiments.RECORD_NAME
    if record_path.exists() and views and not args.overwrite:
        print(f"{args.name}: already recorded; training the missing shift views only", file=sys.stderr)
    else:
        try:
            record = experiments.run_experiment(args.name, args.root, profile=args.profile, data_dir=args.data_dir,
                                                overrides=overrides, overwrite=args.overwrite,
                                                description=args.description)
        except FileExistsError as error:
            raise UsageError(str(error)) from None
        validation = record["validation"]
        print(f"{args.name}: validation accuracy {validation['accuracy']:.3f}, sensitivity "
              f"{validation['sensitivity']:.3f}, specificity {validation['specificity']:.3f}, ROC-AUC "
              f"{validation['roc_auc']:.3f}, {record['training']['seconds'] / 60:.1f} min")
        print(f"wrote {record_path}")
    if views:
        record = experiments.run_views(args.name, args.root, views, profile=args.profile, data_dir=args.data_dir,
                                       overrides=overrides)
        for view, result in record["views"].items():
            shifted = result["shifted"]
            print(f"  {view}: ROC-AUC {shifted['roc_auc']:.3f}, sensitivity {shifted['sensitivity']:.3f}, "
                  f"specificity {shifted['specificity']:.3f}")
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
    from pneumo_utils import experiments

    if args.data_dir:
        for name in experiments.add_missing_stress(args.root, args.data_dir):
            print(f"stress-validated {name}", file=sys.stderr)
    notes = Path(args.notes).read_text() if args.notes else ""
    ensembles = [item.split("+") for item in args.ensemble]
    output = experiments.write_table(args.root, args.output, notes, ensembles=ensembles)
    print(output.read_text())
    return 0


def _command_bench(args: argparse.Namespace) -> int:
    from pneumo_utils import bench
    from pneumo_utils.model import ModelLoadError
    from pneumo_utils.records import provenance, write_json_atomic

    output = Path(args.output) if args.output else None
    if output and output.exists() and not args.overwrite:
        raise UsageError(f"{output}: already exists; pass --overwrite to replace it")
    if args.what == "train":
        result = bench.bench_train(args.profile, images=args.images or 512, overrides=parse_overrides(args.parameter))
        headline = ("train_images_per_s", "inference_images_per_s", "peak_rss_mb")
    else:
        try:
            result = bench.bench_gradcam(args.model, images=args.images or 32, batch_size=args.batch_size,
                                         data_dir=args.data_dir)
        except ModelLoadError as error:
            raise UsageError(str(error)) from None
        headline = ("per_image_ms_reference", "per_image_ms_batched", "speedup", "max_abs_diff")
    result.update(provenance())
    print(json.dumps({key: result[key] for key in headline}))
    if output:
        write_json_atomic(output, result)
        print(f"wrote {output}")
    return 0


def _load_for_prediction(args: argparse.Namespace):
    """Inputs and model for predict/gradcam; bad paths and bad models are usage errors (exit 2)."""
    from pneumo_utils import predict
    from pneumo_utils.model import ModelLoadError, load_model

    try:
        files, problems = predict.collect_inputs(args.inputs)
        network, card = load_model(args.model)
    except (predict.InputPathError, ModelLoadError) as error:
        raise UsageError(str(error)) from None
    return files, problems, network, card


def _command_gradcam(args: argparse.Namespace) -> int:
    from pneumo_utils import predict

    report_path = Path(args.out) / "gradcam.json"
    _refuse_existing(report_path, args.overwrite)
    files, problems, network, card = _load_for_prediction(args)
    threshold = card["threshold"]["value"]
    writer = predict.OverlayWriter(network, threshold, args.out, args.method, args.layer)
    records = problems + predict.predict_files(network, card, files, batch_size=args.batch_size, on_batch=writer)
    report = []
    for record in records:
        entry = {"path": record.path, "probability": record.probability, "label": record.label,
                 "method": args.method, "error": record.error}
        if record.error:
            print(f"error: {record.error}", file=sys.stderr)
        else:
            entry.update(writer.statistics[record.path])
            print(f"{record.path}: {record.probability:.3f} {record.label} -> {Path(args.out) / entry['overlay']}")
        report.append(entry)
    status = _save(report_path, _json_bytes({"model": str(args.model), "threshold": threshold, "method": args.method,
                                             "target_layer": writer.explainer.layer_name, "images": report}),
                   args.overwrite)
    return 1 if status or any(entry["error"] for entry in report) else 0


def _command_predict(args: argparse.Namespace) -> int:
    from pneumo_utils import predict

    output = Path(args.output) if args.output else None
    if output and output.suffix.lower() not in (".csv", ".json"):
        raise UsageError(f"{output}: --output must end in .csv or .json")
    _refuse_existing(output, args.overwrite)
    files, problems, network, card = _load_for_prediction(args)
    writer = (predict.OverlayWriter(network, card["threshold"]["value"], args.gradcam)
              if args.gradcam else None)
    records = problems + predict.predict_files(network, card, files, batch_size=args.batch_size, on_batch=writer)
    rows = [{"path": r.path, "probability": r.probability, "label": r.label, "error": r.error} for r in records]
    width = max([len(row["path"]) for row in rows] + [4])
    print(f"{'path':<{width}}  probability  label")
    for row in rows:
        if row["error"]:
            print(f"error: {row['error']}", file=sys.stderr)
        else:
            print(f"{row['path']:<{width}}  {row['probability']:>11.4f}  {row['label']}")
    status = 0
    if output:
        if output.suffix.lower() == ".json":
            payload = _json_bytes(rows)
        else:
            import pandas as pd

            payload = pd.DataFrame(rows, columns=["path", "probability", "label", "error"]).to_csv(
                index=False).encode()
        status = _save(output, payload, args.overwrite)
    failed = sum(1 for row in rows if row["error"])
    if failed:
        print(f"{failed} of {len(rows)} input(s) failed", file=sys.stderr)
    return 1 if failed or status else 0


def _command_download(args: argparse.Namespace) -> int:
    from pneumo_utils import download
    from pneumo_utils.data import DatasetLayoutError

    try:
        root = download.download(args.source, args.dest, url=args.url, sha256=args.sha256, overwrite=args.overwrite)
    except FileExistsError as error:
        raise UsageError(str(error)) from None
    except (download.DownloadError, DatasetLayoutError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"data set ready in {root}; check it with: pneumo index --data-dir {root}")
    return 0


def _command_index(args: argparse.Namespace) -> int:
    from pneumo_utils import data

    try:
        index = data.index_dataset(config_module.resolve_data_dir(args.data_dir))
    except data.DatasetLayoutError as error:
        raise UsageError(str(error)) from None
    report = data.summary(index, config_module.resolve_data_dir(args.data_dir)) | data.problems(index)
    print(json.dumps(report, indent=2, default=int))
    for line in report["unreadable"]:
        print(f"unreadable: {line}", file=sys.stderr)
    for conflict in report["label_conflicts"]:
        print(f"label conflict: {conflict['files']} ({conflict['labels']}, splits {conflict['splits']})",
              file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pneumo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="execute the four notebooks in order with papermill")
    run.add_argument("--profile", choices=config_module.available_profiles(), default=None,
                     help="parameter set: smoke (synthetic data, minutes) or full (real data); default full")
    run.add_argument("--data-dir", default=None, help=DATA_HELP)
    run.add_argument("--output-dir", default=None,
                     help="where the run goes (default: a new runs/<profile>-<time>); never saved_models/ or results/")
    run.add_argument("-p", "--parameter", action="append", default=[], metavar="KEY=VALUE",
                     help="override one profile setting, e.g. -p epochs=5 (repeatable)")
    run.add_argument("--overwrite", action="store_true", help="replace a run already in the output directory")
    run.add_argument("--quiet", action="store_true", help="no papermill progress bar")
    run.set_defaults(handler=_command_run)

    promote = commands.add_parser("promote", help="make a finished run's model and results the committed ones")
    promote.add_argument("run_dir", help="the run folder (runs/<profile>-<time>)")
    promote.set_defaults(handler=_command_promote)

    evaluate = commands.add_parser("evaluate", help="score a saved model on a split and write metrics JSON")
    evaluate.add_argument("--model", default=str(DEFAULT_MODEL), help=f"model file (default: {DEFAULT_MODEL})")
    evaluate.add_argument("--data-dir", default=None, help=DATA_HELP)
    evaluate.add_argument("--split", default="test", choices=["test", "val", "val-folder"],
                          help="test/ folder (default), the patient-grouped validation split (val), or val/ folder")
    evaluate.add_argument("--output", default=None, metavar="FILE.json", help="write the metrics here")
    evaluate.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    evaluate.add_argument("--batch-size", type=int, default=64)
    evaluate.set_defaults(handler=_command_evaluate)

    train = commands.add_parser("train", help="train one configuration and record it as an experiment")
    train.add_argument("--name", required=True, help="experiment name (a folder under --root)")
    train.add_argument("--description", default="", help="one line on what this experiment tries")
    train.add_argument("--root", default=str(config_module.PROJECT_ROOT / "results" / "experiments"))
    train.add_argument("--profile", choices=config_module.available_profiles(), default=None)
    train.add_argument("--data-dir", default=None, help=DATA_HELP)
    train.add_argument("-p", "--parameter", action="append", default=[], metavar="KEY=VALUE")
    train.add_argument("--overwrite", action="store_true", help="redo an experiment already recorded")
    train.add_argument("--views", default="all",
                       help="shift views to train and score as well: all (default), none, or a comma-separated "
                            "list of: random, cross-batch IM->NORMAL2, cross-batch NORMAL2->IM, id-range")
    train.set_defaults(handler=_command_train)

    gradcam = commands.add_parser("gradcam", help="Grad-CAM overlays and CAM statistics for X-ray files")
    gradcam.add_argument("inputs", nargs="+", metavar="IMAGE", help="image files or folders (searched recursively)")
    gradcam.add_argument("--out", required=True, help="folder for the overlay PNGs and gradcam.json")
    gradcam.add_argument("--method", choices=["gradcam", "gradcam++"], default="gradcam")
    gradcam.add_argument("--model", default=str(DEFAULT_MODEL), help=f"model file (default: {DEFAULT_MODEL})")
    gradcam.add_argument("--layer", default=None, help="target layer (default: the last convolution)")
    gradcam.add_argument("--overwrite", action="store_true", help="replace an existing gradcam.json in --out")
    gradcam.add_argument("--batch-size", type=int, default=32)
    gradcam.set_defaults(handler=_command_gradcam)

    predict = commands.add_parser("predict", help="probability and label for new X-rays (JPEG, PNG, DICOM)")
    predict.add_argument("inputs", nargs="+", metavar="PATH", help="image files or folders (searched recursively)")
    predict.add_argument("--model", default=str(DEFAULT_MODEL), help=f"model file (default: {DEFAULT_MODEL})")
    predict.add_argument("--gradcam", default=None, metavar="DIR", help="also write a Grad-CAM overlay per image here")
    predict.add_argument("--output", default=None, metavar="FILE.csv|FILE.json",
                         help="one row per input: path, probability, label, error")
    predict.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    predict.add_argument("--batch-size", type=int, default=64)
    predict.set_defaults(handler=_command_predict)

    table = commands.add_parser("experiments", help="gather recorded experiments into one table")
    table.add_argument("--root", default=str(config_module.PROJECT_ROOT / "results" / "experiments"))
    table.add_argument("--output", default=str(config_module.PROJECT_ROOT / "results" / "experiments.md"))
    table.add_argument("--data-dir", default=None, help="also stress-validate experiments that lack it")
    table.add_argument("--ensemble", action="append", default=[], metavar="A+B",
                       help="also score the ensemble of these experiments on the shift views (repeatable)")
    table.add_argument("--notes", default=None, help="a Markdown file appended below the table")
    table.set_defaults(handler=_command_experiments)

    bench = commands.add_parser("bench", help="benchmarks that write JSON")
    bench.add_argument("what", choices=["train", "gradcam"],
                       help="train: training/inference throughput and peak memory; "
                            "gradcam: batched Grad-CAM against the per-image keras.io recipe")
    bench.add_argument("--profile", choices=config_module.available_profiles(), default="full",
                       help="train: the profile whose model and settings are measured")
    bench.add_argument("--images", type=int, default=None,
                       help="train: synthetic images per timed epoch (512); gradcam: images explained (32)")
    bench.add_argument("--model", default=str(DEFAULT_MODEL), help="gradcam: the model to explain")
    bench.add_argument("--data-dir", default=None, help="gradcam: take images from this data set's train/")
    bench.add_argument("--batch-size", type=int, default=32, help="gradcam: batch size of the batched version")
    bench.add_argument("-p", "--parameter", action="append", default=[], metavar="KEY=VALUE")
    bench.add_argument("--output", default=None, metavar="FILE.json")
    bench.add_argument("--overwrite", action="store_true")
    bench.set_defaults(handler=_command_bench)

    fetch = commands.add_parser("download", help="fetch the public data set into --dest/chest_xray")
    fetch.add_argument("--source", choices=["mendeley", "kaggle"], default="mendeley",
                       help="mendeley: ChestXRay2017.zip over https; kaggle: kagglehub (pip install kagglehub)")
    fetch.add_argument("--dest", default=str(config_module.PROJECT_ROOT / "data"), help="folder to install into")
    fetch.add_argument("--url", default=None, help="download this zip instead of the source's address")
    fetch.add_argument("--sha256", default=None, help="expected SHA-256 of the zip")
    fetch.add_argument("--overwrite", action="store_true", help="replace an existing <dest>/chest_xray")
    fetch.set_defaults(handler=_command_download)

    index = commands.add_parser("index", help="check a data set's layout; print counts, fingerprint, duplicates")
    index.add_argument("--data-dir", default=None, help=DATA_HELP)
    index.set_defaults(handler=_command_index)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command in NEEDS_TENSORFLOW:
        import_tensorflow_quietly()
    from pneumo_utils.config import SettingsError
    from pneumo_utils.data import DatasetLayoutError
    from pneumo_utils.outputs import OutputError

    try:
        return args.handler(args)
    except OutputError as error:  # a result that could not be written, or a folder in use
        print(f"error: {error}", file=sys.stderr)
        return 1
    except (UsageError, SettingsError, DatasetLayoutError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
