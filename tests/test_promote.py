"""Nothing committed changes except through ``pneumo promote``, and promote is all or nothing: outputs inside
saved_models/ or results/ are refused before any work, names are names, tables are not rewritten from fewer
records, and a promote stopped by one blocked path leaves every committed file as it was."""

import json
import os
import subprocess
import sys

import pytest
from helpers import finished_run, run_pneumo_here

from pneumo_utils import config, model, outputs
from pneumo_utils.config import PROJECT_ROOT
from pneumo_utils.runs import pipeline


@pytest.mark.parametrize(
    "arguments",
    [
        ["run", "--profile", "smoke", "--output-dir", "saved_models"],
        ["run", "--profile", "smoke", "--output-dir", "results/smoke-here", "--overwrite"],
        ["run", "--profile", "smoke", "--output-dir", "runs/../results"],
        ["evaluate", "--output", "results/metrics/metrics_validation.json"],
        ["predict", "x.png", "--output", "saved_models/predictions.csv"],
        ["gradcam", "x.png", "--out", "results/figures"],
        ["bench", "train", "--output", "results/bench_train.json"],
        ["report", "results"],
        ["report", "results", "--markdown"],
        ["calibrate", "--data-dir", "x", "--output-dir", "saved_models"],
        ["experiments", "--output", "results/report.html"],
    ],
)
def test_outputs_inside_the_committed_folders_are_refused_before_any_work(arguments):
    before = {path: path.stat().st_mtime_ns for path in (PROJECT_ROOT / "results").glob("*") if path.is_file()}
    result = run_pneumo_here(*arguments)
    assert result.returncode == 2, (arguments, result.stderr)
    assert "only `pneumo promote RUN_DIR` changes it" in result.stderr and len(result.stderr.splitlines()) == 1
    after = {path: path.stat().st_mtime_ns for path in (PROJECT_ROOT / "results").glob("*") if path.is_file()}
    assert before == after


def test_a_symbolic_link_into_results_is_refused_too(tmp_path):
    (tmp_path / "innocent").symlink_to(PROJECT_ROOT / "results")
    result = run_pneumo_here("evaluate", "--output", str(tmp_path / "innocent" / "x.json"))
    assert result.returncode == 2 and "inside results/" in result.stderr


@pytest.mark.parametrize("name", ["../../saved_models", "a/b", "..", ".hidden", "x" * 101, ""])
def test_names_are_names_not_paths(name, tmp_path):
    result = run_pneumo_here("train", "--name", name, "--root", str(tmp_path))
    assert result.returncode == 2 and "--name" in result.stderr and "plain name" in result.stderr
    assert not any(tmp_path.iterdir())


def test_the_lab_notebook_may_add_experiments_but_not_lose_them(tmp_path):
    table = tmp_path / "experiments.md"
    (tmp_path / "experiments.csv").write_text("name,what\n" + "".join(f"e{i},x\n" for i in range(3)))
    table.write_text("three experiments")
    empty_root = tmp_path / "empty"
    empty_root.mkdir()
    result = run_pneumo_here("experiments", "--root", str(empty_root), "--output", str(table))
    assert result.returncode == 2 and "holds 3 experiments" in result.stderr and "--overwrite" in result.stderr
    assert table.read_text() == "three experiments"
    assert (
        run_pneumo_here("experiments", "--root", str(empty_root), "--output", str(table), "--overwrite").returncode == 0
    )


def _finished_run(tmp_path, tiny_model_path):
    files = {
        f"{folder}/new{number}.txt": f"new {folder} {number}"
        for folder in ("figures", "metrics")
        for number in range(3)
    }
    return finished_run(tmp_path / "run", tiny_model_path, files)


def _committed(tmp_path):
    saved = tmp_path / "saved_models" / "pneumonia_cnn.keras"
    saved.parent.mkdir()
    saved.write_bytes(b"old model")
    saved.with_suffix(".json").write_text("old card")
    results = tmp_path / "results"
    for folder in ("figures", "metrics"):
        (results / folder).mkdir(parents=True)
        for number in range(3):
            (results / folder / f"new{number}.txt").write_text(f"old {folder} {number}")
    return saved, results


def _snapshot(*folders):
    return {path: path.read_bytes() for folder in folders for path in sorted(folder.rglob("*")) if path.is_file()}


