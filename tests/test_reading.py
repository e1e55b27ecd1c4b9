"""Issue 29, classes 3 and 4: a model archive, a card, a gate, a profile or a ``-p`` value cannot exhaust the
machine, hang it, or end in a traceback. Each is tried with several hostile instances: sizes are refused
before anything is read, a FIFO or a device is named as what it is (never opened), deep nesting and YAML
aliases are one line, and a gate that matches its hash but is wrong inside is refused."""

import hashlib
import io
import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from helpers import PNEUMO

from pneumo_utils import config, model, reading
from pneumo_utils.cli.common import UsageError, parse_overrides
from pneumo_utils.model import ood


def _one_line(error) -> str:
    text = str(error.value)
    assert "\n" not in text and "Traceback" not in text, text
    return text


# ------------------------------------------------------------------------------------- what a path is
@pytest.mark.parametrize("kind", ["folder", "fifo", "device", "missing"])
def test_a_model_path_that_is_not_a_file_says_what_it_is(kind, tmp_path):
    path = {"folder": tmp_path / "m.keras", "fifo": tmp_path / "m.keras", "device": "/dev/zero"}.get(
        kind, tmp_path / "none.keras"
    )
    if kind == "folder":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    expected = {
        "folder": "this is a folder",
        "fifo": "this is a named pipe (FIFO)",
        "device": "this is a character device",
        "missing": "model file does not exist",
    }[kind]
    with pytest.raises(model.ModelLoadError) as error:
        model.load_model(path)
    assert expected in _one_line(error) and str(path) in str(error.value)


@pytest.mark.parametrize("card_kind", ["fifo", "sparse", "deep", "not-utf8", "folder"])
def test_a_hostile_card_is_refused_before_it_is_read(card_kind, tmp_path, tiny_model_path):
    path = tmp_path / "m.keras"
    path.write_bytes(tiny_model_path.read_bytes())
    card = model.card_path(path)
    if card_kind == "fifo":  # reading it would wait forever for a writer
        os.mkfifo(card)
    elif card_kind == "sparse":  # 20 GB on paper, nothing on disk
        with open(card, "wb") as handle:
            handle.truncate(20 * 2**30)
    elif card_kind == "deep":
        card.write_text("[" * 100_000 + "]" * 100_000)
    elif card_kind == "not-utf8":
        card.write_bytes(b'{"name": "\xff\xfe"}')
    else:
        card.mkdir()
    with pytest.raises(model.ModelLoadError) as error:
        model.load_model(path)
    text = _one_line(error)
    assert text.startswith(str(card)), text
    assert {
        "fifo": "named pipe",
        "sparse": "more than the 4.0 MB allowed",
        "deep": "nested too deeply",
        "not-utf8": "not UTF-8",
        "folder": "a folder",
    }[card_kind] in text


def _keras_like(path, members: dict[str, bytes]):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, payload in members.items():
            archive.writestr(name, payload)
    model.card_path(path).write_text(json.dumps({"preprocessing": {"image_size": 32}, "threshold": {"value": 0.5}}))
    return path


def test_a_model_archive_that_inflates_past_its_bounds_is_refused_unread(tmp_path):
    # a 40 MB config.json of spaces compresses to about 40 KB; Keras would read it whole into memory
    bomb = _keras_like(tmp_path / "bomb.keras", {"metadata.json": b"{}", "config.json": b" " * (40 * 2**20)})
    assert bomb.stat().st_size < 200_000
    with pytest.raises(model.ModelLoadError) as error:
        model.load_model(bomb)
    assert "config.json would inflate to 40.0 MB, more than the 32.0 MB allowed" in _one_line(error)
    # every member together, with a small bound: the same check
    small = _keras_like(tmp_path / "many.keras", {f"w{i}.bin": b"\0" * 2**20 for i in range(3)})
    with pytest.raises(reading.FileRefused, match="would inflate to 3.0 MB, more than the 2.0 MB allowed"):
        reading.check_archive(small, "the model archive", inflated_limit=2 * 2**20)
    with pytest.raises(reading.FileRefused, match="not a readable zip archive"):
        reading.check_archive(io.BytesIO(b"PK\x03\x04 broken"), "the gate", name="g.npz")


