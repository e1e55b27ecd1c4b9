"""Many parameter sets on Dask: ``pneumo sweep GRID.yaml`` runs the notebooks once per parameter set.

A grid file names a base profile, optionally the notebooks to run, and either a ``grid`` (every
combination of the listed values) or an explicit list of ``runs``; any other top-level key is a setting
shared by every run. Each run gets a stable id made from its parameters and its own folder
``DIR/<run-id>/``, holding exactly what ``pneumo run`` writes (it *is* a ``pneumo run``, executed on a
Dask worker by :func:`execute_run`).

Scheduling is Dask's: without an address a :class:`distributed.LocalCluster` sized to the machine is
started and stopped here (one run per worker process, TensorFlow's threads per worker set so that workers
do not fight over the cores); with ``--scheduler tcp://host:8786`` the runs go to that cluster, whose
workers must see the same data and output folders. A worker that dies mid-run has its run rescheduled by
Dask on another worker, at most :data:`MAX_RETRIES` times; the retry replaces the dead attempt's partial
folder, and a run that already finished is never redone without ``--overwrite``.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import math
import os
import re
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pneumo_utils import outputs, plots, reading
from pneumo_utils.config import RUNS_DIR, SettingsError, available_profiles, load_config, portable_path
from pneumo_utils.data import check_layout
from pneumo_utils.outputs import FolderLock, first_line, is_plain_name
from pneumo_utils.runs import pipeline
from pneumo_utils.runs.tables import compare_figure, figure_columns

MAX_RETRIES = 2
TABLE_NAME = "sweep"
GRID_KEYS = ("profile", "notebooks", "grid", "runs")
SWEEP_LEVEL = ("data_dir", "output_dir", "model_path")  # set for the whole sweep (options), not per run
TF_THREADS_ENV = "PNEUMO_TF_THREADS"
_ONE_RUN_PER_PROCESS = threading.Lock()  # a run redirects the process's stderr and environment


@dataclass(frozen=True)
class SweepRun:
    """One parameter set: its id, the values that vary, and every setting it is run with."""

    id: str
    parameters: dict[str, Any]
    settings: dict[str, Any]


@dataclass(frozen=True)
class Sweep:
    """A parsed, checked grid file."""

    source: Path
    profile: str
    notebooks: tuple[str, ...]
    common: dict[str, Any]
    runs: list[SweepRun] = field(default_factory=list)


def _fail(path: Path, problem: str) -> SettingsError:
    return SettingsError(f"{path}: {problem}")


MAX_RUNS = 1000  # a grid larger than this is refused unless --max-runs says otherwise
MAX_GRID_VALUES = 100_000  # values in the whole grid file once YAML aliases are expanded


def load_grid(path: str | os.PathLike, max_runs: int = MAX_RUNS) -> Sweep:
    """Read and check a grid file; every problem is one :class:`SettingsError` line naming the file.

    Names are checked here, before anything starts (a setting neither the profile nor a selected
    notebook knows is refused); values are checked by each run, so one bad value fails one run only. A grid
    of more than ``max_runs`` runs, or whose YAML aliases expand to more than :data:`MAX_GRID_VALUES` values,
    is refused before it is expanded.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise _fail(
            path, f"not UTF-8 text (byte 0x{error.object[error.start]:02x} at position {error.start})"
        ) from None
    except OSError as error:
        raise _fail(path, f"cannot read the grid file ({error.strerror or error})") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or first_line(error)
        raise _fail(path, f"not valid YAML{where}: {problem}") from None
    if not isinstance(document, dict):
        raise _fail(path, "a grid file must be a mapping with 'profile' and 'grid' or 'runs'")
    try:
        values = reading.expanded_size(document)
    except reading.SelfContaining as error:
        raise _fail(path, str(error)) from None
    if values > MAX_GRID_VALUES:
        raise _fail(path, f"expands to {values:,} values (YAML aliases included); the limit is {MAX_GRID_VALUES:,}")
    profile = document.get("profile") or "full"
    if profile not in available_profiles():
        raise _fail(path, f"unknown profile {profile!r} (available: {available_profiles()})")
    notebooks = _notebooks(path, document.get("notebooks"))
    common = {key: value for key, value in document.items() if key not in GRID_KEYS}
    if ("grid" in document) == ("runs" in document):
        raise _fail(path, "give either 'grid' (all combinations) or 'runs' (an explicit list), not both or neither")
    if "grid" in document:
        parameter_sets = _grid_sets(path, document["grid"], max_runs)
    else:
        parameter_sets = _explicit_sets(path, document["runs"])
        if len(parameter_sets) > max_runs:
            raise _fail(path, f"{len(parameter_sets):,} runs; the limit is {max_runs:,} (pass --max-runs to raise it)")
    names = set(common).union(*(set(parameters) for _, parameters in parameter_sets))
    sweep_level = sorted(names & set(SWEEP_LEVEL))
    if sweep_level:
        raise _fail(path, f"{sweep_level} belong to the whole sweep: use --data-dir / --output-dir")
    declared = pipeline.notebook_parameters(notebooks, pipeline.NOTEBOOKS_DIR)
    try:
        pipeline.split_settings(dict.fromkeys(names), set(load_config(profile)), declared)
    except SettingsError as error:
        raise _fail(path, str(error)) from None
    runs = []
    generated = [run_id_of(parameters) for _, parameters in parameter_sets]
    for (name, parameters), run_id in zip(parameter_sets, generated, strict=True):
        if name is None and generated.count(run_id) > 1:  # values that read alike (gradcam, gradcam++)
            run_id = f"{run_id[:69]}-{_digest(parameters)}"
        runs.append(SweepRun(id=name or run_id, parameters=parameters, settings={**common, **parameters}))
    ids = [run.id for run in runs]
    repeated = sorted({run_id for run_id in ids if ids.count(run_id) > 1})
    if repeated:
        raise _fail(path, f"two runs have the same id {repeated}; give each run a distinct name or values")
    return Sweep(source=path, profile=profile, notebooks=notebooks, common=common, runs=runs)


