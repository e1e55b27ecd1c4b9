"""ImageNet weights the Keras way: ``$PNEUMO_WEIGHTS_DIR``, then Keras's cache, then a download with the pinned
SHA-256; offline and nowhere, one line naming the file, its SHA-256, its address and where it may go."""

import functools
import hashlib
import http.server
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from helpers import run_pneumo_here

from pneumo_utils import config
from pneumo_utils.model import weights

CLOSED = "http://127.0.0.1:1"  # nothing listens: a download fails at once, as offline


@pytest.fixture
def no_weights_anywhere(tmp_path, monkeypatch):
    """No PNEUMO_WEIGHTS_DIR, an empty Keras home, and a download address that refuses at once."""
    monkeypatch.delenv(weights.WEIGHTS_DIR_ENV, raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras-home"))
    monkeypatch.setenv(weights.URL_ENV, CLOSED)
    return tmp_path / "keras-home" / "models"


def _spec(payload: bytes) -> weights.ImagenetFile:
    return weights.ImagenetFile("fake", 1.0, "fake_no_top.h5", hashlib.sha256(payload).hexdigest(), "fake")


def test_the_file_is_found_in_the_weights_folder_then_in_the_keras_cache(tmp_path, no_weights_anywhere):
    spec = _spec(b"official bytes")
    no_weights_anywhere.mkdir(parents=True)
    (no_weights_anywhere / spec.file_name).write_bytes(b"official bytes")
    assert weights.fetch_imagenet(spec) == no_weights_anywhere / spec.file_name
    folder = tmp_path / "classroom"
    folder.mkdir()
    (folder / spec.file_name).write_bytes(b"official bytes")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(weights.WEIGHTS_DIR_ENV, str(folder))
        assert weights.fetch_imagenet(spec) == folder / spec.file_name  # the weights folder comes first
        (folder / spec.file_name).write_bytes(b"other bytes")
        with pytest.raises(weights.WeightsNotFound, match="SHA-256 is .* not Keras's"):
            weights.fetch_imagenet(spec)


def test_offline_and_nowhere_is_one_line_with_the_file_its_hash_its_address_and_the_folders(no_weights_anywhere):
    spec = weights.pinned_imagenet("mobilenetv2", 0.35)
    with pytest.raises(weights.WeightsNotFound) as error:
        weights.fetch_imagenet(spec)
    message = str(error.value)
    assert "\n" not in message
    for part in (spec.file_name, spec.sha256, spec.official_url, str(no_weights_anywhere), "$PNEUMO_WEIGHTS_DIR"):
        assert part in message, part


def test_a_download_lands_in_the_keras_cache_with_its_hash_checked(tmp_path, no_weights_anywhere, monkeypatch):
    served = tmp_path / "served" / "fake"
    served.mkdir(parents=True)
    (served / "fake_no_top.h5").write_bytes(b"official bytes")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served.parent))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv(weights.URL_ENV, f"http://127.0.0.1:{server.server_address[1]}")
        path = weights.fetch_imagenet(_spec(b"official bytes"))
        assert path == no_weights_anywhere / "fake_no_top.h5" and path.read_bytes() == b"official bytes"
        with pytest.raises(weights.WeightsNotFound, match="could not be downloaded"):
            weights.fetch_imagenet(weights.ImagenetFile("fake", 1.0, "absent_no_top.h5", "0" * 64, "fake"))
    finally:
        server.shutdown()
        server.server_close()


def test_p_weights_sets_every_pretrained_member_and_the_card_records_no_path(tmp_path):
    file = tmp_path / "mine.h5"
    file.write_bytes(b"x")
    settings = config.load_config("full", weights=str(file), data_dir=str(tmp_path))
    pretrained = [entry for entry in settings.members if entry.get("backbone")]
    assert pretrained and all(entry["weights"] == str(file) for entry in pretrained)
    assert all("weights" not in entry for entry in settings.members if not entry.get("backbone"))
    recorded = config.recorded_settings(settings)
    assert recorded["weights"] == "mine.h5"
    assert all(entry.get("weights") in (None, "mine.h5") for entry in recorded["members"])
    # the profile as committed asks for Keras's official file, not a path on some machine
    assert all(entry["weights"] == "imagenet" for entry in config.load_config("full").members if entry.get("backbone"))


@pytest.mark.slow
def test_pneumo_run_full_offline_without_the_file_is_one_line_after_the_data_check(
    tmp_path, no_weights_anywhere, synthetic_root
):
    missing = run_pneumo_here(
        "run", "--profile", "full", "--data-dir", tmp_path / "nowhere", "--output-dir", tmp_path / "a"
    )
    assert missing.returncode == 2 and "nowhere" in missing.stderr and "ImageNet" not in missing.stderr
    result = run_pneumo_here("run", "--profile", "full", "--data-dir", synthetic_root, "--output-dir", tmp_path / "b")
    assert result.returncode == 2
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert "member 3:" in line and "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5" in line
    assert not (tmp_path / "b" / "executed").exists()  # before any kernel


SHARED_WEIGHTS = Path(__file__).resolve().parents[2] / "shared" / "weights"


@pytest.mark.skipif(
    not (SHARED_WEIGHTS / weights.PINNED[("mobilenetv2", 0.35)].file_name).is_file(),
    reason="no copy of Keras's MobileNetV2 file beside the checkout (../shared/weights) to put in a Keras cache",
)
@pytest.mark.slow
def test_imagenet_from_the_keras_cache_trains_and_the_card_names_the_file(tmp_path, no_weights_anywhere):
    from pneumo_utils.model import train
    from pneumo_utils.runs import pipeline

    spec = weights.pinned_imagenet("mobilenetv2", 0.35)
    no_weights_anywhere.mkdir(parents=True)
    shutil.copy(SHARED_WEIGHTS / spec.file_name, no_weights_anywhere / spec.file_name)
    settings = config.load_config("smoke", backbone="mobilenetv2", alpha=0.35, weights="imagenet", image_size=64)
    pipeline.check_data(settings)  # found in the cache: no download, no error
    network = train.build_from_config(settings)
    backbone = next(layer for layer in network.layers if layer.name.startswith("mobilenet"))
    assert np.abs(backbone.get_layer("Conv1").get_weights()[0]).mean() > 0.05  # ImageNet filters, not random
    (entry,) = train.pretrained_weights(settings)
    assert entry["sha256"] == spec.sha256 and spec.file_name in entry["weights"] and "/" not in entry["weights"]
