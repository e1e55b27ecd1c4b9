"""Issue 28: one model for every page of the explorer. The service (``pneumo_utils.explore_service``) holds the
session's smoke-run model; real clients connect over loopback: a page's kernel (a real subprocess) builds the
three panels without importing TensorFlow, maps are shared between pages, a bad request is one line for that
page only, and a wrong key gets nothing. ``pneumo bench explore`` runs small in real Chromium."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from pneumo_utils import explore, explore_service
from pneumo_utils.explore_service import ModelService, RemoteExplorer, ServiceError
from pneumo_utils.runs.report import find_chromium


@pytest.fixture(scope="module")
def service(smoke_run):
    served = ModelService(explore.resolve(smoke_run))
    address, key = served.start()
    served.warm_up().join(timeout=120)
    yield served, address, key
    served.close()


def test_a_page_kernel_builds_the_panels_from_the_service_without_tensorflow(service):
    served, address, key = service
    page = (
        "import json, sys\n"
        "from pneumo_utils import explore_app\n"
        "app = explore_app.build_app()\n"
        "app.threshold_slider.value = 0.0\n"
        "print(json.dumps({'tensorflow': 'tensorflow' in sys.modules, 'keras': 'keras' in sys.modules,\n"
        "  'sklearn': 'sklearn' in sys.modules, 'matplotlib': 'matplotlib' in sys.modules,\n"
        "  'verdict': app.verdict.value, 'lab': app.lab_readout.value, 'band': app.band_readout.value,\n"
        "  'roc': app.roc_image.value[:4].hex(), 'heatmap': app.heatmap_image.value[:4].hex()}))\n"
    )
    environment = {**os.environ, explore_service.ADDRESS_ENV: address, explore_service.KEY_ENV: key}
    done = subprocess.run(
        [sys.executable, "-c", page], env=environment, capture_output=True, text=True, timeout=120, check=True
    )
    shown = json.loads(done.stdout.strip().splitlines()[-1])
    assert not shown["tensorflow"] and not shown["keras"]  # the heavy part stays in the service
    assert not shown["sklearn"] and not shown["matplotlib"]
    assert shown["roc"] == shown["heatmap"] == "89504e47"  # PNG
    assert "P(pneumonia)" in shown["verdict"] and "sensitivity" in shown["lab"] and "pneumo-band" in shown["band"]
    assert served.stats()["model_loads"] == 1


def test_pages_share_the_model_and_its_maps(service, smoke_run):
    served, address, key = service
    first, second = RemoteExplorer(address, key), RemoteExplorer(address, key)
    local = explore.Explorer(explore.resolve(smoke_run).model_path)
    path = first.session.scores["validation"]["path"].iloc[-1]
    image = first.read(path)
    before = served.stats()
    one, two = first.explain(image, "gradcam"), second.explain(image, "gradcam")
    after = served.stats()
    assert after["explain_computed"] - before["explain_computed"] == 1  # the second page got the kept map
    assert after["explain_cached"] - before["explain_cached"] == 1
    np.testing.assert_array_equal(one["map"], two["map"])
    np.testing.assert_array_equal(one["overlay"], two["overlay"])
    alone = local.explain(image, "gradcam")  # the service answers what the page would compute itself
    assert one["probability"] == pytest.approx(alone["probability"], abs=1e-6)
    np.testing.assert_allclose(one["map"], alone["map"], atol=1e-5)
    assert one["label"] == alone["label"] and one["in_distribution"] == alone["in_distribution"]
    lighter = first.explain(image, "gradcam", opacity=0.9)  # opacity is the page's own: no new model call
    assert served.stats()["explain_computed"] == after["explain_computed"]
    assert not np.array_equal(lighter["overlay"], one["overlay"])


@pytest.mark.parametrize(
    "request_, expected",
    [
        (("explain", {"image": np.zeros((5, 5), np.uint8)}), "an image for this model is"),
        (("explain", {"image": np.zeros((5, 5), np.float32)}), "2-D uint8 array"),
        (("explain", {"image": "not an image"}), "2-D uint8 array"),
        (("explain", {"image": None, "method": "lime"}), "2-D uint8 array"),
        (("explain", {"image": np.zeros((5, 5), np.uint8), "unknown": 1}), "bad request"),
        (("shutdown", {}), "bad request"),
        (("info", "not a dict"), "bad request"),
        ("a string", "bad request"),
    ],
)
def test_a_bad_request_is_one_line_for_that_page_and_the_service_keeps_serving(service, request_, expected):
    served, address, key = service
    status, message = served.answer(request_)
    assert status == "error" and expected in message and "\n" not in message
    client = RemoteExplorer(address, key)  # the service still answers
    size = client.preprocessing.image_size
    with pytest.raises(ServiceError, match="layer must be one of"):
        client.explain(np.zeros((size, size), np.uint8), layer="no_such_layer")
    assert client.explain(np.full((size, size), 128, np.uint8))["probability"] >= 0


def test_a_wrong_key_or_a_stopped_service_is_one_line(service, smoke_run):
    _, address, _ = service
    with pytest.raises(ServiceError, match="cannot be reached") as refused:
        RemoteExplorer(address, "00" * 32)
    assert "\n" not in str(refused.value)
    alone = ModelService(explore.resolve(smoke_run))
    alone_address, alone_key = alone.start()
    client = RemoteExplorer(alone_address, alone_key)
    alone.close()
    client._connection.close()  # what a stopped server leaves a page with
    with pytest.raises(ServiceError, match="stopped"):
        client.explain(np.zeros((4, 4), np.uint8))


@pytest.mark.slow
@pytest.mark.skipif(find_chromium() is None, reason="no Chromium here (.ci/run installs Debian's chromium)")
def test_bench_explore_with_three_pages_on_a_pool_loads_the_model_once(smoke_run, tmp_path):
    """Three pages opened at once on a server with three kernels preheated, as a class is served (pages
    without a pool are the browser test's)."""
    output = tmp_path / "bench_explore.json"
    done = subprocess.run(
        [sys.executable, "-m", "pneumo_utils.cli", "bench", "explore", "--pages", "3", "--run", str(smoke_run)]
        + ["--pool", "3", "--output", str(output)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(output.read_text())
    assert result["pages_ready"] == 3 and not result["failures"], result
    # three kernels taken from the pool, and at most one more to refill it (the bound is pool + 1 here)
    assert result["kernels_with_tensorflow"] == 0 and result["kernels_at_end"] in (3, 4)
    assert result["model_service"]["model_loads"] == 1 and result["model_service"]["connections"] >= 3
    assert result["pool"] == 3 and result["pool_ready_s"] >= result["server_listening_s"]
    assert result["time_to_html_s"]["max"] <= result["time_to_ready_s"]["max"]
    assert result["time_to_ready_s"]["max"] is not None and result["heatmap_s"]["median"] is not None
    assert result["peak_server_pss_mb"] > 0


def test_the_bench_keeps_the_logs_problems_without_this_machines_folders():
    from pneumo_utils.config import PROJECT_ROOT
    from pneumo_utils.runs.bench_explore import log_problems

    log = "\n".join(
        [
            f"--- 2026-12-03 16:36:34 {sys.executable} -m voila {PROJECT_ROOT}/notebooks/05_explore.ipynb",
            "[Voila] Kernel started: 0123",
            "[Voila] Pool not refilled: 37 kernels held (at most 37)",
            f"[Voila] ERROR | Traceback in {PROJECT_ROOT}/pneumo_utils/explore.py",
        ]
    )
    assert log_problems(log) == [
        "[Voila] ERROR | Traceback in ./pneumo_utils/explore.py",
        "[Voila] Pool not refilled: 37 kernels held (at most 37)",
    ]
