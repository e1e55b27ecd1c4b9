"""Run the numbered notebooks in order with papermill, export HTML, and write a run summary.

A run writes only into its own folder (``runs/<profile>-<time>`` unless told otherwise), locked while it
runs; ``saved_models/`` and ``results/`` change only through :func:`promote`. The data are checked before
any kernel starts; kernels import TensorFlow quietly, and each finished training epoch is echoed to the
terminal as one line.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from pneumo_utils import outputs
from pneumo_utils.config import (
    NOTEBOOKS_DIR,
    PROJECT_ROOT,
    REFERENCE_RESULTS,
    RUNS_DIR,
    SAVED_MODEL,
    Settings,
    SettingsError,
    load_config,
    portable_path,
    resolve_profile_path,
)
from pneumo_utils.data import DatasetLayoutError, check_layout, layout_warnings
from pneumo_utils.model import card_path
from pneumo_utils.model.ood import detector_path
from pneumo_utils.model.weights import WeightsNotFound, fetch_imagenet, pinned_imagenet
from pneumo_utils.outputs import first_line
from pneumo_utils.records import provenance
from pneumo_utils.runs import report, results_page
from pneumo_utils.runs.kernels import PoliteKernelManager

NOTEBOOKS = ("01_eda.ipynb", "02_train.ipynb", "03_evaluate.ipynb", "04_gradcam.ipynb")
SUMMARY_NAME = "run_summary.json"
KERNELS_LOG = "kernels.log"
STANDARD_PARAMETERS = ("profile", "data_dir", "output_dir", "overrides")
PROGRESS_PREFIXES = ("epoch ", "member ")
QUIET_KERNEL_ENVIRONMENT = {"TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONWARNINGS": "ignore::DeprecationWarning"}


class NotebookFailed(RuntimeError):
    """A notebook raised; the message names the notebook, the cell and the error."""


class RunInterrupted(RuntimeError):
    """The user interrupted the run (Ctrl-C); the summary says ``interrupted``."""


OutputExists = outputs.OutputExists


def export_html(notebook_path: Path) -> Path:
    """An HTML copy of an executed notebook beside it; the notebook's papermill record, its injected parameters
    and what its cells printed first get paths relative to the project (papermill writes the absolute paths
    of this machine)."""
    import nbformat
    from nbconvert import HTMLExporter

    notebook = nbformat.read(notebook_path, as_version=4)
    record = notebook.metadata.get("papermill", {})
    for key in ("input_path", "output_path"):
        if record.get(key) and Path(record[key]).is_absolute():
            record[key] = portable_path(record[key])
    for key, value in (record.get("parameters") or {}).items():  # a parameter given as an absolute path
        if isinstance(value, str):
            record["parameters"][key] = _relative_paths(value)
    for cell in notebook.cells:  # a path a cell happened to show (a returned Path) becomes relative too
        if "injected-parameters" in cell.get("metadata", {}).get("tags", []):
            cell.source = _relative_paths(cell.source)
        for output in cell.get("outputs", []):
            if "text" in output:
                output["text"] = _relative_paths(output["text"])
            if "text/plain" in output.get("data", {}):
                output["data"]["text/plain"] = _relative_paths(output["data"]["text/plain"])
    outputs.write_text(notebook_path, nbformat.writes(notebook))
    body, _ = HTMLExporter().from_notebook_node(notebook)
    return outputs.write_text(notebook_path.with_suffix(".html"), body)


def _relative_paths(text: str) -> str:
    """Absolute paths inside the project, or beside it, written relative to the project root."""
    root = str(PROJECT_ROOT)
    return text.replace(root + "/", "").replace(str(PROJECT_ROOT.parent) + "/", "../")


def _failure_message(notebook_name: str, output_path: Path, error: Exception) -> str:
    cell = getattr(error, "exec_count", None)
    name = getattr(error, "ename", type(error).__name__)
    value = first_line(str(getattr(error, "evalue", "")))
    where = f"cell [{cell}]" if cell is not None else "a cell"
    return f"{notebook_name} failed in {where}: {name}: {value} (partial output kept in {portable_path(output_path)})"


def default_output_dir(profile: str) -> Path:
    """A new folder for each run: ``runs/<profile>-<YYYYmmdd-HHMMSS>``."""
    return RUNS_DIR / f"{profile}-{time.strftime('%Y%m%d-%H%M%S')}"


def notebook_parameters(notebooks: tuple[str, ...], notebooks_dir: str | Path) -> dict[str, set[str]]:
    """The names each notebook's ``parameters`` cell declares, beyond the four every notebook takes."""
    import papermill

    declared = {}
    for name in notebooks:
        names = set(papermill.inspect_notebook(str(Path(notebooks_dir) / name)))
        declared[name] = names - set(STANDARD_PARAMETERS)
    return declared


