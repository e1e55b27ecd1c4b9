"""Issue 8: nothing lost, nothing silently replaced, one line per problem. Real files, real processes."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import finished_run, run_pneumo_here

from pneumo_utils import config, outputs, pipeline

PNEUMO = [sys.executable, "-m", "pneumo_utils.cli"]


def pneumo(*args, timeout=300, process=False):
    """``pneumo ARGS``: in this process (see ``helpers.run_pneumo_here``), or a real one with ``process=True``."""
    if process:
        return subprocess.run([*PNEUMO, *map(str, args)], capture_output=True, text=True, timeout=timeout)
    return run_pneumo_here(*args)


# --------------------------------------------------------------------------------- settings and paths
def test_command_line_paths_are_taken_from_the_current_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(config.OUTPUT_DIR_ENV, raising=False)
    settings = config.load_config("full", output_dir="relout", data_dir="mydata")
    assert settings["output_dir"] == str(tmp_path / "relout")
    assert settings["data_dir"] == str(tmp_path / "mydata")
    assert settings["model_path"] == str(tmp_path / "relout" / "model" / "pneumonia_cnn.keras")


def test_a_run_never_writes_the_committed_model_or_results(monkeypatch):
    monkeypatch.delenv(config.OUTPUT_DIR_ENV, raising=False)
    for profile in config.available_profiles():
        settings = config.load_config(profile)
        assert Path(settings["output_dir"]).is_relative_to(config.RUNS_DIR)
        assert Path(settings["model_path"]).is_relative_to(settings["output_dir"])
    assert pipeline.default_output_dir("full").parent == config.RUNS_DIR


def test_a_named_data_folder_is_the_data_in_every_profile(tmp_path):
    settings = config.load_config("smoke", data_dir=str(tmp_path / "typo"))
    assert settings["synthetic"] is False and settings["data_dir"] == str(tmp_path / "typo")


def test_notebook_parameters_pass_through_and_unknown_names_are_refused():
    declared = pipeline.notebook_parameters(pipeline.NOTEBOOKS, config.NOTEBOOKS_DIR)
    assert declared["04_gradcam.ipynb"] == {"method"}
    profile_keys = set(config.load_config("smoke"))
    settings, extra = pipeline.split_settings({"epochs": 2, "method": "gradcam++"}, profile_keys, declared)
    assert settings == {"epochs": 2} and extra == {"method": "gradcam++"}
    with pytest.raises(config.SettingsError, match="unknown setting"):
        pipeline.split_settings({"methd": "x"}, profile_keys, declared)


def test_recorded_paths_are_relative_to_the_project():
    assert config.portable_path(config.PROJECT_ROOT / "runs" / "x") == "runs/x"
    assert not config.portable_path(config.PROJECT_ROOT.parent / "shared").startswith("/")


def test_version_flag():
    result = pneumo("--version")
    assert result.returncode == 0 and result.stdout.startswith("pneumo ")


# ------------------------------------------------------------------------------ data checked up front
@pytest.mark.parametrize("profile", ["smoke", "full"])
def test_a_missing_data_folder_stops_before_any_kernel(tmp_path, profile):
    started = time.perf_counter()
    result = pneumo("run", "--profile", profile, "--data-dir", tmp_path / "typo", "--output-dir", tmp_path / "out")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]  # one line
    assert "typo: data directory does not exist" in result.stderr
    assert "KeyboardInterrupt" not in result.stderr and "==> running" not in result.stderr
    assert not (tmp_path / "typo").exists()  # no synthetic set written into a folder the user named
    assert time.perf_counter() - started < 60


# ------------------------------------------------------------------------------------ exclusive writes
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


# ------------------------------------------------------------------------------------------ the lock
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


def test_second_run_into_a_busy_folder_stops_and_ctrl_c_is_recorded(tmp_path):
    first = subprocess.Popen(
        [*PNEUMO, "run", "--profile", "smoke", "--output-dir", str(tmp_path), "--quiet", "-p", "epochs=30"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )  # its own process group, as a terminal's foreground job
    try:
        deadline = time.time() + 120
        while not (tmp_path / "executed" / "02_train.ipynb").exists() and time.time() < deadline:
            time.sleep(0.5)
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


# ----------------------------------------------------------------------------------------- promote
def _finished_run(tmp_path, tiny_model_path):
    return finished_run(tmp_path / "run", tiny_model_path, {"figures/roc.png": "png"})


def test_promote_copies_a_finished_run_and_refuses_an_unfinished_one(tmp_path, tiny_model_path):
    run = _finished_run(tmp_path, tiny_model_path)
    saved = tmp_path / "saved_models" / "pneumonia_cnn.keras"
    written = pipeline.promote(run, saved_model=saved, results_dir=tmp_path / "results")
    assert saved.read_bytes() == tiny_model_path.read_bytes() and saved.with_suffix(".json").is_file()
    assert (tmp_path / "results" / "figures" / "roc.png").read_bytes() == b"png"
    assert len(written) == 5  # model, card, gate, figure, summary
    (run / pipeline.SUMMARY_NAME).write_text(json.dumps({"status": "interrupted"}))
    with pytest.raises(config.SettingsError, match="did not finish"):
        pipeline.promote(run, saved_model=saved, results_dir=tmp_path / "results")


# ------------------------------------------------------------------------------------- bad input
def test_the_unreadable_share_counts_against_the_whole_data_set(tmp_path):
    import numpy as np

    from pneumo_utils.images import Preprocessing, TooManyUnreadableError, load_images

    good = tmp_path / "good.png"
    import cv2

    cv2.imwrite(str(good), np.full((32, 32), 120, np.uint8))
    bad = tmp_path / "bad.jpeg"
    bad.write_bytes(b"\xff\xd8\xff not really a jpeg")
    small_split = [good] * 20 + [bad]  # 1 of 21 (5%) in this split
    with pytest.raises(TooManyUnreadableError):
        load_images(small_split, Preprocessing(image_size=32))
    images, mask, errors = load_images(small_split, Preprocessing(image_size=32), population=401)  # 1 of 401
    assert len(images) == 20 and not mask[-1] and len(errors) == 1


def test_index_lists_unreadable_files_and_label_conflicts(tmp_path):
    from pneumo_utils.synthetic import write_synthetic_dataset

    root = write_synthetic_dataset(tmp_path / "data", images_per_class=10, image_size=48, seed=0)
    (root / "train" / "NORMAL" / "IM-9999-0001.jpeg").write_bytes(b"\xff\xd8\xff broken")
    normal = sorted((root / "train" / "NORMAL").glob("IM-*.jpeg"))[0]
    (root / "train" / "PNEUMONIA" / "person9999_virus_1.jpeg").write_bytes(normal.read_bytes())
    result = pneumo("index", "--data-dir", root)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert any("IM-9999-0001.jpeg" in line for line in report["unreadable"])
    assert report["label_conflicts"] and "NORMAL,PNEUMONIA" in report["label_conflicts"][0]["labels"]
    assert "unreadable: " in result.stderr and "label conflict: " in result.stderr


def _image(tmp_path):
    import cv2
    import numpy as np

    path = tmp_path / "x.png"
    cv2.imwrite(str(path), np.random.default_rng(0).integers(0, 255, (40, 40), dtype=np.uint8))
    return path


@pytest.mark.parametrize(
    "card",
    [
        {},
        [],
        {"threshold": {"value": 0.5}},
        {"preprocessing": {"image_size": 32}},
        {"preprocessing": {"image_size": 32}, "threshold": {"value": "high"}},
    ],
)
def test_malformed_cards_are_one_line_and_exit_2(tmp_path, tiny_model_path, card):
    model_path = tmp_path / "m.keras"
    model_path.write_bytes(tiny_model_path.read_bytes())
    model_path.with_suffix(".json").write_text(json.dumps(card))
    result = pneumo("predict", _image(tmp_path), "--model", model_path)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "m.json: model card" in result.stderr


@pytest.mark.parametrize("kind", ["three_channels", "two_outputs", "unknown_layer"])
def test_odd_models_are_one_line_and_exit_2(tmp_path, kind):
    import zipfile

    import keras
    from helpers import minimal_card

    from pneumo_utils import model

    inputs = keras.Input((32, 32, 3 if kind == "three_channels" else 1))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(2, 3)(inputs))
    network = keras.Model(inputs, keras.layers.Dense(2 if kind == "two_outputs" else 1, activation="sigmoid")(x))
    path = model.save_model(network, tmp_path / "odd.keras", minimal_card(32))
    if kind == "unknown_layer":  # rename a layer class inside the archive to one Keras does not know
        with zipfile.ZipFile(path) as archive:
            files = {name: archive.read(name) for name in archive.namelist()}
        files["config.json"] = files["config.json"].replace(b'"Conv2D"', b'"NoSuchLayer"')
        with zipfile.ZipFile(path, "w") as archive:
            for name, payload in files.items():
                archive.writestr(name, payload)
    result = pneumo("predict", _image(tmp_path), "--model", path)
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "odd.keras" in result.stderr
    assert "\x1b[" not in result.stderr


def test_exif_orientation_is_honoured(tmp_path):
    import numpy as np
    from PIL import Image

    from pneumo_utils.images import Preprocessing, read_image

    upright = np.zeros((60, 40), np.uint8)
    upright[:10] = 255  # bright band at the top
    Image.fromarray(upright).save(tmp_path / "upright.jpeg", quality=95)
    stored = np.rot90(upright, k=1)  # stored turned left; EXIF 6 says: turn right to view
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.ascontiguousarray(stored)).save(tmp_path / "turned.jpeg", quality=95, exif=exif)
    size = Preprocessing(image_size=40)
    a, b = read_image(tmp_path / "upright.jpeg", size), read_image(tmp_path / "turned.jpeg", size)
    assert np.abs(a.astype(int) - b.astype(int)).mean() < 3


def test_tiff_and_webp_are_read_by_name_and_in_folders(tmp_path):
    import cv2
    import numpy as np

    from pneumo_utils import predict
    from pneumo_utils.images import Preprocessing, read_image

    picture = np.random.default_rng(0).integers(0, 255, (40, 40), dtype=np.uint8)
    for name in ("a.tiff", "b.tif", "c.webp"):
        cv2.imwrite(
            str(tmp_path / "folder" / name) if (tmp_path / "folder").mkdir(exist_ok=True) is None else "", picture
        )
        assert read_image(tmp_path / "folder" / name, Preprocessing(image_size=32)).shape == (32, 32)
    files, problems = predict.collect_inputs([tmp_path / "folder"])
    assert sorted(path.name for path in files) == ["a.tiff", "b.tif", "c.webp"] and not problems


def test_a_fifo_is_not_a_regular_file(tmp_path):
    from pneumo_utils.images import ImageReadError, Preprocessing, read_image

    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    with pytest.raises(ImageReadError, match="not a regular file"):
        read_image(fifo, Preprocessing(image_size=32))


def test_two_concurrent_predict_commands_one_writes_the_other_refuses(tmp_path, tiny_model_path, synthetic_root):
    images = sorted((synthetic_root / "test").rglob("*.jpeg"))[:4]
    output = tmp_path / "same.csv"
    command = [*PNEUMO, "predict", *map(str, images), "--model", str(tiny_model_path), "--output", str(output)]
    processes = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in "ab"]
    results = [(process.wait(timeout=300), process.stderr.read()) for process in processes]
    wrote = [stderr for code, stderr in results if code == 0 and f"wrote {output}" in stderr]
    refused = [stderr for code, stderr in results if code != 0 and "already exists" in stderr]
    assert len(wrote) == 1 and len(refused) == 1, results
    assert output.read_text().startswith("path,probability,label,ood_score,in_distribution,error")
    assert not list(tmp_path.glob(".*.tmp"))


# ------------------------------------------------------------------------------------ typed settings
def test_settings_are_typed_frozen_and_checked_once():
    import dataclasses

    settings = config.load_config("smoke", epochs=3)
    assert isinstance(settings, config.Settings) and settings.epochs == 3 and settings["epochs"] == 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.epochs = 4
    assert settings.replace(seed=7).seed == 7 and settings.seed == config.load_config("smoke").seed
    for bad, message in (
        ({"epochs": "many"}, "epochs must be int"),
        ({"val_fraction": 0.7}, "val_fraction"),
        ({"optimizer": "sgd"}, "optimizer must be one of"),
        ({"filters": [8, -1]}, "filters"),
        ({"dropout": True}, "dropout must be float"),
    ):
        with pytest.raises(config.SettingsError, match=message):
            config.load_config("smoke", **bad)


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
