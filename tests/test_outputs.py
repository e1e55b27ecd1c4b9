"""Writing results: exclusive and atomic creates, one-line write errors with the work rescued, folder locks
between processes, and names that are not UTF-8. Real files and real processes."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import PNEUMO

from pneumo_utils import outputs
from pneumo_utils.cli.predict import DECISION_FIELDS


@pytest.fixture
def full_disk(tmp_path):
    """A 64 KiB tmpfs, mounted for the test where the system lets us (root), else the test is skipped."""
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount_point)], capture_output=True, text=True
    )
    if made.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({made.stderr.strip() or made.returncode})")
    yield mount_point
    subprocess.run(["umount", str(mount_point)], check=False)


def test_exclusive_write_never_replaces_and_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "result.csv"
    outputs.write_text(target, "first", overwrite=False)
    with pytest.raises(outputs.OutputExists, match="already exists"):
        outputs.write_text(target, "second", overwrite=False)
    assert target.read_text() == "first"
    outputs.write_text(target, "third", overwrite=True)
    assert target.read_text() == "third"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["result.csv"]


@pytest.mark.parametrize("case", ["directory", "file_as_folder", "unwritable", "bad_name"])
def test_write_errors_are_one_line_and_leave_nothing_behind(tmp_path, case):
    if case == "directory":
        target = tmp_path / "out.json"
        target.mkdir()
        expected = "it is a folder"
    elif case == "file_as_folder":
        (tmp_path / "plain").write_text("x")
        target = tmp_path / "plain" / "out.json"
        expected = "not a folder"
    elif case == "unwritable":  # a read-only file system: refused even to root, unlike folder permissions
        folder = tmp_path / "readonly"
        folder.mkdir()
        made = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)], capture_output=True, text=True
        )
        if made.returncode != 0:
            if os.geteuid() == 0:
                pytest.skip(f"cannot mount a read-only tmpfs here ({made.stderr.strip()})")
            folder.chmod(0o500)  # not root: folder permissions do the same job
        target = folder / "out.json"
        expected = "read-only file system" if made.returncode == 0 else "permission denied"
    else:
        target = Path(os.fsdecode(bytes(tmp_path) + b"/bad\xff\xfe" + b"x" * 300 + b".json"))
        expected = "cannot write"
    try:
        with pytest.raises(outputs.OutputError, match=expected) as failure:
            outputs.write_json(target, {"a": 1})
        assert "\n" not in str(failure.value)
        assert not list(tmp_path.rglob("*.tmp"))
    finally:
        if case == "unwritable":
            subprocess.run(["umount", str(target.parent)], capture_output=True, check=False)


def test_a_full_disk_is_one_line_and_the_work_is_rescued(full_disk):
    payload = b"m" * (256 << 10)  # 256 KiB into 64 KiB
    written, problem = outputs.save_or_rescue(full_disk / "metrics.json", payload, overwrite=False)
    assert problem and "no space left on the device" in problem and "\n" not in problem
    assert written.read_bytes() == payload and not written.is_relative_to(full_disk)
    assert list(full_disk.iterdir()) == []  # no partial file, no temporary file


def test_a_device_is_never_replaced(tmp_path):
    with pytest.raises(outputs.OutputError, match="not a regular file"):
        outputs.write_bytes(Path("/dev/null"), b"x", overwrite=True)
    assert Path("/dev/null").is_char_device()


@pytest.mark.slow
def test_two_concurrent_writers_one_wins_and_nothing_is_replaced(tmp_path):
    target = tmp_path / "same.csv"
    script = (
        "import sys, time; from pneumo_utils import outputs\n"
        "time.sleep(max(0, float(sys.argv[2]) - time.time()))\n"
        "try:\n    outputs.write_text(sys.argv[1], sys.argv[3] * 100000, overwrite=False); print('wrote')\n"
        "except outputs.OutputExists as e:\n    print('refused', e); sys.exit(1)\n"
    )
    start = time.time() + 2.0
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(target), str(start), letter], stdout=subprocess.PIPE, text=True
        )
        for letter in "ab"
    ]
    results = [(process.wait(timeout=60), process.stdout.read()) for process in processes]
    assert sorted(code for code, _ in results) == [0, 1]
    winner = "ab"[[code for code, _ in results].index(0)]
    assert target.read_text() == winner * 100000
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_stale_lock_is_taken_over_and_a_live_one_is_not(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / outputs.LOCK_NAME).write_text(
        json.dumps({"pid": dead.pid, "host": os.uname().nodename, "purpose": "old run", "started": "then"})
    )
    with outputs.FolderLock(tmp_path) as lock:
        assert lock.taken_over["pid"] == dead.pid
        with pytest.raises(outputs.FolderBusy, match=f"pid {os.getpid()}"):
            outputs.FolderLock(tmp_path).acquire()
    assert not (tmp_path / outputs.LOCK_NAME).exists()


@pytest.mark.slow
def test_two_concurrent_predict_commands_one_writes_the_other_refuses(tmp_path, tiny_model_path, synthetic_root):
    images = sorted((synthetic_root / "test").rglob("*.jpeg"))[:4]
    output = tmp_path / "same.csv"
    command = [*PNEUMO, "predict", *map(str, images), "--model", str(tiny_model_path), "--output", str(output)]
    processes = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in "ab"]
    results = [(process.wait(timeout=300), process.stderr.read()) for process in processes]
    wrote = [stderr for code, stderr in results if code == 0 and f"wrote {output}" in stderr]
    refused = [stderr for code, stderr in results if code != 0 and "already exists" in stderr]
    assert len(wrote) == 1 and len(refused) == 1, results
    assert output.read_text().startswith("path," + ",".join(DECISION_FIELDS) + ",error")
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.slow
def test_an_output_name_that_is_not_utf8_is_written_and_printed_without_a_traceback(
    tmp_path, tiny_model_path, synthetic_root
):
    image = sorted((synthetic_root / "test").rglob("*.jpeg"))[0]
    name = bytes(tmp_path) + b"/pr\xe9dictions.csv"  # Latin-1 bytes: not valid UTF-8
    result = subprocess.run(
        [
            os.fsencode(sys.executable),
            b"-m",
            b"pneumo_utils.cli",
            b"predict",
            bytes(image),
            b"--model",
            bytes(tiny_model_path),
            b"--output",
            name,
        ],
        capture_output=True,
        timeout=300,
    )
    stderr = result.stderr.decode("utf-8", "replace")
    assert result.returncode == 0 and "Traceback" not in stderr, stderr
    assert "wrote " in stderr and "pr\\xe9dictions.csv" in stderr
    assert Path(os.fsdecode(name)).read_text().startswith("path,probability")


def _committed_state() -> dict[str, float]:
    from pneumo_utils.outputs import COMMITTED

    return {str(path): path.stat().st_mtime_ns for folder in COMMITTED for path in folder.rglob("*") if path.is_file()}


@pytest.mark.parametrize(
    "how",
    ["absolute -p model_path", "relative -p model_path", "PNEUMO_OUTPUT_DIR", "--output-dir inside", "a link"],
)
def test_every_way_to_name_a_run_output_inside_the_committed_folders_is_refused(tmp_path, how):
    """Issue 29: flag, -p, environment or a symbolic link: one guard on the resolved path, nothing written."""
    from pneumo_utils.config import PROJECT_ROOT, SAVED_MODEL

    link = tmp_path / "elsewhere"
    link.symlink_to(PROJECT_ROOT / "results")
    arguments = ["run", "--profile", "smoke", "--overwrite", "--output-dir", str(tmp_path / "run")]
    environment, cwd = dict(os.environ), tmp_path
    if how == "absolute -p model_path":
        arguments += ["-p", f"model_path={SAVED_MODEL}"]
    elif how == "relative -p model_path":
        arguments += ["-p", f"model_path=saved_models/{SAVED_MODEL.name}"]
        cwd = PROJECT_ROOT
    elif how == "PNEUMO_OUTPUT_DIR":
        arguments = ["run", "--profile", "smoke", "--overwrite"]
        environment["PNEUMO_OUTPUT_DIR"] = str(PROJECT_ROOT / "results")
    elif how == "--output-dir inside":
        arguments[-1] = str(PROJECT_ROOT / "saved_models" / "run")
    else:
        arguments[-1] = str(link / "run")
    before = _committed_state()
    done = subprocess.run([*PNEUMO, *arguments], capture_output=True, text=True, timeout=300, env=environment, cwd=cwd)
    assert done.returncode == 2, done.stderr[-1500:]
    error = done.stderr.strip()
    assert error.startswith("error: ") and "\n" not in error and "pneumo promote" in error, error
    assert "--overwrite" not in error.split("pneumo promote")[1]  # not told to force it
    assert _committed_state() == before
    assert not (PROJECT_ROOT / "notebooks" / "saved_models").exists()


def test_saving_a_model_or_a_gate_into_the_committed_folder_is_refused(tiny_model_path):
    from pneumo_utils.config import PROJECT_ROOT
    from pneumo_utils.model import load_model, save_model
    from pneumo_utils.model.ood import Detector

    network, card = load_model(tiny_model_path)
    before = _committed_state()
    with pytest.raises(outputs.CommittedOutput, match="pneumo promote"):
        save_model(network, PROJECT_ROOT / "saved_models" / "other.keras", dict(card))
    generator = np.random.default_rng(0)
    gate = Detector.fit(
        generator.integers(0, 256, (12, 32, 32), np.uint8), generator.integers(0, 256, (6, 32, 32), np.uint8)
    )
    with pytest.raises(outputs.CommittedOutput, match="pneumo promote"):
        gate.save(PROJECT_ROOT / "saved_models" / "other.ood.npz")
    assert _committed_state() == before
    assert not (PROJECT_ROOT / "saved_models" / "other.keras").exists()
