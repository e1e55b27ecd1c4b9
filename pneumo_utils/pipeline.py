"""Run the numbered notebooks in order with papermill, export HTML, and write a run summary."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from pneumo_utils.config import NOTEBOOKS_DIR, load_config
from pneumo_utils.records import provenance, write_json_atomic

NOTEBOOKS = ("01_eda.ipynb", "02_train.ipynb", "03_evaluate.ipynb", "04_gradcam.ipynb")
SUMMARY_NAME = "run_summary.json"


class NotebookFailed(RuntimeError):
    """A notebook raised; the message names the notebook, the cell and the error."""


class OutputExists(RuntimeError):
    """The output directory already holds a run and ``overwrite`` was not given."""


def export_html(notebook_path: Path) -> Path:
    """An HTML copy of an executed notebook beside it."""
    import nbformat
    from nbconvert import HTMLExporter

    notebook = nbformat.read(notebook_path, as_version=4)
    body, _ = HTMLExporter().from_notebook_node(notebook)
    html_path = notebook_path.with_suffix(".html")
    html_path.write_text(body, encoding="utf-8")
    return html_path


def _failure_message(notebook_name: str, output_path: Path, error: Exception) -> str:
    cell = getattr(error, "exec_count", None)
    name = getattr(error, "ename", type(error).__name__)
    value = getattr(error, "evalue", str(error))
    where = f"cell [{cell}]" if cell is not None else "a cell"
    return f"{notebook_name} failed in {where}: {name}: {value} (partial output kept in {output_path})"


def run_notebooks(
    profile: str | None = None,
    data_dir: str | None = None,
    output_dir: str | None = None,
    overrides: dict[str, Any] | None = None,
    overwrite: bool = False,
    notebooks: tuple[str, ...] = NOTEBOOKS,
    notebooks_dir: str | Path = NOTEBOOKS_DIR,
    progress_bar: bool = True,
) -> dict[str, Any]:
    """Execute ``notebooks`` in order; stop at the first failure with :class:`NotebookFailed`.

    Every notebook gets the same parameters: the profile, the resolved data and output directories
    and the overrides. Executed copies go to ``<output_dir>/executed/`` with an HTML copy each.
    """
    import papermill

    overrides = dict(overrides or {})
    config = load_config(profile, data_dir=data_dir, output_dir=output_dir, **overrides)
    output = Path(config["output_dir"])
    summary_path = output / SUMMARY_NAME
    resuming = bool(overrides.get("resume")) and summary_path.exists() and \
        json.loads(summary_path.read_text()).get("status") != "ok"
    if summary_path.exists() and not overwrite and not resuming:
        raise OutputExists(
            f"{output}: already holds a run ({SUMMARY_NAME}); pass --overwrite to replace it "
            "or --output-dir to write elsewhere"
        )
    executed = output / "executed"
    executed.mkdir(parents=True, exist_ok=True)
    parameters = {"profile": config["profile"], "output_dir": str(output), "overrides": overrides}
    if data_dir or not config.get("synthetic"):
        parameters["data_dir"] = config["data_dir"]
    summary: dict[str, Any] = {
        "profile": config["profile"],
        "parameters": parameters,
        "config": config,
        "data_dir": config["data_dir"],
        "notebooks": [],
        "status": "running",
        **provenance(),
    }
    started = time.perf_counter()
    try:
        for name in notebooks:
            output_path = executed / name
            print(f"==> running {name}", file=sys.stderr, flush=True)
            notebook_started = time.perf_counter()
            try:
                papermill.execute_notebook(
                    str(Path(notebooks_dir) / name),
                    str(output_path),
                    parameters=parameters,
                    cwd=str(notebooks_dir),
                    progress_bar=progress_bar,
                    kernel_name="python3",
                )
            except papermill.PapermillExecutionError as error:
                summary["notebooks"].append(
                    {"notebook": name, "seconds": round(time.perf_counter() - notebook_started, 1), "status": "failed"}
                )
                summary["status"] = "failed"
                raise NotebookFailed(_failure_message(name, output_path, error)) from None
            finally:
                if output_path.exists():
                    export_html(output_path)
            summary["notebooks"].append(
                {"notebook": name, "seconds": round(time.perf_counter() - notebook_started, 1), "status": "ok"}
            )
        summary["status"] = "ok"
    finally:
        summary["total_seconds"] = round(time.perf_counter() - started, 1)
        write_json_atomic(summary_path, summary)
    return summary


def summary_text(summary: dict[str, Any]) -> str:
    lines = [f"profile {summary['profile']}, data {summary['data_dir']}"]
    lines += [f"  {item['notebook']:<20} {item['status']:<7} {item['seconds']:>7.1f} s"
              for item in summary["notebooks"]]
    lines.append(f"  total {summary['total_seconds']:.1f} s, status {summary['status']}")
    return "\n".join(lines)