def test_a_promote_blocked_while_staging_changes_nothing(tmp_path, tiny_model_path):
    run = _finished_run(tmp_path, tiny_model_path)
    saved, results = _committed(tmp_path)
    (run / "metrics" / "sub").mkdir()
    (run / "metrics" / "sub" / "deep.txt").write_text("new")
    (results / "metrics" / "sub").write_text("a file where the run has a folder")  # blocks one path midway
    before = _snapshot(saved.parent, results)
    with pytest.raises(outputs.OutputError):
        pipeline.promote(run, saved_model=saved, results_dir=results)
    assert _snapshot(saved.parent, results) == before  # no new file swapped in, none staged left behind


def test_a_promote_that_fails_while_swapping_puts_every_old_file_back(tmp_path, tiny_model_path, monkeypatch):
    run = _finished_run(tmp_path, tiny_model_path)
    saved, results = _committed(tmp_path)
    before = _snapshot(saved.parent, results)
    real_replace, calls = os.replace, []

    # (os.replace is the swap itself: failing it is how a full disk or a vanished folder shows)

    def replace_then_fail(source, target):
        if str(source).endswith(".promote-new"):
            calls.append(target)
            if len(calls) == 4:  # the fourth file's swap (once): three were already replaced
                raise OSError(28, "No space left on device")
        return real_replace(source, target)

    monkeypatch.setattr(os, "replace", replace_then_fail)
    with pytest.raises(outputs.OutputError, match="nothing was promoted"):
        pipeline.promote(run, saved_model=saved, results_dir=results)
    monkeypatch.setattr(os, "replace", real_replace)
    assert _snapshot(saved.parent, results) == before
    written = pipeline.promote(run, saved_model=saved, results_dir=results)  # and then it works
    assert saved.read_bytes() == tiny_model_path.read_bytes() and len(written) == 10  # + the gate
    assert (results / "figures" / "new1.txt").read_text() == "new figures 1"
    assert not list(results.rglob("*.promote-*")) and not list(saved.parent.glob("*.promote-*"))


@pytest.mark.parametrize("content", ["", "{not json", "[1, 2]"])
def test_an_unreadable_run_summary_is_one_line(tmp_path, tiny_model_path, content):
    run = _finished_run(tmp_path, tiny_model_path)
    (run / pipeline.SUMMARY_NAME).write_text(content)
    result = run_pneumo_here("promote", str(run))
    assert result.returncode == 2 and "run_summary.json" in result.stderr and len(result.stderr.splitlines()) == 1


def test_an_empty_lock_left_by_a_killed_process_is_taken_over(tmp_path):
    lock = tmp_path / outputs.LOCK_NAME
    lock.write_text("")
    with pytest.raises(outputs.FolderBusy, match="delete .pneumo.lock"):  # fresh: perhaps being written now
        outputs.FolderLock(tmp_path).acquire()
    old = lock.stat().st_mtime - 3600
    os.utime(lock, (old, old))
    taken = outputs.FolderLock(tmp_path).acquire()
    assert taken.taken_over is None and json.loads(lock.read_text())["pid"] == os.getpid()
    taken.release()


def test_promote_copies_a_finished_run_and_refuses_an_unfinished_one(tmp_path, tiny_model_path):
    run = finished_run(tmp_path / "run", tiny_model_path, {"figures/roc.png": "png"})
    saved = tmp_path / "saved_models" / "pneumonia_cnn.keras"
    written = pipeline.promote(run, saved_model=saved, results_dir=tmp_path / "results")
    assert saved.read_bytes() == tiny_model_path.read_bytes() and saved.with_suffix(".json").is_file()
    assert (tmp_path / "results" / "figures" / "roc.png").read_bytes() == b"png"
    assert len(written) == 5  # model, card, gate, figure, summary
    (run / pipeline.SUMMARY_NAME).write_text(json.dumps({"status": "interrupted"}))
    with pytest.raises(config.SettingsError, match="did not finish"):
        pipeline.promote(run, saved_model=saved, results_dir=tmp_path / "results")


def test_a_run_trained_on_synthetic_images_is_not_promoted_without_asking(tmp_path, tiny_model_path):
    run = finished_run(tmp_path / "run", tiny_model_path, {"figures/roc.png": "png"})
    summary = json.loads((run / pipeline.SUMMARY_NAME).read_text())
    (run / pipeline.SUMMARY_NAME).write_text(json.dumps({**summary, "profile": "smoke", "config": {"synthetic": True}}))
    saved, results = _committed(tmp_path)
    before = _snapshot(saved.parent, results)
    with pytest.raises(config.SettingsError, match="synthetic images.*--allow-synthetic"):
        pipeline.promote(run, saved_model=saved, results_dir=results)
    assert _snapshot(saved.parent, results) == before
    pipeline.promote(run, saved_model=saved, results_dir=results, allow_synthetic=True)
    assert saved.read_bytes() == tiny_model_path.read_bytes()