def _notebooks(path: Path, value: Any) -> tuple[str, ...]:
    if value is None:
        return pipeline.NOTEBOOKS
    if not isinstance(value, list) or not value:
        raise _fail(path, "'notebooks' must be a non-empty list such as [02_train, 03_evaluate]")
    wanted = {str(name).removesuffix(".ipynb") + ".ipynb" for name in value}
    unknown = sorted(wanted - set(pipeline.NOTEBOOKS))
    if unknown:
        raise _fail(path, f"unknown notebook(s) {unknown} (available: {list(pipeline.NOTEBOOKS)})")
    return tuple(name for name in pipeline.NOTEBOOKS if name in wanted)  # always in pipeline order


def _grid_sets(path: Path, grid: Any, max_runs: int = MAX_RUNS) -> list[tuple[str | None, dict[str, Any]]]:
    if not isinstance(grid, dict) or not grid:
        raise _fail(path, "'grid' is empty: give at least one setting with a list of values")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise _fail(path, f"grid setting {key!r} needs a non-empty list of values, got {str(values)[:80]}")
    count = math.prod(len(values) for values in grid.values())
    if count > max_runs:
        raise _fail(path, f"the grid makes {count:,} runs; the limit is {max_runs:,} (pass --max-runs to raise it)")
    keys = list(grid)
    return [(None, dict(zip(keys, combination, strict=True))) for combination in itertools.product(*grid.values())]


def _explicit_sets(path: Path, runs: Any) -> list[tuple[str | None, dict[str, Any]]]:
    if not isinstance(runs, list) or not runs:
        raise _fail(path, "'runs' is empty: give a list of setting mappings")
    sets = []
    for position, entry in enumerate(runs, start=1):
        if not isinstance(entry, dict):
            raise _fail(path, f"run {position} must be a mapping of setting: value, got {entry!r}")
        entry = dict(entry)
        name = entry.pop("name", None)
        if name is not None and not is_plain_name(str(name)):
            raise _fail(path, f"run name {name!r} must be letters, digits, '.', '_' or '-'")
        sets.append((None if name is None else str(name), entry))
    return sets


