"""`pneumo run`: the four notebooks end to end on the smoke profile, and a failing notebook."""

import json
import os
import re
import signal
import subprocess

import nbformat
import pytest
from helpers import PNEUMO, pneumo, wait_for
from nbformat.v4 import new_code_cell, new_notebook

from pneumo_utils import outputs
from pneumo_utils.config import PROJECT_ROOT
from pneumo_utils.runs import pipeline

NOISE = re.compile(
    r"cuda|oneDNN|absl|cuInit|without encryption|ZMQError|DecompressionBomb|MissingIDField|Traceback", re.IGNORECASE
)


def test_smoke_run_executes_all_notebooks(smoke_run_process):
    tmp_path, result = smoke_run_process  # pneumo run --profile smoke -p seed=42, its output a pipe
    # a quiet terminal: no TensorFlow, ZMQ, kernel or nbformat noise, but one line per training epoch
    assert not NOISE.search(result.stderr), result.stderr[-3000:]
    assert "epoch 1/4: loss" in result.stderr and "epoch 4/4: loss" in result.stderr
    # output to a pipe or file: no progress bar, and every epoch line on a line of its own
    assert "cell/s" not in result.stderr and "Executing" not in result.stderr
    assert all(line.startswith("    epoch ") for line in result.stderr.splitlines() if "epoch " in line)
    for name in pipeline.NOTEBOOKS:
        assert (tmp_path / "executed" / name).is_file()
        assert (tmp_path / "executed" / name).with_suffix(".html").stat().st_size > 10_000
        executed = nbformat.read(tmp_path / "executed" / name, as_version=4)
        streams = "".join(
            output.get("text", "")
            for cell in executed.cells
            for output in cell.get("outputs", [])
            if output.get("output_type") == "stream"
        )
        assert not NOISE.search(streams) and "Warning" not in streams, (name, streams[-2000:])
        text = (tmp_path / "executed" / name).read_text()
        # no absolute path of the project; the run's own folder, outside the project, as the user typed it
        assert str(PROJECT_ROOT) not in text and "../../tmp" not in text
    for record in [tmp_path / "run_summary.json", *tmp_path.glob("metrics/*.json"), *tmp_path.glob("model/*.json")]:
        assert str(PROJECT_ROOT) not in record.read_text() and "../../tmp" not in record.read_text(), record
    summary = json.loads((tmp_path / "run_summary.json").read_text())
    assert summary["status"] == "ok" and [item["status"] for item in summary["notebooks"]] == ["ok"] * 4
    assert summary["parameters"]["overrides"] == {"seed": 42}
    assert summary["config"]["epochs"] == 4
    assert (tmp_path / "model" / "pneumonia_cnn.keras").is_file()
    for figure in ("class_balance", "training_curves", "confusion_matrix_validation", "roc_pr_curves", "gradcam_grid"):
        assert (tmp_path / "figures" / f"{figure}.png").is_file()
    metrics = json.loads((tmp_path / "metrics" / "metrics_validation.json").read_text())
    assert 0.0 <= metrics["roc_auc"] <= 1.0 and len(metrics["ci95"]) == 9


def test_the_smoke_profile_visibly_learns(smoke_run_process):
    """What a student sees first: on its synthetic set the smoke model separates the classes within its four
    epochs (its batch-norm statistics follow the few dozen training steps), and the terminal shows it."""
    run, result = smoke_run_process
    validation = json.loads((run / "metrics" / "metrics_validation.json").read_text())
    assert validation["roc_auc"] >= 0.9, validation
    assert validation["specificity"] > 0 and validation["sensitivity"] > 0
    last_auc = float(re.findall(r"epoch 4/4: loss [0-9.]+, val AUC ([0-9.]+)", result.stderr)[0])
    assert last_auc >= 0.9, result.stderr[-2000:]