@pytest.mark.slow
def test_pneumo_promote_of_the_smoke_run_is_refused_in_one_line(smoke_run_process):
    smoke_run, finished = smoke_run_process
    assert "pneumo promote" not in finished.stderr and "not a model to promote" in finished.stderr
    committed = config.SAVED_MODEL.read_bytes()
    result = run_pneumo_here("promote", str(smoke_run))
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert "synthetic images" in line and "--allow-synthetic" in line
    assert config.SAVED_MODEL.read_bytes() == committed


# ---------------------------------------------------------------------- issue 29, class 2: one promote, whole or none
PROMOTE_IN_A_PROCESS = """
import sys
from pathlib import Path
from pneumo_utils import outputs
from pneumo_utils.runs import pipeline
run, saved, results = map(Path, sys.argv[1:4])
try:
    pipeline.promote(run, saved_model=saved, results_dir=results)
except outputs.FolderBusy as error:
    print("busy:", error)
    sys.exit(3)
print("promoted")
"""


def _two_runs(tmp_path, tiny_model_path, site_model_path, files_per_run=3):
    runs = []
    for name, model_path in (("a", tiny_model_path), ("b", site_model_path)):
        files = {f"figures/f{number}.txt": f"{name} {number}" for number in range(files_per_run)}
        runs.append(finished_run(tmp_path / f"run_{name}", model_path, files))
        if not (runs[-1] / "model" / "pneumonia_cnn.ood.npz").is_file():
            raise AssertionError("the test models carry a gate")
    return runs


def _whole_from_one_run(saved, results, runs) -> str | None:
    """Which run the committed folders hold entirely (model, card, gate, figures, summary), or None if torn."""
    for run in runs:
        model = run / "model"
        same = (
            saved.read_bytes() == (model / "pneumonia_cnn.keras").read_bytes()
            and saved.with_suffix(".json").read_bytes() == (model / "pneumonia_cnn.json").read_bytes()
            and saved.with_name("pneumonia_cnn.ood.npz").read_bytes() == (model / "pneumonia_cnn.ood.npz").read_bytes()
            and sorted(p.name for p in (results / "figures").iterdir())
            == sorted(p.name for p in (run / "figures").iterdir())
            and all((results / "figures" / p.name).read_bytes() == p.read_bytes() for p in (run / "figures").iterdir())
        )
        if same:
            return run.name
    return None


