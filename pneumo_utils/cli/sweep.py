"""``pneumo sweep``: the notebooks for many parameter sets, on a local Dask cluster or a real one."""

from __future__ import annotations

import argparse
import sys

from pneumo_utils.cli.common import positive_int


def _command_sweep(args: argparse.Namespace) -> int:
    from pneumo_utils.runs import sweep

    if args.scheduler:
        sweep.check_scheduler_address(args.scheduler)  # before the grid is even read
    grid = sweep.load_grid(args.grid, max_runs=args.max_runs)
    if args.workers is not None and args.workers < 1:
        from pneumo_utils.cli.common import UsageError

        raise UsageError(f"--workers must be at least 1, got {args.workers}")
    rows = sweep.run_sweep(
        grid,
        output_dir=args.output_dir,
        data_dir=args.data_dir,
        scheduler=args.scheduler,
        workers=args.workers,
        overwrite=args.overwrite,
        timeout=args.timeout,
    )
    output = sweep.default_output_dir(grid) if args.output_dir is None else args.output_dir
    failed = [row for row in rows if row["status"] != "ok"]
    print(f"{len(rows) - len(failed)} of {len(rows)} runs ok; table: {output}/sweep.md, {output}/sweep.csv")
    by_error: dict[str, list[str]] = {}
    for row in failed:  # one line per cause: a lost scheduler cuts off every run still in flight at once
        by_error.setdefault(row["error"], []).append(row["run"])
    for error, runs in by_error.items():
        print(f"error: run{'s' if len(runs) > 1 else ''} {', '.join(runs)} failed: {error}", file=sys.stderr)
    return 1 if failed else 0


def register(commands) -> None:
    """Add this module's command(s) to the ``pneumo`` parser."""
    sweep = commands.add_parser(
        "sweep",
        help="run the notebooks for every parameter set of a grid file, on Dask",
        description="Run the notebooks once per parameter set of GRID.yaml (profile, optional notebooks, and "
        "grid: {key: [values]} or runs: [{name: ..., key: value}]), each into DIR/<run-id>/, on a "
        "local Dask cluster or on the scheduler given. A rerun skips finished runs.",
    )
    sweep.add_argument("grid", help="the grid file (YAML)")
    sweep.add_argument(
        "--scheduler",
        default=None,
        metavar="ADDRESS",
        help="a running Dask scheduler (tcp://host:8786); default: a local cluster started here",
    )
    sweep.add_argument(
        "--workers",
        type=positive_int,
        default=None,
        help="local cluster: worker processes (default: one per core, at most one per run)",
    )
    sweep.add_argument(
        "--output-dir", default=None, metavar="DIR", help="where the runs go (default: runs/sweep-<grid file name>)"
    )
    sweep.add_argument("--data-dir", default=None, help="data set root for every run (default: the profile's)")
    sweep.add_argument("--overwrite", action="store_true", help="redo runs that already finished")
    sweep.add_argument(
        "--max-runs",
        type=positive_int,
        default=1000,
        help="refuse a grid of more runs than this before anything starts (default 1000)",
    )
    sweep.add_argument(
        "--timeout",
        type=positive_int,
        default=30,
        metavar="SECONDS",
        help="how long to wait for --scheduler to answer (default 30)",
    )
    sweep.set_defaults(handler=_command_sweep)