@pytest.mark.slow
def test_failing_notebook_stops_with_notebook_cell_and_error(tmp_path):
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    parameters = new_code_cell("profile = None\noutput_dir = None\noverrides = {}")
    parameters.metadata["tags"] = ["parameters"]
    notebook = new_notebook(
        cells=[parameters, new_code_cell("x = 1"), new_code_cell("1 / 0")],
        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
    )
    nbformat.write(notebook, notebooks / "bad.ipynb")
    output = tmp_path / "out"
    with pytest.raises(pipeline.NotebookFailed) as failure:
        pipeline.run_notebooks(
            profile="smoke",
            output_dir=str(output),
            notebooks=("bad.ipynb",),
            notebooks_dir=notebooks,
            progress_bar=False,
        )
    message = str(failure.value)
    assert "bad.ipynb failed in cell" in message and "ZeroDivisionError" in message
    assert (output / "executed" / "bad.ipynb").is_file()  # the partial output is kept
    assert json.loads((output / "run_summary.json").read_text())["status"] == "failed"


def test_epoch_lines_start_on_a_line_of_their_own_below_the_progress_bar():
    import io

    from tqdm import tqdm

    terminal = io.StringIO()
    bar = tqdm(total=16, unit="cell", desc="Executing", file=terminal, dynamic_ncols=False, ncols=80)
    bar.update(5)
    pipeline._ProgressEcho(terminal).write("epoch 1/4: loss 0.6931, val AUC 0.9000, 3 s\nother output\n")
    bar.close()
    text = terminal.getvalue()
    before, _, _ = text.partition("    epoch 1/4")
    assert before.endswith(("\r", "\n")), repr(text)  # the bar was cleared first: no "cell/s]    epoch"
    assert "cell/s]    epoch" not in text and "other output" not in text


@pytest.mark.parametrize("manager_name, interrupted", [("PoliteKernelManager", False), ("AsyncKernelManager", True)])
@pytest.mark.slow
def test_kernels_are_shut_down_without_an_interrupt(tmp_path, manager_name, interrupted):
    """jupyter_client interrupts (SIGINT) a kernel before asking it to shut down, which the kernel logs as
    'KeyboardInterrupt caught in kernel' in a clean run's kernels.log; the project's manager only asks."""
    import asyncio

    from jupyter_client.manager import AsyncKernelManager

    from pneumo_utils.runs.kernels import PoliteKernelManager

    manager_class = {"PoliteKernelManager": PoliteKernelManager, "AsyncKernelManager": AsyncKernelManager}[manager_name]
    marker = tmp_path / "interrupted"

    async def scenario():
        manager = manager_class(kernel_name="python3")
        await manager.start_kernel(extra_arguments=["--IPKernelApp.log_level=CRITICAL"])
        client = manager.client()
        client.start_channels()
        await client.wait_for_ready(timeout=60)
        code = (
            "import signal, pathlib\n"  # a SIGINT handler that stays after this cell, and notes a SIGINT
            "kernel = get_ipython().kernel\n"
            "kernel.pre_handler_hook = kernel.post_handler_hook = lambda: None\n"
            f"signal.signal(signal.SIGINT, lambda *a: pathlib.Path({str(marker)!r}).write_text('SIGINT'))"
        )
        await client.execute_interactive(code, timeout=60)
        client.stop_channels()
        await manager.shutdown_kernel()
        assert not await manager.is_alive()

    asyncio.run(scenario())
    assert marker.exists() is interrupted


@pytest.mark.slow
def test_second_run_into_a_busy_folder_stops_and_ctrl_c_is_recorded(tmp_path):
    first = subprocess.Popen(
        [*PNEUMO, "run", "--profile", "smoke", "--output-dir", str(tmp_path), "--quiet", "-p", "epochs=30"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )  # its own process group, as a terminal's foreground job
    try:  # the run holds its folder from the start: its first notebook's executed copy appears then
        wait_for(lambda: (tmp_path / "executed" / "01_eda.ipynb").exists(), 120, "the first notebook started")
        second = pneumo("run", "--profile", "smoke", "--output-dir", tmp_path, "--quiet", timeout=60, process=True)
        assert second.returncode == 1
        assert "in use by another process (pid" in second.stderr and str(first.pid) in second.stderr
        assert len(second.stderr.strip().splitlines()) == 1
    finally:
        os.killpg(first.pid, signal.SIGINT)  # Ctrl-C: the whole group, kernels included
        _, stderr = first.communicate(timeout=120)
    assert first.returncode == 130, stderr[-2000:]
    assert "interrupted" in stderr and "Traceback" not in stderr and "ZMQError" not in stderr
    summary = json.loads((tmp_path / pipeline.SUMMARY_NAME).read_text())
    assert summary["status"] == "interrupted"
    assert not (tmp_path / outputs.LOCK_NAME).exists()
