"""``pneumo bench``: speed and memory, written as JSON (never timed tests)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pneumo_utils import config
from pneumo_utils.cli.common import (
    DEFAULT_MODEL,
    UsageError,
    json_bytes,
    parse_overrides,
    positive_int,
    refuse_existing,
    save,
)


def _command_bench(args: argparse.Namespace) -> int:
    from pneumo_utils.records import provenance
    from pneumo_utils.runs import bench

    output = Path(args.output) if args.output else None
    refuse_existing(output, args.overwrite)
    screenshot = Path(args.screenshot) if args.screenshot else None
    if screenshot is not None and args.what != "explore":
        raise UsageError("--screenshot goes with pneumo bench explore")
    refuse_existing(screenshot, args.overwrite)
    if args.what == "sweep":
        result = bench.bench_sweep(workers=args.workers)
        headline = ("serial_s", "parallel_s", "speedup", "workers")
    elif args.what == "train":
        result = bench.bench_train(args.profile, images=args.images or 512, overrides=parse_overrides(args.parameter))
        headline = (
            "train_images_per_s",
            "inference_images_per_s",
            "forward_flops_per_image",
            "train_gflops_per_s",
            "peak_rss_mb",
        )
    elif args.what == "explore":
        import tempfile

        from pneumo_utils.runs import bench_explore

        with tempfile.TemporaryDirectory(prefix="pneumo-screenshot-") as folder:
            taken = Path(folder) / "explorer.png" if screenshot else None
            try:
                result = bench_explore.bench_explore(
                    args.pages,
                    args.run,
                    args.data_dir,
                    args.explore_model,
                    screenshot=taken,
                    pool=args.pool,
                    server_log=args.server_log,
                )
            except bench_explore.BenchError as error:
                raise UsageError(str(error)) from None
            if taken is not None:
                if not taken.is_file():
                    raise UsageError("no page became ready, so there is no screenshot; nothing was written")
                status = save(screenshot, taken.read_bytes(), args.overwrite)
                if status:
                    return status
        headline = (
            "pages",
            "pool",
            "pages_ready",
            "time_to_ready_s",
            "threshold_change_s",
            "heatmap_s",
            "peak_server_pss_mb",
        )
    elif args.what == "ood":
        from pneumo_utils.model import ood

        result = ood.bench_ood(args.model, config.resolve_data_dir(args.data_dir), per_family=args.images or 24)
        headline = ("worst_family_auroc", "real_films_passed_worst", "unreadable_stopped_worst", "in_distribution")
    else:
        result = bench.bench_gradcam(
            args.model, images=args.images or 32, batch_size=args.batch_size, data_dir=args.data_dir
        )
        headline = ("per_image_ms_reference", "per_image_ms_batched", "speedup", "max_abs_diff")
    result.update(provenance())
    print(json.dumps({key: result[key] for key in headline}))
    return save(output, json_bytes(result), args.overwrite) if output else 0


def register(commands) -> None:
    """Add this module's command(s) to the ``pneumo`` parser."""
    bench = commands.add_parser("bench", help="benchmarks that write JSON")
    bench.add_argument(
        "what",
        choices=["train", "gradcam", "sweep", "ood", "explore"],
        help="train: training/inference throughput and peak memory; "
        "gradcam: batched Grad-CAM against the per-image keras.io recipe; "
        "sweep: a 4-run smoke grid one after another, then on a local Dask cluster; "
        "ood: the out-of-distribution gate against inputs that are not chest X-rays (AUROC per family); "
        "explore: N Chromium pages opening pneumo explore at once (time to ready, a threshold change, a "
        "heatmap, peak server memory)",
    )
    bench.add_argument(
        "--profile",
        choices=config.available_profiles(),
        default="full",
        help="train: the profile whose model and settings are measured",
    )
    bench.add_argument(
        "--images",
        type=positive_int,
        default=None,
        help="train: synthetic images per timed epoch (512); gradcam: images explained (32)",
    )
    bench.add_argument("--model", default=str(DEFAULT_MODEL), help="gradcam: the model to explain")
    bench.add_argument(
        "--data-dir",
        default=None,
        help="gradcam: take images from this data set's train/; explore: where the run's images are",
    )
    bench.add_argument("--batch-size", type=positive_int, default=32, help="gradcam: batch size of the batched version")
    bench.add_argument("--workers", type=positive_int, default=None, help="sweep: local cluster workers (one per core)")
    bench.add_argument("--pages", type=positive_int, default=1, help="explore: pages opened at once (1)")
    bench.add_argument(
        "--pool",
        type=int,
        default=0,
        metavar="N",
        help="explore: kernels the server keeps preheated (pneumo explore --pool); pages open once it is full (0)",
    )
    bench.add_argument(
        "--server-log",
        default=None,
        metavar="FILE",
        help="explore: keep the server's log here (default: a temporary file, removed)",
    )
    bench.add_argument(
        "--run", default=None, metavar="DIR", help="explore: the run to explore (default: the committed run)"
    )
    bench.add_argument("--explore-model", default=None, metavar="PATH", help="explore: the model (default: the run's)")
    bench.add_argument(
        "--screenshot",
        default=None,
        metavar="FILE.png",
        help="explore: also save the first page, once ready, as a full-page PNG",
    )
    bench.add_argument("-p", "--parameter", action="append", default=[], metavar="KEY=VALUE")
    bench.add_argument("--output", default=None, metavar="FILE.json")
    bench.add_argument("--overwrite", action="store_true")
    bench.set_defaults(handler=_command_bench)