def run_id_of(parameters: dict[str, Any]) -> str:
    """A stable folder name from a run's parameters: ``{image_size: 128, seed: 1}`` ->
    ``image_size-128_seed-1`` (lists joined with ``-``; a very long id ends in a hash instead)."""
    if not parameters:
        return "base"

    def word(value: Any) -> str:
        if isinstance(value, list | tuple):
            return "-".join(word(item) for item in value)
        return re.sub(r"[^A-Za-z0-9.]+", "-", str(value).replace("+", "plus")).strip("-") or "x"

    text = "_".join(f"{key}-{word(value)}" for key, value in parameters.items())
    if len(text) > 80:
        text = f"{text[:69]}-{_digest(parameters)}"
    return text


def _digest(parameters: dict[str, Any]) -> str:
    return hashlib.sha1(json.dumps(parameters, sort_keys=True, default=str).encode()).hexdigest()[:10]


# --- one run, on a worker -------------------------------------------------------------------------------


def finished(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` holds a run that finished (``run_summary.json`` with status ``ok``)."""
    summary = Path(folder) / pipeline.SUMMARY_NAME
    try:
        return json.loads(summary.read_text()).get("status") == "ok"
    except (OSError, ValueError):
        return False


def execute_run(
    run_id: str,
    settings: dict[str, Any],
    profile: str,
    notebooks: tuple[str, ...],
    output_root: str,
    data_dir: str | None,
    overwrite: bool,
    sweep_started: float,
    tf_threads: int | None,
) -> dict[str, Any]:
    """Run one parameter set into ``output_root/run_id`` (on a Dask worker) and return its table row.

    Never raises for a failing run: the row says ``failed`` with the notebook, cell and error in one line.
    A folder holding a finished run is returned as it is, unless ``overwrite`` asks for a new run and the
    finished run predates this sweep (a retry after a lost worker never redoes what this sweep finished).
    """
    import socket

    folder = Path(output_root) / run_id
    started = time.perf_counter()
    with _ONE_RUN_PER_PROCESS:
        summary_path = folder / pipeline.SUMMARY_NAME
        if finished(folder) and (not overwrite or summary_path.stat().st_mtime >= sweep_started):
            return row_of(run_id, folder, status="ok", seconds=_run_seconds(folder))
        saved = os.environ.get(TF_THREADS_ENV)
        if tf_threads:
            os.environ[TF_THREADS_ENV] = str(tf_threads)
        error = None
        try:
            # overwrite: the folder holds nothing finished that this sweep should keep (a failed run, the
            # partial output of an attempt whose worker was lost) or the user asked for new runs
            pipeline.run_notebooks(
                profile=profile,
                data_dir=data_dir,
                output_dir=str(folder),
                overrides=settings,
                overwrite=True,
                notebooks=tuple(notebooks),
                progress_bar=False,
                lock_purpose=f"pneumo sweep {sweep_started} run {run_id}",
                echo=False,
            )
        except Exception as failure:  # noqa: BLE001 - every failure becomes the run's recorded error
            error = first_line(failure)
            if not isinstance(failure, pipeline.NotebookFailed | SettingsError):
                error = f"{type(failure).__name__}: {error}"
        finally:
            if saved is None:
                os.environ.pop(TF_THREADS_ENV, None)
            else:
                os.environ[TF_THREADS_ENV] = saved
    seconds = round(time.perf_counter() - started, 1)
    row = row_of(run_id, folder, status="ok" if error is None else "failed", seconds=seconds, error=error)
    row["worker"] = socket.gethostname() + f":{os.getpid()}"
    return row


def _run_seconds(folder: Path) -> float | None:
    try:
        return json.loads((folder / pipeline.SUMMARY_NAME).read_text()).get("total_seconds")
    except (OSError, ValueError):
        return None


def row_of(
    run_id: str, folder: Path, status: str, seconds: float | None = None, error: str | None = None
) -> dict[str, Any]:
    """The table row of one run: status, time, and the figures its folder holds (validation, stress)."""
    row: dict[str, Any] = {"run": run_id, "status": status, "seconds": seconds, "error": error or ""}
    metrics = folder / "metrics"
    for name, key in (("metrics_validation.json", "validation"), ("stress_validation.json", "stress")):
        try:
            row[key] = json.loads((metrics / name).read_text())
        except (OSError, ValueError):
            row[key] = None
    return row


# --- the sweep, on the client ---------------------------------------------------------------------------


def refuse_another_grid(output: Path, sweep: Sweep, overwrite: bool, stream=None) -> None:
    """A sweep folder's table belongs to one grid. A second grid that shares no run with the table (another
    file run into the same ``--output-dir``) would silently replace ``sweep.csv`` and ``sweep.md``: refused,
    before any run, unless ``overwrite``. A grid that shares runs is the same sweep, resumed or narrowed; the
    rows it leaves out of the new table are named on ``stream``, never dropped in silence."""
    import csv

    table = output / f"{TABLE_NAME}.csv"
    if overwrite or not table.is_file():
        return
    try:
        with table.open(newline="", encoding="utf-8") as handle:
            earlier = {row.get("run") for row in csv.DictReader(handle)} - {None, ""}
    except (OSError, UnicodeDecodeError, csv.Error):
        earlier = set()
    ids = {run.id for run in sweep.runs}
    others = sorted(earlier - ids)
    if not others:
        return
    shown = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
    if not earlier & ids:
        raise SettingsError(
            f"{portable_path(output)}: its {TABLE_NAME}.csv is the table of another grid (runs {shown}; none is in "
            f"{sweep.source.name}); choose another --output-dir, or pass --overwrite to replace its table (and "
            "redo this grid's runs)"
        )
    print(
        f"note: the new {TABLE_NAME}.csv lists the runs of {sweep.source.name}; earlier rows not in it: {shown} "
        "(their folders stay)",
        file=stream or sys.stderr,
    )


def default_output_dir(sweep: Sweep) -> Path:
    """``runs/sweep-<grid file name>``: stable, so that running the same grid again resumes it."""
    return RUNS_DIR / f"sweep-{sweep.source.stem}"


def check_scheduler_address(address: str) -> None:
    """``tcp://HOST:PORT`` (or tls/ws/wss) with a port from 1 to 65535, or a :class:`SettingsError`."""
    match = re.fullmatch(r"(tcp|tls|ws|wss)://([^\s/:]+|\[[0-9a-fA-F:]+\]):([0-9]{1,5})", address)
    if not match or not 1 <= int(match.group(3)) <= 65535:
        raise SettingsError(f"{address}: not a scheduler address (expected tcp://HOST:PORT, PORT from 1 to 65535)")


def _connect_to(address: str, timeout: float):
    """A client of the scheduler at ``address``, or one line after ``timeout`` seconds. The attempt runs in a
    thread of its own: something that accepts the connection but never speaks Dask (an HTTP port, such as the
    dashboard's) would otherwise hold the command forever."""
    import threading

    from distributed import Client

    check_scheduler_address(address)
    outcome: dict[str, Any] = {}

    def attempt():
        try:
            outcome["client"] = Client(address, timeout=f"{timeout}s")
        except Exception as error:  # noqa: BLE001 - reported below in one line
            outcome["error"] = error

    worker = threading.Thread(target=attempt, daemon=True, name="pneumo-scheduler-connect")
    worker.start()
    worker.join(timeout + 5)
    if "client" in outcome:
        return outcome["client"]
    error = outcome.get("error")
    reason = (
        first_line(error)
        if error
        else f"no answer within {timeout:g} s; is it the scheduler's port (not the dashboard's)?"
    )
    raise SettingsError(f"{address}: cannot reach the Dask scheduler ({reason})")


def connect(scheduler: str | None, workers: int | None, runs: int, timeout: float = 30.0):
    """A Dask client: to ``scheduler`` (an address) or to a new local cluster sized to this machine.

    Returns ``(client, cluster, tf_threads)``; ``cluster`` is None for a scheduler given by address.
    An address that cannot be reached is a :class:`SettingsError` (nothing has started).
    """
    import logging

    import dask
    from distributed import Client, LocalCluster

    if scheduler:
        return _connect_to(scheduler, timeout), None, None
    cores = os.cpu_count() or 1
    count = max(1, workers or min(cores, runs))
    tf_threads = max(1, cores // count)
    with dask.config.set({"distributed.scheduler.allowed-failures": MAX_RETRIES}):
        cluster = LocalCluster(
            n_workers=count, threads_per_worker=1, processes=True, dashboard_address=":0", silence_logs=logging.ERROR
        )
    return Client(cluster), cluster, tf_threads


def run_sweep(
    sweep: Sweep,
    output_dir: str | os.PathLike | None = None,
    data_dir: str | None = None,
    scheduler: str | None = None,
    workers: int | None = None,
    overwrite: bool = False,
    stream=None,
    timeout: float = 30.0,
) -> list[dict[str, Any]]:
    """Run every parameter set of ``sweep`` on Dask and write ``sweep.csv``, ``sweep.md`` and ``sweep.png``.

    Runs whose folder holds a finished run are skipped (``overwrite`` redoes them). Prints the dashboard
    address, then one line per finished run with a bar of runs done. Returns the rows in grid order.
    """
    stream = stream or sys.stderr
    output = Path(output_dir) if output_dir else default_output_dir(sweep)
    output = output.resolve()
    if data_dir:
        data_dir = str(Path(data_dir).expanduser().resolve())
        check_layout(data_dir)
    refuse_another_grid(output, sweep, overwrite, stream)
    rows: dict[str, dict[str, Any]] = {}
    todo = []
    for run in sweep.runs:
        if finished(output / run.id) and not overwrite:
            rows[run.id] = row_of(run.id, output / run.id, status="ok", seconds=_run_seconds(output / run.id))
            rows[run.id]["skipped"] = True
        else:
            todo.append(run)
    if rows:
        print(
            f"{len(rows)} of {len(sweep.runs)} runs already finished in {portable_path(output)}: kept "
            "(--overwrite redoes them)",
            file=stream,
        )
    if todo:
        with FolderLock(output, purpose="pneumo sweep"):
            _run_on_dask(sweep, todo, rows, output, data_dir, scheduler, workers, overwrite, stream, timeout)
    ordered = []
    for run in sweep.runs:
        ordered.append({**rows[run.id], "parameters": run.parameters})
    write_tables(output, ordered)
    return ordered


def _run_on_dask(
    sweep: Sweep,
    todo: list[SweepRun],
    rows: dict[str, dict[str, Any]],
    output: Path,
    data_dir: str | None,
    scheduler: str | None,
    workers: int | None,
    overwrite: bool,
    stream,
    timeout: float = 30.0,
) -> None:
    client, cluster, tf_threads = connect(scheduler, workers, len(todo), timeout)
    # distributed's own records (a lost scheduler's reconnect tracebacks) go to the sweep's dask.log
    with _quiet_dask(output):
        _submit_and_collect(client, cluster, tf_threads, sweep, todo, rows, output, data_dir, overwrite, stream)


def _submit_and_collect(client, cluster, tf_threads, sweep, todo, rows, output, data_dir, overwrite, stream) -> None:
    from distributed import as_completed

    try:
        worker_count = len(client.scheduler_info().get("workers", {}))
        print(f"Dask: {worker_count} worker(s), dashboard {client.dashboard_link}", file=stream, flush=True)
        started = time.time()
        futures = {
            client.submit(
                execute_run,
                run.id,
                run.settings,
                sweep.profile,
                sweep.notebooks,
                str(output),
                data_dir,
                overwrite,
                started,
                tf_threads,
                key=f"pneumo-run-{run.id}-{started}",
                pure=False,
            ): run
            for run in todo
        }
        done = len(rows)
        for future in as_completed(futures):
            run = futures[future]
            try:
                row = future.result()
            except Exception as error:  # noqa: BLE001 - KilledWorker: lost its worker more than MAX_RETRIES times
                row = _row_without_result(run.id, output / run.id, error, started)
            rows[run.id] = row
            done += 1
            print(f"{_bar(done, len(sweep.runs))} {progress_line(row)}", file=stream, flush=True)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


SCHEDULER_LOST = "scheduler-connection-lost"  # distributed's reason for the futures of a client that lost it
DASK_LOG = "dask.log"


def _row_without_result(run_id: str, folder: Path, error: Exception, sweep_started: float) -> dict[str, Any]:
    """The row of a run whose future failed. A run that finished in its folder during this sweep is ``ok``:
    its worker finished it and only the answer was lost (the scheduler went away, say). A run cut off by a
    lost scheduler says so and how to resume; anything else (KilledWorker) is named as it came."""
    summary = folder / pipeline.SUMMARY_NAME
    if finished(folder) and summary.stat().st_mtime >= sweep_started:
        row = row_of(run_id, folder, status="ok", seconds=_run_seconds(folder))
        row["note"] = "read from its folder: the run finished, its answer was lost with the scheduler"
        return row
    if getattr(error, "reason", None) == SCHEDULER_LOST:
        problem = "not finished: the Dask scheduler went away (start it again and rerun the sweep to resume)"
    else:
        problem = f"{type(error).__name__}: {first_line(error) if str(error) else ''}"
    return row_of(run_id, folder, status="failed", error=problem)


@contextlib.contextmanager
def _quiet_dask(output: Path):
    """distributed's own log records (a lost scheduler's reconnect tracebacks) go to ``output/dask.log``
    instead of the terminal, for as long as the block runs."""
    import logging

    handler = logging.FileHandler(output / DASK_LOG, encoding="utf-8", delay=True)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    names = ["distributed"] + [name for name in logging.root.manager.loggerDict if name.startswith("distributed.")]
    loggers = [logging.getLogger(name) for name in names]
    loggers = [logger for logger in loggers if logger.handlers or logger.name == "distributed"]
    saved = [(logger, logger.handlers[:]) for logger in loggers]  # distributed.client has a handler of its own
    for logger in loggers:
        logger.handlers = [handler]
    try:
        yield
    finally:
        for logger, handlers in saved:
            logger.handlers = handlers
        handler.close()


def _bar(done: int, total: int, width: int = 20) -> str:
    filled = round(width * done / total) if total else width
    return f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total}"


def progress_line(row: dict[str, Any]) -> str:
    """``image_size-128_seed-1: ok, val AUC 0.981, sens 0.950, spec 0.917, 41 s``."""
    text = f"{row['run']}: {row['status']}"
    validation = row.get("validation")
    if validation:
        text += (
            f", val AUC {validation['roc_auc']:.3f}, sens {validation['sensitivity']:.3f}, "
            f"spec {validation['specificity']:.3f}"
        )
    if row.get("seconds") is not None:
        text += f", {row['seconds']:.0f} s"
    if row.get("error"):
        text += f" ({row['error']})"
    return text


def sweep_table(rows: list[dict[str, Any]]):
    """One row per run: its parameters, status, validation figures with CIs and stress columns (the same
    columns as ``pneumo experiments``), time and error."""
    import pandas as pd

    table = []
    for row in rows:
        entry: dict[str, Any] = {"run": row["run"]}
        entry.update(
            {
                key: (json.dumps(value) if isinstance(value, list | dict) else value)
                for key, value in row["parameters"].items()
            }
        )
        entry["status"] = row["status"]
        entry.update(figure_columns(row.get("validation"), row.get("stress")))
        entry["minutes"] = round(row["seconds"] / 60, 2) if row.get("seconds") is not None else None
        entry["worker"] = row.get("worker", "")
        entry["error"] = row.get("error", "")
        table.append(entry)
    return pd.DataFrame(table)


def write_tables(output: Path, rows: list[dict[str, Any]]) -> list[Path]:
    """``sweep.csv``, ``sweep.md`` and the comparison figure ``sweep.png`` (rewritten from the run folders
    at the end of every sweep: they summarize, they hold nothing of their own)."""
    table = sweep_table(rows)
    written = [outputs.write_text(output / f"{TABLE_NAME}.csv", table.to_csv(index=False), overwrite=True)]
    text = (
        f"# Sweep: {len(rows)} runs\n\nValidation figures (patient-grouped split carved from the training "
        "data, or the synthetic set of the smoke profile) with bootstrap 95% intervals; the official test "
        "split is never used.\n\n" + table.fillna("").to_markdown(index=False) + "\n"
    )
    written.append(outputs.write_text(output / f"{TABLE_NAME}.md", text, overwrite=True))
    figure = compare_figure({row["run"]: row.get("validation") for row in rows})
    if figure is not None:
        import matplotlib.pyplot as plt

        written.append(outputs.write_bytes(output / f"{TABLE_NAME}.png", plots.png_bytes(figure), overwrite=True))
        plt.close(figure)
    return written


def serial_runs(sweep: Sweep, output_dir: str | os.PathLike, data_dir: str | None = None) -> list[dict[str, Any]]:
    """The same runs one after another in this process (the baseline of ``pneumo bench sweep``)."""
    started = time.time()
    return [
        execute_run(
            run.id, run.settings, sweep.profile, sweep.notebooks, str(output_dir), data_dir, False, started, None
        )
        for run in sweep.runs
    ]