@pytest.mark.slow
def test_two_promotes_at_once_leave_one_whole_run_and_the_loser_writes_nothing(
    tmp_path, tiny_model_path, site_model_path
):
    runs = _two_runs(tmp_path, tiny_model_path, site_model_path, files_per_run=200)
    saved, results = tmp_path / "saved_models" / "pneumonia_cnn.keras", tmp_path / "results"
    for attempt in range(5):
        processes = [
            subprocess.Popen(
                [sys.executable, "-c", PROMOTE_IN_A_PROCESS, str(run), str(saved), str(results)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for run in (runs if attempt % 2 == 0 else runs[::-1])
        ]
        finished = [process.communicate(timeout=120) for process in processes]
        codes = [process.returncode for process in processes]
        assert set(codes) <= {0, 3} and 0 in codes, (codes, finished)
        for (out, _), code in zip(finished, codes, strict=True):
            assert ("in use by another process" in out) == (code == 3), out
        assert _whole_from_one_run(saved, results, runs) is not None, f"attempt {attempt}: torn"
        leftovers = [
            p
            for p in tmp_path.rglob("*")
            if ".promote-" in p.name or p.name == outputs.LOCK_NAME and "saved_models" in str(p)
        ]
        assert not leftovers, leftovers


@pytest.mark.slow
def test_a_promote_killed_at_any_instant_is_finished_or_undone_by_the_next_command(
    tmp_path, tiny_model_path, site_model_path
):
    import signal
    import time

    runs = _two_runs(tmp_path, tiny_model_path, site_model_path, files_per_run=400)
    saved, results = tmp_path / "saved_models" / "pneumonia_cnn.keras", tmp_path / "results"
    pipeline.promote(runs[0], saved_model=saved, results_dir=results)  # the committed run: a
    journal = saved.parent / outputs.JOURNAL_NAME
    outcomes = set()
    for kill_when in ("staging", "swapping", 0.05, 0.2, 0.5, "swapping"):
        process = subprocess.Popen(
            [sys.executable, "-c", PROMOTE_IN_A_PROCESS, str(runs[1]), str(saved), str(results)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while process.poll() is None and time.monotonic() < deadline:
            if isinstance(kill_when, str):
                try:
                    if json.loads(journal.read_text())["state"] == kill_when:
                        break
                except (OSError, ValueError, KeyError):
                    pass
                time.sleep(0.001)
            else:
                time.sleep(kill_when)
                break
        process.send_signal(signal.SIGKILL)
        process.wait()
        outcome = outputs.recover_promote(saved.parent)  # what the next pneumo command does first
        outcomes.add(outcome)
        holder = _whole_from_one_run(saved, results, runs)
        assert holder is not None, f"killed at {kill_when}: torn (recovery said {outcome})"
        assert not [p for p in tmp_path.rglob("*.promote-*")] and not journal.exists()
        # and the next promote of run a (the committed one again) starts from a whole state
        pipeline.promote(runs[0], saved_model=saved, results_dir=results)
        assert _whole_from_one_run(saved, results, runs) == "run_a"
    assert "rolled back" in outcomes, outcomes  # at least one kill landed midway


def test_the_command_line_finishes_an_interrupted_promote_before_anything_else(tmp_path):
    folder = tmp_path / "committed"
    folder.mkdir()
    (folder / "model.keras").write_bytes(b"new")
    (folder / "model.keras.promote-old").write_bytes(b"old")
    (folder / "card.json.promote-new").write_bytes(b"new card")
    (folder / "card.json").write_bytes(b"old card")
    outputs.Journal(folder / outputs.JOURNAL_NAME).write(
        "swapping",
        [
            {
                "target": str(folder / "model.keras"),
                "stage": str(folder / "model.keras.promote-new"),
                "old": str(folder / "model.keras.promote-old"),
            },
            {
                "target": str(folder / "card.json"),
                "stage": str(folder / "card.json.promote-new"),
                "old": str(folder / "card.json.promote-old"),
            },
        ],
    )
    with pytest.raises(model.ModelLoadError, match="a pneumo promote into this folder stopped midway"):
        model.load_model(folder / "model.keras")
    assert outputs.recover_promote(folder) == "rolled back"
    assert (folder / "model.keras").read_bytes() == b"old" and (folder / "card.json").read_bytes() == b"old card"
    assert sorted(p.name for p in folder.iterdir()) == ["card.json", "model.keras"]


def test_a_model_and_a_card_of_two_runs_do_not_load_as_a_pair(tmp_path, tiny_model_path, site_model_path):
    mixed = tmp_path / "mixed.keras"
    mixed.write_bytes(site_model_path.read_bytes())
    model.card_path(mixed).write_text(model.card_path(tiny_model_path).read_text())
    with pytest.raises(model.ModelLoadError, match="does not match its card"):
        model.load_model(mixed)


def test_promote_takes_away_the_previous_models_figures_and_benchmarks(tmp_path, tiny_model_path):
    run = finished_run(tmp_path / "run", tiny_model_path, {"figures/roc.png": "new roc"})
    saved, results = tmp_path / "saved_models" / "pneumonia_cnn.keras", tmp_path / "results"
    for name in (
        "figures/roc.png",
        "figures/old_only.png",
        "metrics/evaluate_old.json",
        "bench_explore.json",
        "evaluate_val.json",
        "explorer.png",
        "experiments.md",
    ):
        (results / name).parent.mkdir(parents=True, exist_ok=True)
        (results / name).write_text(f"old {name}")
    pipeline.promote(run, saved_model=saved, results_dir=results)
    assert (results / "figures" / "roc.png").read_text() == "new roc"
    for gone in (
        "figures/old_only.png",
        "metrics/evaluate_old.json",
        "bench_explore.json",
        "evaluate_val.json",
        "explorer.png",
    ):
        assert not (results / gone).exists(), gone
    assert (results / "experiments.md").read_text() == "old experiments.md"  # the lab's record is not the model's