# the values a notebook-only parameter may take, checked before any kernel starts
NOTEBOOK_PARAMETER_CHOICES = {"method": ("gradcam", "gradcam++")}


def split_settings(
    overrides: dict[str, Any], profile_keys: set[str], declared: dict[str, set[str]]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``-p`` values into profile settings and notebook parameters (``method`` of notebook 04, ...).

    A name that is neither is refused before anything starts.
    """
    notebook_keys = set().union(*declared.values()) if declared else set()
    unknown = sorted(set(overrides) - profile_keys - notebook_keys - {"data_dir", "output_dir", "model_path"})
    if unknown:
        raise SettingsError(
            f"unknown setting(s) {unknown}; profile settings: {sorted(profile_keys)}; "
            f"notebook parameters: {sorted(notebook_keys)}"
        )
    profile_overrides = {
        key: value for key, value in overrides.items() if key not in notebook_keys or key in profile_keys
    }
    extra = {key: value for key, value in overrides.items() if key in notebook_keys and key not in profile_keys}
    for key, value in extra.items():
        allowed = NOTEBOOK_PARAMETER_CHOICES.get(key)
        if allowed is not None and value is not None and value not in allowed:
            raise SettingsError(f"-p {key}={value!r}: must be one of {list(allowed)}")
    return profile_overrides, extra


MIN_TRAIN_IMAGES_PER_CLASS = 10  # notebook 01 shows six of each class; the validation split needs a few more


def check_data(settings: Settings) -> None:
    """The data folder's layout, then every backbone's weights, checked in this process before any kernel
    starts (one-line error). ``weights: imagenet`` of a pinned backbone is found in ``$PNEUMO_WEIGHTS_DIR`` or
    Keras's cache, else downloaded into the cache here (:mod:`pneumo_utils.model.weights`)."""
    if not settings.synthetic:
        layout = check_layout(settings.data_dir)
        for class_name, files in layout["train"].items():
            if len(files) < MIN_TRAIN_IMAGES_PER_CLASS:
                raise DatasetLayoutError(
                    f"{Path(settings.data_dir) / 'train' / class_name}: {len(files)} image(s); a run needs at least "
                    f"{MIN_TRAIN_IMAGES_PER_CLASS} of each class in train/ (it carves a patient-grouped validation "
                    "split from them and shows six of each)"
                )
        for line in layout_warnings(settings.data_dir, layout):
            print(f"warning: {line}", file=sys.stderr)
    for number, entry in enumerate(settings.members or [{}], start=1):
        where = f"member {number}: " if settings.members else ""
        weights = entry.get("weights", settings.weights)
        backbone, alpha = entry.get("backbone", settings.backbone), entry.get("alpha", settings.alpha)
        spec = pinned_imagenet(backbone, alpha) if backbone and weights == "imagenet" else None
        if spec is not None:
            try:
                fetch_imagenet(spec)
            except WeightsNotFound as error:
                raise SettingsError(f"{where}{error}") from None
            continue
        if weights not in (None, "imagenet") and "weights" in entry:
            weights = resolve_profile_path(weights)  # a member's path is written in the profile
        if weights not in (None, "imagenet") and not Path(weights).is_file():
            raise SettingsError(
                f"{where}weights file {portable_path(weights)} does not exist; give a weights file, "
                "imagenet (Keras's official file, found in $PNEUMO_WEIGHTS_DIR or ~/.keras/models, else "
                "downloaded) or null"
            )


class _ProgressEcho:
    """A stdout sink for papermill that echoes the training's one-line-per-epoch progress to the terminal."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr

    def write(self, text: str) -> None:
        from tqdm import tqdm

        for line in text.splitlines():
            if line.startswith(PROGRESS_PREFIXES):
                # through tqdm: papermill's cell progress bar on the same stream is cleared first and drawn
                # again below, so every epoch line starts on a line of its own
                tqdm.write(f"    {line}", file=self.stream)
                self.stream.flush()

    def flush(self) -> None:
        self.stream.flush()


class _KernelsStderr:
    """Sends what kernels write to their standard error (they inherit it: start-up warnings, the
    traceback of a cell interrupted by Ctrl-C) to ``RUN_DIR/kernels.log`` instead of the terminal, while
    this process keeps writing to the terminal."""

    def __init__(self, path: Path):
        sys.stderr.flush()
        self.saved = os.dup(2)
        self.terminal = os.fdopen(os.dup(self.saved), "w", buffering=1, encoding="utf-8", errors="replace")
        self.log = open(path, "ab")  # noqa: SIM115 - closed in restore()
        os.dup2(self.log.fileno(), 2)
        self.previous, sys.stderr = sys.stderr, self.terminal

    def restore(self) -> None:
        self.terminal.flush()
        sys.stderr = self.previous
        os.dup2(self.saved, 2)
        os.close(self.saved)
        self.terminal.close()
        self.log.close()


class _InterruptFlag:
    """Remembers that Ctrl-C was pressed: it may surface as another error from the kernel client, or not at all
    when the handler's KeyboardInterrupt lands in a callback whose exceptions Python ignores; the run checks the
    flag after each notebook."""

    def __init__(self):
        self.raised = False
        try:
            self.previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread: signals are not ours to handle
            self.previous = None

    def _handle(self, signum, frame):
        self.raised = True
        # the kernel client's tasks end with "Kernel died" once Ctrl-C reached the kernels too; asyncio would print
        # each as an unretrieved task exception with its traceback: the one line the run prints says it all
        logging.getLogger("asyncio").setLevel(logging.CRITICAL)
        raise KeyboardInterrupt

    def restore(self) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


def run_notebooks(
    profile: str | None = None,
    data_dir: str | None = None,
    output_dir: str | None = None,
    overrides: dict[str, Any] | None = None,
    overwrite: bool = False,
    notebooks: tuple[str, ...] = NOTEBOOKS,
    notebooks_dir: str | Path = NOTEBOOKS_DIR,
    progress_bar: bool = True,
    lock_purpose: str | None = None,
    echo: bool = True,
) -> dict[str, Any]:
    """Execute ``notebooks`` in order; stop at the first failure with :class:`NotebookFailed`.

    Every notebook gets the profile, the data and output folders and the profile overrides; a ``-p``
    name that a notebook declares in its parameters cell (``method``) goes to that notebook. Executed
    copies go to ``<output_dir>/executed/`` with an HTML copy each.

    ``lock_purpose`` names the folder lock's holder; a lock left with the same purpose by a process that
    is gone, on any host, is taken over (``pneumo sweep`` retrying a run whose worker was lost).
    ``echo=False`` keeps the notebook and epoch lines off the terminal (a sweep prints one line per run).
    """
    import papermill

    overrides = dict(overrides or {})
    declared = notebook_parameters(notebooks, notebooks_dir)
    profile_keys = set(load_config(profile))
    profile_overrides, notebook_only = split_settings(overrides, profile_keys, declared)
    if output_dir is None and not os.environ.get("PNEUMO_OUTPUT_DIR"):
        output_dir = str(default_output_dir(load_config(profile)["profile"]))
    settings = load_config(profile, data_dir=data_dir, output_dir=output_dir, **profile_overrides)
    # every way of naming the run's outputs (--output-dir, $PNEUMO_OUTPUT_DIR, -p, the profile) meets one guard,
    # on the resolved real path: the committed model and results change only through pneumo promote
    outputs.refuse_committed(settings.output_dir, "the run's folder (--output-dir, $PNEUMO_OUTPUT_DIR or profile)")
    outputs.refuse_committed(settings.model_path, "the run's model (-p model_path or the profile)")
    for key in ("model_path", "weights"):  # a path typed by the user is from the user's folder, not notebooks/
        if isinstance(profile_overrides.get(key), str) and profile_overrides[key] != "imagenet":
            profile_overrides[key] = str(settings[key])
    check_data(settings)
    output = Path(settings.output_dir)
    summary_path = output / SUMMARY_NAME
    purpose = lock_purpose or f"pneumo run --profile {settings.profile}"
    with outputs.FolderLock(output, purpose=purpose, reclaim_same_purpose=lock_purpose is not None):
        previous = read_record(summary_path) if summary_path.exists() else None
        resuming = bool(profile_overrides.get("resume")) and previous is not None and previous.get("status") != "ok"
        if previous is not None and not overwrite and not resuming:
            raise OutputExists(
                f"{portable_path(output)}: already holds a run ({SUMMARY_NAME}); pass --overwrite "
                "to replace it or --output-dir to write elsewhere"
            )
        return _execute(
            papermill,
            settings,
            profile_overrides,
            notebook_only,
            declared,
            data_dir,
            notebooks,
            notebooks_dir,
            progress_bar,
            summary_path,
            echo,
        )


def _execute(
    papermill,
    settings,
    profile_overrides,
    notebook_only,
    declared,
    data_dir,
    notebooks,
    notebooks_dir,
    progress_bar,
    summary_path,
    echo=True,
) -> dict[str, Any]:
    output = Path(settings.output_dir)
    executed = output / "executed"
    executed.mkdir(parents=True, exist_ok=True)

    # Paths inside the project reach the kernels relative to the notebooks' folder (their working
    # directory), so that the executed notebooks record no absolute path of the project.
    def for_kernel(path):  # inside the project (or beside it): relative; elsewhere as the user typed it
        shown = portable_path(path)
        return shown if Path(shown).is_absolute() else os.path.relpath(path, notebooks_dir)

    relative = {"output_dir": for_kernel(output)}
    if data_dir or not settings.synthetic:
        relative["data_dir"] = for_kernel(settings.data_dir)
    parameters = {"profile": settings.profile, **relative, "overrides": profile_overrides}
    summary: dict[str, Any] = {
        "profile": settings.profile,
        "parameters": {
            **parameters,
            "output_dir": portable_path(output),
            **({"data_dir": portable_path(settings.data_dir)} if "data_dir" in relative else {}),
            "notebook_parameters": notebook_only,
        },
        "config": {
            key: (portable_path(value) if key in ("output_dir", "data_dir", "model_path") else value)
            for key, value in settings.items()
        },
        "data_dir": portable_path(settings.data_dir),
        "notebooks": [],
        "status": "running",
        **provenance(),
    }
    environment = {key: os.environ.get(key) for key in QUIET_KERNEL_ENVIRONMENT}
    os.environ.update(QUIET_KERNEL_ENVIRONMENT)
    started = time.perf_counter()
    current = None
    interrupt = _InterruptFlag()
    kernels_log = _KernelsStderr(output / KERNELS_LOG)
    try:
        for name in notebooks:
            output_path = executed / name
            current = {"notebook": name, "status": "running"}
            if echo:
                print(f"==> running {name}", file=sys.stderr, flush=True)
            notebook_started = time.perf_counter()
            own = {key: value for key, value in notebook_only.items() if key in declared.get(name, set())}
            try:
                papermill.execute_notebook(
                    str(Path(notebooks_dir) / name),
                    str(output_path),
                    parameters={**parameters, **own},
                    cwd=str(notebooks_dir),
                    progress_bar=progress_bar,
                    kernel_name="python3",
                    stdout_file=_ProgressEcho() if echo else None,
                    kernel_manager_class=PoliteKernelManager,  # no false alarm in the log
                    # the kernel's own start-up warnings (TCP transport) are noise here
                    extra_arguments=["--IPKernelApp.log_level=ERROR"],
                )
            except Exception as error:
                if interrupt.raised:  # Ctrl-C also reaches the kernel and the client; whatever they raise is it
                    raise KeyboardInterrupt from None
                if not executed.is_dir():  # the run's folder was deleted or moved under it: papermill cannot save
                    current.update(seconds=round(time.perf_counter() - notebook_started, 1), status="failed")
                    summary["notebooks"].append(current)
                    current = None
                    summary["status"] = "failed"
                    raise outputs.OutputError(
                        f"{portable_path(output)}: the run's folder was removed while {name} ran; the run stopped "
                        "there (start it again into a folder that stays)"
                    ) from None
                if not isinstance(error, papermill.PapermillExecutionError):
                    raise
                current.update(seconds=round(time.perf_counter() - notebook_started, 1), status="failed")
                summary["notebooks"].append(current)
                current = None
                summary["status"] = "failed"
                raise NotebookFailed(_failure_message(name, output_path, error)) from None
            finally:
                if output_path.exists():
                    export_html(output_path)
            if interrupt.raised:  # Ctrl-C whose KeyboardInterrupt Python swallowed (raised inside a weakref or
                raise KeyboardInterrupt  # garbage-collection callback, where exceptions are only printed)
            current.update(seconds=round(time.perf_counter() - notebook_started, 1), status="ok")
            summary["notebooks"].append(current)
            current = None
        summary["status"] = "ok"
    except KeyboardInterrupt:
        summary["status"] = "interrupted"
        if current is not None:
            summary["notebooks"].append({**current, "status": "interrupted"})
        raise RunInterrupted(
            f"interrupted; partial output kept in {portable_path(output)} (status 'interrupted' in {SUMMARY_NAME})"
        ) from None
    finally:
        kernels_log.restore()
        interrupt.restore()
        for key, value in environment.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        summary["total_seconds"] = round(time.perf_counter() - started, 1)
        if output.is_dir():  # a folder removed under the run is not made again just to hold its summary
            outputs.write_json(summary_path, summary)
    return summary


def is_synthetic_run(summary: dict[str, Any]) -> bool:
    """A run whose model learnt from synthetic images (the smoke profile, or ``synthetic: true``)."""
    config = summary.get("config") or {}
    return bool(config.get("synthetic")) or summary.get("profile") == "smoke"


def promote(
    run_dir: str | os.PathLike,
    saved_model: str | os.PathLike | None = None,
    results_dir: str | os.PathLike | None = None,
    allow_synthetic: bool = False,
) -> list[Path]:
    """Make a finished run the project's reference: its model and card become ``saved_models/``'s, and its
    executed notebooks, figures, metrics and summary replace those in ``results/``. Only on request
    (``pneumo promote RUN_DIR``).

    One at a time and all or nothing: the committed folder is locked (a second promote stops at once, writing
    nothing); every new file is first written beside its target (``*.promote-new``); only when all are written
    are they swapped in, each old file kept as ``*.promote-old`` until the last swap succeeded. Any failure
    removes what was staged and puts every old file back, and says which path failed; a journal in
    ``saved_models/`` records each step, so a promote killed outright is undone (or, after its last swap,
    finished) by the next ``pneumo`` command. The previous model's notebooks, figures, metrics and the files
    measured on it (``bench_*.json``, ``evaluate_*.json``, the explorer's and report's pictures) are removed
    with it, not shown beside the new model. A run trained on
    synthetic images (a smoke run) is refused unless ``allow_synthetic``.
    """
    run_dir = Path(run_dir)
    saved_model = Path(saved_model or SAVED_MODEL)
    results_dir = Path(results_dir or REFERENCE_RESULTS)
    summary_path = run_dir / SUMMARY_NAME
    if not summary_path.is_file():
        raise SettingsError(f"{run_dir}: not a run folder (no {SUMMARY_NAME})")
    summary = read_record(summary_path)
    if summary.get("status") != "ok":
        raise SettingsError(
            f"{run_dir}: the run did not finish (status {summary.get('status')!r}); only a finished run can be promoted"
        )
    if is_synthetic_run(summary) and not allow_synthetic:
        raise SettingsError(
            f"{run_dir}: the run was trained on synthetic images (profile {summary.get('profile')!r}); it would "
            "replace the committed model; pass --allow-synthetic if that is really meant"
        )
    model_path = run_dir / "model" / saved_model.name
    if not model_path.is_file() or not card_path(model_path).is_file():
        raise SettingsError(f"{model_path}: the run has no model with a card to promote")
    # one promote at a time for the committed folders (the lock is in saved_models/), and the run held too
    with (
        outputs.FolderLock(run_dir, purpose="pneumo promote"),
        outputs.FolderLock(saved_model.parent, purpose="pneumo promote"),
    ):
        journal = outputs.Journal(saved_model.parent / outputs.JOURNAL_NAME)
        journal.recover()  # a promote killed midway: undone (or finished) before this one starts
        pairs = [(model_path, saved_model), (card_path(model_path), card_path(saved_model))]
        if read_record(card_path(model_path)).get("ood"):  # the out-of-distribution gate beside the model
            if not detector_path(model_path).is_file():
                raise SettingsError(
                    f"{detector_path(model_path)}: the card names an out-of-distribution gate, "
                    "but its file is missing; nothing was promoted"
                )
            pairs.append((detector_path(model_path), detector_path(saved_model)))
        for folder in ("executed", "figures", "metrics"):
            if (run_dir / folder).is_dir():
                pairs += [
                    (source, results_dir / folder / source.relative_to(run_dir / folder))
                    for source in sorted((run_dir / folder).rglob("*"))
                    if source.is_file()
                ]
        pairs += [(source, results_dir / source.name) for source in sorted(run_dir.glob("bench_*.json"))]
        pairs.append((summary_path, results_dir / SUMMARY_NAME))
        same_model = saved_model.is_file() and saved_model.read_bytes() == model_path.read_bytes()
        return replace_all(pairs, previous_model_files(results_dir, pairs, same_model), journal)


# What in results/ belongs to one model: its notebooks, figures and metrics, and the files measured on it at the
# top (benchmarks, an evaluation, pictures of its explorer and report). A promote replaces them all: a file the
# new run does not have is removed with the old model, never shown beside the new one as if it were its own.
MODEL_FOLDERS = ("executed", "figures", "metrics")
MODEL_FILES = ("bench_*.json", "evaluate_*.json", "explorer.png", "report.png")


def previous_model_files(results_dir: Path, pairs: list[tuple[Path, Path]], same_model: bool = False) -> list[Path]:
    """The files of the committed model in ``results_dir`` that the promote's ``pairs`` do not replace. With
    ``same_model`` (the run's model file is the committed one, byte for byte: its notebooks were run again),
    the files measured on that model at the top of ``results/`` still describe it and stay."""
    targets = {target for _, target in pairs}
    found = [
        path
        for folder in MODEL_FOLDERS
        if (results_dir / folder).is_dir()
        for path in sorted((results_dir / folder).rglob("*"))
        if path.is_file() and not path.name.endswith((".promote-new", ".promote-old"))
    ]
    if not same_model:
        found += [path for pattern in MODEL_FILES for path in sorted(results_dir.glob(pattern)) if path.is_file()]
    return [path for path in found if path not in targets]


def write_pages(results_dir: str | os.PathLike | None = None, readme: str | os.PathLike | None = None) -> list[Path]:
    """The committed run's generated pages, from its files: ``results/README.md`` (the results in full),
    ``results/report.html`` and the results table of the project's README."""
    results_dir = Path(results_dir or REFERENCE_RESULTS)
    readme = Path(readme or PROJECT_ROOT / "README.md")
    written = [
        outputs.write_text(results_dir / "README.md", results_page.results_markdown(results_dir)),
        outputs.write_text(results_dir / "report.html", report.build_report(results_dir)),
    ]
    if readme.is_file() and results_page.readme_brief(readme.read_text(encoding="utf-8")) is not None:
        text = results_page.with_readme_brief(readme.read_text(encoding="utf-8"), results_dir)
        written.append(outputs.write_text(readme, text))
    return written


def replace_all(
    pairs: list[tuple[Path, Path]], remove: list[Path] = (), journal: outputs.Journal | None = None
) -> list[Path]:
    """Copy each ``source`` over its ``target`` and take away each of ``remove``, all or nothing (see
    :func:`promote`); with a ``journal``, every step is recorded first, so a kill at any instant is undone (or,
    after the last swap, finished) by the next command."""
    entries = [
        {
            "target": str(target),
            "stage": str(target.with_name(target.name + ".promote-new")),
            "old": str(target.with_name(target.name + ".promote-old"))
            if target.exists() or target.is_symlink()
            else None,
        }
        for _, target in pairs
    ] + [
        {"target": str(path), "stage": None, "old": str(path.with_name(path.name + ".promote-old"))} for path in remove
    ]
    if journal is not None:
        journal.write("staging", entries)
    staged: list[Path] = []
    swapped: list[tuple[Path, Path | None]] = []  # (target, its old copy or None where it was new)
    try:
        for source, target in pairs:
            stage = target.with_name(target.name + ".promote-new")
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise outputs.OutputError(
                    f"{outputs.display(target.parent)}: cannot be made a folder "
                    f"({outputs.describe(error)}); nothing was promoted"
                ) from None
            staged.append(stage)
            try:
                outputs.write_bytes(stage, source.read_bytes())
            except OSError as error:
                raise outputs.OutputError(f"{error}; nothing was promoted") from None
        if journal is not None:
            journal.write("swapping", entries)
        for entry in entries:
            target = Path(entry["target"])
            old = Path(entry["old"]) if entry["old"] else None
            try:
                if old is not None:
                    os.replace(target, old)
                if entry["stage"]:
                    os.replace(entry["stage"], target)
            except OSError as error:
                if old is not None and old.exists() and not target.exists():
                    os.replace(old, target)
                raise outputs.OutputError(
                    f"{outputs.display(target)}: cannot be replaced ({outputs.describe(error)}); nothing was promoted"
                ) from None
            swapped.append((target, old))
    except BaseException:
        for target, old in reversed(swapped):
            if old is not None:
                os.replace(old, target)
            else:
                target.unlink(missing_ok=True)
        for stage in staged:
            stage.unlink(missing_ok=True)
        if journal is not None:
            journal.path.unlink(missing_ok=True)
        raise
    if journal is not None:
        journal.write("done", entries)
    for entry in entries:
        if entry["old"]:
            Path(entry["old"]).unlink(missing_ok=True)
    if journal is not None:
        journal.path.unlink(missing_ok=True)
    return [target for _, target in pairs]


def read_record(path: Path) -> dict[str, Any]:
    """A JSON record (run summary, card) as a mapping, or one line saying why it cannot be used."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        reason = first_line(error) if str(error) else "empty"
        raise SettingsError(
            f"{portable_path(path)}: unreadable ({type(error).__name__}: {reason}); delete it or run again"
        ) from None
    if not isinstance(record, dict):
        raise SettingsError(
            f"{portable_path(path)}: not a JSON object (a {type(record).__name__}); delete it or run again"
        )
    return record


def summary_text(summary: dict[str, Any]) -> str:
    lines = [f"profile {summary['profile']}, data {summary['data_dir']}, output {summary['parameters']['output_dir']}"]
    lines += [
        f"  {item['notebook']:<20} {item['status']:<7} {item.get('seconds', 0):>7.1f} s"
        for item in summary["notebooks"]
    ]
    lines.append(f"  total {summary['total_seconds']:.1f} s, status {summary['status']}")
    return "\n".join(lines)