def test_reads_stop_at_their_limit_even_when_the_file_grows(tmp_path):
    path = tmp_path / "card.json"
    path.write_bytes(b"x" * 100)
    assert reading.read_bytes(path, 100, "the card") == b"x" * 100
    with pytest.raises(reading.FileRefused, match="100 bytes, more than the 99 bytes allowed"):
        reading.read_bytes(path, 99, "the card")


# ------------------------------------------------------------------------------------- the gate
def _gate(tmp_path, **arrays):
    """A model path whose gate file holds ``arrays`` over a valid gate's, and a card naming it by hash."""
    dimension = ood.features(np.zeros((1, 64, 64), np.float32)).shape[1]
    valid = {
        "mean": np.zeros(dimension),
        "precision": np.eye(dimension, dtype=np.float32),
        "threshold": np.float64(10.0),
        "image_size": np.int64(64),
        "scale": np.ones(dimension),
    }
    stored = {key: value for key, value in {**valid, **arrays}.items() if value is not None}
    buffer = io.BytesIO()
    np.savez(buffer, **stored)
    model_path = tmp_path / "m.keras"
    payload = buffer.getvalue() if "garbage" not in arrays else b"garbage, not an npz"
    ood.detector_path(model_path).write_bytes(payload)
    return model_path, {"ood": {"file": "m.ood.npz", "sha256": hashlib.sha256(payload).hexdigest()}}


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({}, None),
        ({"threshold": np.float64("nan")}, "its threshold is nan"),
        ({"threshold": np.float64(-1)}, "its threshold is -1.0"),
        ({"mean": np.zeros(7)}, "its arrays have shapes (7,)"),
        ({"precision": np.zeros((3, 3, 3))}, "its arrays have shapes"),
        ({"scale": None}, "it has no 'scale' array"),
        ({"mean": np.array(["a", "b"])}, "holds <U1 values, not numbers"),
        ({"mean": np.array([object()], dtype=object)}, "Object arrays cannot be loaded"),
        ({"threshold": np.array([1.0, 2.0])}, "must be single numbers"),
        ({"image_size": np.int64(10**9)}, "its image size is 1e+09"),
        ({"garbage": True}, "not a readable zip archive"),
    ],
)
def test_a_gate_that_matches_its_hash_but_is_wrong_inside_is_one_line(arrays, message, tmp_path):
    model_path, card = _gate(tmp_path, **arrays)
    if message is None:
        assert ood.Detector.load(model_path, card).threshold == 10.0
        return
    with pytest.raises(ood.OodError) as error:
        ood.Detector.load(model_path, card)
    assert message in _one_line(error)


def test_a_gate_that_is_a_fifo_or_huge_is_refused_without_waiting(tmp_path):
    model_path = tmp_path / "m.keras"
    os.mkfifo(ood.detector_path(model_path))
    card = {"ood": {"file": "m.ood.npz", "sha256": "0" * 64}}
    with pytest.raises(ood.OodError, match="named pipe"):
        ood.Detector.load(model_path, card)
    os.unlink(ood.detector_path(model_path))
    with open(ood.detector_path(model_path), "wb") as handle:
        handle.truncate(20 * 2**30)
    with pytest.raises(ood.OodError, match="more than the 64.0 MB allowed"):
        ood.Detector.load(model_path, card)


