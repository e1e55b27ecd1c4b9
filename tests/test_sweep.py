"""``pneumo sweep`` on Dask, with real schedulers, workers and notebooks (loopback only).

Every process a test starts is stopped by the test. The grids that run are the smoke profile made as small as it
goes (one epoch, 16 synthetic images per class), two runs of the notebooks a case needs: the one that trains,
and the one that evaluates where the table's figures are checked. All four notebooks run end to end in the
session's smoke run (``conftest.py``) and under nbval; a sweep runs the same pipeline, so running them again
here would add time, not another case.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from helpers import PNEUMO, wait_for

from pneumo_utils import config
from pneumo_utils.runs import sweep

TINY = "profile: smoke\nepochs: 1\nsynthetic_images_per_class: 16\n"
GRID_2X2 = TINY + "grid:\n  image_size: [32, 48]\n  seed: [1, 2]\n"
RUN_IDS = {"image_size-32", "image_size-48"}


def _grid(tmp_path: Path, text: str, name: str = "grid.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _sweep(*args, timeout=900):
    return subprocess.run([*PNEUMO, "sweep", *map(str, args)], capture_output=True, text=True, timeout=timeout)


def _sweep_here(capsys, *args) -> tuple[int, str]:
    """``pneumo sweep`` in this process (the checks that stop before anything starts need no new Python)."""
    from pneumo_utils.cli import main

    capsys.readouterr()
    code = main(["sweep", *map(str, args)])
    return code, capsys.readouterr().err


def _table(output: Path) -> pd.DataFrame:
    return pd.read_csv(output / "sweep.csv")


def _assert_finished_grid(output: Path, notebooks: int = 1):
    table = _table(output)
    assert sorted(table["run"]) == sorted(RUN_IDS)  # each run exactly once
    assert set(table["status"]) == {"ok"}
    for run_id in RUN_IDS:
        executed = sorted(path.name for path in (output / run_id / "executed").glob("*.ipynb"))
        assert len(executed) == notebooks, (run_id, executed)
        summary = json.loads((output / run_id / "run_summary.json").read_text())
        assert summary["status"] == "ok" and summary["config"]["image_size"] in (32, 48)
    assert (output / "sweep.md").read_text().count("| image_size-") == len(RUN_IDS)
    return table


# ----------------------------------------------------------------------------------------- the grid file


def test_grid_files_expand_to_stable_ids(tmp_path):
    grid = sweep.load_grid(_grid(tmp_path, GRID_2X2))
    assert [run.id for run in grid.runs] == [
        "image_size-32_seed-1",
        "image_size-32_seed-2",
        "image_size-48_seed-1",
        "image_size-48_seed-2",
    ]
    assert grid.runs[0].settings == {"epochs": 1, "synthetic_images_per_class": 16, "image_size": 32, "seed": 1}
    assert len(grid.notebooks) == 4
    explicit = sweep.load_grid(
        _grid(
            tmp_path,
            "profile: smoke\nnotebooks: [04_gradcam, 01_eda]\nruns:\n"
            "  - {name: wide, filters: [16, 32]}\n  - {seed: 3, method: gradcam}\n",
        )
    )
    assert [run.id for run in explicit.runs] == ["wide", "seed-3_method-gradcam"]
    assert explicit.notebooks == ("01_eda.ipynb", "04_gradcam.ipynb")  # pipeline order, whatever the file says
    assert sweep.run_id_of({"filters": [16, 32]}) == "filters-16-32"
    assert len(sweep.run_id_of({"a" * 50: 1, "b" * 50: 2})) <= 80


@pytest.mark.parametrize(
    "text, message",
    [
        (TINY + "grid:\n  imag_size: [32, 48]\n", "unknown setting(s) ['imag_size']"),
        (TINY + "grid: {}\n", "'grid' is empty"),
        (TINY + "grid:\n  image_size: [32, 48\n", "not valid YAML at line"),
        (TINY + "runs: []\n", "'runs' is empty"),
        (TINY + "grid:\n  seed: 3\n", "needs a non-empty list"),
        ("profile: nosuch\ngrid:\n  seed: [1]\n", "unknown profile 'nosuch'"),
        (TINY + "output_dir: x\ngrid:\n  seed: [1]\n", "use --data-dir / --output-dir"),
        (
            TINY
            + "grid:\n  seed: ["
            + ", ".join(map(str, range(100)))
            + "]\n  image_size: ["
            + ", ".join(map(str, range(32, 52)))
            + "]\n",
            "the grid makes 2,000 runs; the limit is 1,000",
        ),
        # seven aliases deep, each level ten times the last: 10^7 values if expanded
        (
            TINY
            + "a0: &a0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n"
            + "".join(f"a{level}: &a{level} [" + ", ".join([f"*a{level - 1}"] * 10) + "]\n" for level in range(1, 7))
            + "grid:\n  seed: *a6\n",
            "values (YAML aliases included); the limit is 100,000",
        ),
    ],
)
def test_bad_grid_files_are_one_line_exit_2_and_start_nothing(tmp_path, capsys, text, message):
    output = tmp_path / "out"
    code, stderr = _sweep_here(capsys, _grid(tmp_path, text), "--output-dir", output)
    assert code == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], stderr
    assert "grid.yaml" in lines[0]
    assert not output.exists()


def test_a_grid_file_that_is_not_utf8_is_one_line(tmp_path, capsys):
    path = tmp_path / "grid.yaml"
    path.write_bytes(TINY.encode() + b"grid:\n  seed: [1]\n# caf\xe9\n")
    code, stderr = _sweep_here(capsys, path, "--output-dir", tmp_path / "out")
    assert code == 2 and "not UTF-8 text (byte 0xe9" in stderr and len(stderr.strip().splitlines()) == 1


def test_values_that_read_alike_still_get_distinct_run_ids(tmp_path):
    grid = sweep.load_grid(
        _grid(tmp_path, TINY + "notebooks: [04_gradcam]\ngrid:\n  method: [gradcam, gradcam++]\n  seed: ['1', '1!']\n")
    )
    ids = [run.id for run in grid.runs]
    assert len(set(ids)) == 4 and any(run_id.startswith("method-gradcamplusplus_seed-1") for run_id in ids)


def test_a_larger_grid_runs_with_max_runs(tmp_path, capsys):
    text = TINY + "grid:\n  seed: [" + ", ".join(map(str, range(1001))) + "]\n"
    assert len(sweep.load_grid(_grid(tmp_path, text), max_runs=2000).runs) == 1001


@pytest.mark.parametrize(
    "address, message",
    [
        ("tcp://127.0.0.1:notaport", "not a scheduler address"),
        ("tcp://127.0.0.1:70000", "PORT from 1 to 65535"),
        ("http://127.0.0.1:8787", "not a scheduler address"),
    ],
)
def test_scheduler_addresses_are_checked_before_anything(tmp_path, capsys, address, message):
    code, stderr = _sweep_here(
        capsys, _grid(tmp_path, GRID_2X2), "--output-dir", tmp_path / "out", "--scheduler", address
    )
    assert code == 2 and message in stderr and len(stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_a_port_that_never_speaks_dask_times_out(tmp_path, capsys):
    """An HTTP server (as the Dask dashboard is) accepts the connection and never answers as a scheduler."""
    import http.server
    import threading

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        started = time.monotonic()
        code, stderr = _sweep_here(
            capsys,
            _grid(tmp_path, GRID_2X2),
            "--output-dir",
            tmp_path / "out",
            "--scheduler",
            f"tcp://127.0.0.1:{httpd.server_address[1]}",
            "--timeout",
            "3",
        )
        assert time.monotonic() - started < 30
    finally:
        httpd.shutdown()
    assert code == 2 and "cannot reach the Dask scheduler" in stderr, stderr


@pytest.mark.slow
def test_an_unreachable_scheduler_is_one_line_exit_2(tmp_path, capsys):
    output = tmp_path / "out"
    code, stderr = _sweep_here(
        capsys, _grid(tmp_path, GRID_2X2), "--output-dir", output, "--scheduler", "tcp://127.0.0.1:9", "--timeout", "3"
    )
    assert code == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "tcp://127.0.0.1:9: cannot reach the Dask scheduler" in lines[0], stderr
    assert not any(output.glob("*/executed"))


# ------------------------------------------------------------------------------------------------ running


@pytest.mark.slow
def test_a_failing_run_is_reported_the_others_finish_and_a_rerun_skips_them(tmp_path, capsys):
    output = tmp_path / "out"
    good = "  - {name: good, image_size: 48}\n"
    notebooks = "notebooks: [02_train, 03_evaluate]\n"  # the one that trains, and the table's figures
    grid = _grid(tmp_path, TINY + notebooks + "runs:\n" + good + "  - {name: bad, backbone: nosuchnet}\n")
    result = _sweep(grid, "--output-dir", output, "--workers", "2")
    assert result.returncode == 1, result.stderr[-3000:]
    assert "dashboard" in result.stderr and "2/2" in result.stderr
    assert len([line for line in result.stderr.splitlines() if line.startswith("[")]) == 2  # one line per run
    assert "error: run bad failed: 02_train.ipynb failed in cell" in result.stderr
    table = _table(output).set_index("run")
    assert table.loc["good", "status"] == "ok" and re.match(r"\d\.\d{3} \[", table.loc["good", "roc_auc"])
    assert table.loc["bad", "status"] == "failed"
    assert "02_train.ipynb failed in cell" in table.loc["bad", "error"] and "nosuchnet" in table.loc["bad", "error"]
    assert len(list((output / "good" / "executed").glob("*.ipynb"))) == 2
    assert (output / "sweep.png").stat().st_size > 0  # the comparison figure of the validation figures

    before = (output / "good" / "run_summary.json").stat().st_mtime_ns
    finished = _grid(tmp_path, TINY + notebooks + "runs:\n" + good, "finished.yaml")
    code, stderr = _sweep_here(capsys, finished, "--output-dir", output)  # nothing to run: no cluster is started
    assert code == 0 and "1 of 1 runs already finished" in stderr and "Dask:" not in stderr
    assert (output / "good" / "run_summary.json").stat().st_mtime_ns == before


def _start(command: list[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)


DASK = [sys.executable, "-m", "dask"]  # the `dask` command of this Python, wherever its bin/ is


def _dask_scheduler(tmp_path: Path, name: str = "scheduler") -> tuple[subprocess.Popen, str]:
    """A Dask scheduler on a free loopback port, started as a user would; (process, address)."""
    scheduler_file = tmp_path / f"{name}.json"
    command = [*DASK, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard"]
    process = _start([*command, "--scheduler-file", str(scheduler_file)], tmp_path / f"{name}.log")
    address = wait_for(
        lambda: scheduler_file.exists() and json.loads(scheduler_file.read_text() or "{}").get("address"),
        60,
        "the scheduler",
    )
    return process, address


TRAIN_ONLY = TINY + "notebooks: [02_train]\ngrid:\n  image_size: [32, 48]\n"  # the notebook that trains only


def _sweep_in_background(grid: Path, output: Path, address: str) -> subprocess.Popen:
    return subprocess.Popen(
        [*PNEUMO, "sweep", str(grid), "--output-dir", str(output), "--scheduler", address],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _dask_worker(address: str, log: Path) -> subprocess.Popen:
    command = [*DASK, "worker", address, "--nthreads", "1", "--no-nanny", "--no-dashboard", "--host", "127.0.0.1"]
    return _start(command, log)


@pytest.mark.slow
def test_a_scheduler_and_two_workers_started_by_hand_survive_a_killed_worker(tmp_path):
    processes = []
    try:
        scheduler, address = _dask_scheduler(tmp_path)
        processes.append(scheduler)
        workers = [_dask_worker(address, tmp_path / f"worker{index}.log") for index in range(2)]
        processes += workers
        output = tmp_path / "out"
        # the same grid, with the notebook that trains only: one run per worker, the killed one's redone
        grid = _grid(tmp_path, TRAIN_ONLY)
        sweeping = _sweep_in_background(grid, output, address)
        processes.append(sweeping)

        def lock_of_first_worker():
            for lock in output.glob("*/.pneumo.lock"):
                try:
                    if json.loads(lock.read_text())["pid"] == workers[0].pid:
                        return lock.parent.name
                except (OSError, ValueError, KeyError):
                    continue
            return None

        victim_run = wait_for(lock_of_first_worker, 300, "a run in flight on the first worker")
        # inside its notebook: papermill writes the executed copy when the notebook starts
        wait_for(lambda: (output / victim_run / "executed" / "02_train.ipynb").exists(), 300, "the notebook started")
        os.kill(workers[0].pid, signal.SIGKILL)
        workers[0].wait(timeout=30)
        stdout, stderr = sweeping.communicate(timeout=900)
        assert sweeping.returncode == 0, stderr[-3000:]
        table = _assert_finished_grid(output, notebooks=1).set_index("run")
        assert not table["worker"].str.endswith(f":{workers[0].pid}").any()  # what it had in flight was redone
        assert table.loc[victim_run, "worker"].endswith(f":{workers[1].pid}")
        assert not (output / victim_run / ".pneumo.lock").exists()
    finally:
        for process in reversed(processes):
            _stop(process)


@pytest.mark.slow
def test_a_scheduler_killed_mid_sweep_is_one_line_and_a_rerun_resumes(tmp_path):
    # issue 29 (class 4): two tracebacks, and a run its worker finished shown as failed
    processes = []
    try:
        scheduler, address = _dask_scheduler(tmp_path)
        processes += [scheduler, _dask_worker(address, tmp_path / "worker.log")]
        output = tmp_path / "out"
        grid = _grid(tmp_path, TRAIN_ONLY)
        sweeping = _sweep_in_background(grid, output, address)
        processes.append(sweeping)
        wait_for(lambda: list(output.glob("*/executed/02_train.ipynb")), 300, "a run's notebook started")
        scheduler.kill()  # SIGKILL: the scheduler's machine went away
        scheduler.wait(timeout=30)
        stdout, stderr = sweeping.communicate(timeout=300)
        assert sweeping.returncode == 1, stderr
        assert "Traceback" not in stderr + stdout, stderr
        errors = [line for line in stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "the Dask scheduler went away" in errors[0] and "rerun" in errors[0], stderr
        table = _table(output)
        assert sorted(table["run"]) == sorted(RUN_IDS) and set(table["status"]) == {"failed"}
        assert (output / sweep.DASK_LOG).is_file()  # distributed's own records, for whoever wants them
        for process in processes[1:2]:
            _stop(process)  # the old worker, with whatever it had in flight
        # a new scheduler and worker: the same command finishes the grid
        scheduler, address = _dask_scheduler(tmp_path, "scheduler2")
        processes += [scheduler, _dask_worker(address, tmp_path / "worker2.log")]
        rerun = _sweep(grid, "--output-dir", output, "--scheduler", address)
        assert rerun.returncode == 0, rerun.stderr[-3000:]
        _assert_finished_grid(output, notebooks=1)
    finally:
        for process in reversed(processes):
            _stop(process)


def test_a_run_its_worker_finished_is_ok_even_when_its_answer_was_lost(tmp_path):
    """The race of the same case: the run's folder finished during this sweep, and its future was cancelled
    before the answer came back. The row is read from the folder; a run that did not finish says so."""
    from distributed.client import FutureCancelledError

    started = time.time()
    lost = FutureCancelledError("pneumo-run-x", reason=sweep.SCHEDULER_LOST)
    done = tmp_path / "done"
    done.mkdir()
    (done / "run_summary.json").write_text(json.dumps({"status": "ok", "total_seconds": 12.5}))
    row = sweep._row_without_result("done", done, lost, started)
    assert row["status"] == "ok" and row["seconds"] == 12.5 and "answer was lost" in row["note"]
    cut = tmp_path / "cut"
    cut.mkdir()
    (cut / "run_summary.json").write_text(json.dumps({"status": "running"}))
    row = sweep._row_without_result("cut", cut, lost, started)
    assert row["status"] == "failed" and "scheduler went away" in row["error"]
    # a finished run older than this sweep (its answer is not this sweep's) is not taken for this one's
    os.utime(done / "run_summary.json", (started - 3600, started - 3600))
    assert sweep._row_without_result("done", done, lost, started)["status"] == "failed"


def test_a_second_grid_into_a_sweep_folder_does_not_replace_its_table(tmp_path, capsys):
    # issue 29: another grid file run into the same --output-dir silently replaced sweep.csv and sweep.md
    output = tmp_path / "sweep"
    output.mkdir()
    table = "run,status\nepochs-3,ok\nepochs-5,ok\nepochs-7,ok\nepochs-9,ok\n"
    (output / "sweep.csv").write_text(table)
    grid = sweep.load_grid(_grid(tmp_path, GRID_2X2))
    with pytest.raises(
        config.SettingsError, match=r"another grid \(runs epochs-3, epochs-5, epochs-7 and 1 more; none"
    ):
        sweep.run_sweep(grid, output_dir=output)
    assert (output / "sweep.csv").read_text() == table and sorted(p.name for p in output.iterdir()) == ["sweep.csv"]
    sweep.refuse_another_grid(output, grid, overwrite=True)  # --overwrite: the table may be replaced
    # the same sweep narrowed (it shares a run): allowed, and the rows it leaves out are named
    (output / "sweep.csv").write_text("run,status\nimage_size-32_seed-1,ok\nepochs-3,failed\n")
    sweep.refuse_another_grid(output, grid, overwrite=False)
    assert "earlier rows not in it: epochs-3 (their folders stay)" in capsys.readouterr().err
