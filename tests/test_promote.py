"""Nothing committed changes except through ``pneumo promote``, and promote is all or nothing: outputs inside
saved_models/ or results/ are refused before any work, names are names, tables are not rewritten from fewer
records, and a promote stopped by one blocked path leaves every committed file as it was."""

import json
import os

import pytest
from helpers import finished_run, run_pneumo_here

from pneumo_utils import config, outputs
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