# ------------------------------------------------------------------------------------- profiles and -p
BOMB = (
    "["
    + ",".join(
        ["&a [x,x,x,x,x,x,x,x,x]"]
        + [f"&{c} [*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p}]" for p, c in zip("abcdefgh", "bcdefghi", strict=True)]
    )
    + "]"
)  # noqa: E501


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (BOMB, "its aliases (*name) expand to more than 100,000 values"),
        ("*a", "found undefined alias"),
        ("&a [1, *a]", "a value that contains itself"),
        ("{epochs: 3, epochs: 99}", "the key 'epochs' appears twice"),
        ("[" * 50_000, "nested too deeply"),
        ("x" * 70_000, "more than the 65,536 allowed"),
        ("[8, 16", "the value is not valid YAML"),
    ],
)
def test_a_hostile_p_value_is_one_line(value, message):
    assert len(BOMB) < 700
    with pytest.raises(UsageError) as error:
        parse_overrides([f"filters={value}"])
    assert message in _one_line(error)


def test_a_hostile_p_value_stops_the_command_line_in_one_line(tmp_path):
    result = subprocess.run(
        [*PNEUMO, "run", "--profile", "smoke", "--output-dir", tmp_path / "run", "-p", f"filters={BOMB}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "expand to more than 100,000 values" in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "the profile is empty"),
        (b"# only a comment\n", "the profile is empty"),
        (b"epochs: 3\nepochs: 99\n", "the key 'epochs' appears twice (line 2, column 1)"),
        (b"epochs: \xff\n", "not UTF-8 text"),
        (b"- 1\n- 2\n", "must be a mapping"),
        (
            b"a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
            b"c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
            b"e: [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\n",
            "expand to more than 100,000 values",
        ),
    ],
)
def test_a_broken_profile_is_one_line_naming_it(content, message, tmp_path, monkeypatch):
    (tmp_path / "mine.yaml").write_bytes(content)
    monkeypatch.setattr(config, "PROFILES_DIR", tmp_path)  # a profile folder of the user's own
    with pytest.raises(config.SettingsError) as error:
        config.load_profile("mine")
    text = _one_line(error)
    assert text.startswith(str(tmp_path / "mine.yaml")) and message in text, text


def test_the_shipped_profiles_still_load():
    for name in config.available_profiles():
        assert isinstance(config.load_profile(name), dict)


def test_a_fifo_profile_does_not_hang(tmp_path):
    os.mkfifo(tmp_path / "mine.yaml")
    code = (
        "import sys; from pneumo_utils import config; config.PROFILES_DIR = __import__('pathlib').Path(sys.argv[1])\n"
        "try:\n    config.load_profile('mine')\nexcept config.SettingsError as error:\n    print(error)"
    )
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert "named pipe (FIFO)" in result.stdout, result.stderr


# ------------------------------------------------------------------------------------- models it cannot explain
def _dense_only(tmp_path, with_logit: bool):
    import keras
    from helpers import minimal_card

    inputs = keras.Input((32, 32, 1))
    flat = keras.layers.Flatten()(inputs)
    score = keras.layers.Dense(1, name="logit" if with_logit else "score")(flat)
    network = keras.Model(inputs, keras.layers.Activation("sigmoid")(score))
    return model.save_model(network, tmp_path / "dense.keras", minimal_card(32))


def test_gradcam_of_a_model_without_a_convolution_is_one_line(tmp_path):
    from helpers import write_png

    path = _dense_only(tmp_path, with_logit=True)
    image = write_png(tmp_path / "x.png", np.random.default_rng(0).integers(0, 255, (40, 40), dtype=np.uint8))
    result = subprocess.run(
        [*PNEUMO, "gradcam", image, "--model", path, "--out", tmp_path / "maps"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr
    (line,) = [line for line in result.stderr.strip().splitlines() if line.startswith("error:")]
    assert "Traceback" not in result.stderr and str(path) in line and "has no convolution layer" in line, line


def test_calibration_of_a_model_without_a_logit_is_one_line(tmp_path):
    from pneumo_utils.model import calibrate

    path = _dense_only(tmp_path, with_logit=False)
    network, _ = model.load_model(path)
    with pytest.raises(model.ModelLoadError) as error:
        calibrate.logit_model(network)
    assert str(path) in _one_line(error) and "no layer named 'logit'" in str(error.value)
