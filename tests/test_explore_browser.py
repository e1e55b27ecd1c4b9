"""Issue 11: the explorer in a real browser. ``pneumo explore`` serves notebook 05 with Voilà on a free
local port; Debian's headless Chromium, driven by Playwright, loads it, moves the threshold slider, picks an
image and uploads a corrupt file. The server is stopped by the test.

The time each interaction takes to show on the page is measured and written to ``timings.json`` in the
test's temporary folder (and to ``$PNEUMO_EXPLORE_TIMINGS`` when set); it is reported, not asserted.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import free_port

from pneumo_utils.runs import bench_explore
from pneumo_utils.runs.report import CHROMIUM_FLAGS, find_chromium

CHROMIUM = find_chromium()
FLAGS = list(CHROMIUM_FLAGS)

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium here (.ci/run installs Debian's chromium)")


@pytest.fixture
def explorer_url(smoke_run, tmp_path):
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pneumo_utils.cli",
            "explore",
            "--run",
            str(smoke_run),
            "--port",
            str(port),
            "--no-browser",
        ],
        stdout=subprocess.PIPE,
        stderr=(tmp_path / "voila.log").open("w"),
        text=True,
        start_new_session=True,
    )
    try:
        first_line = server.stdout.readline()
        assert f"http://127.0.0.1:{port}/" in first_line, first_line
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.25)
        yield f"http://127.0.0.1:{port}/"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


# Every drop-down menu of the page whose longest entry is wider than the menu shows (its text measured in the
# menu's own font, plus room for the arrow): what a student would see cut ("...split of tr").
MENUS_CUT = """() => {
  const context = document.createElement('canvas').getContext('2d');
  return Array.from(document.querySelectorAll('select')).flatMap(select => {
    context.font = getComputedStyle(select).font;
    const widest = Math.max(0, ...Array.from(select.options).map(option => context.measureText(option.text).width));
    const name = select.closest('.widget-dropdown').innerText;
    return widest + 28 > select.clientWidth ? [[name, widest, select.clientWidth]] : [];
  });
}"""


def _changed(page, selector: str, before: str, timeout: float = 30.0, attribute: str | None = None) -> float:
    """Seconds until the element's text (or attribute) differs from ``before``."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        element = page.query_selector(selector)
        now = element and (element.get_attribute(attribute) if attribute else element.inner_text())
        if now and now != before:
            return time.perf_counter() - started
        page.wait_for_timeout(10)
    raise AssertionError(f"{selector} did not change within {timeout} s")


def _upload_and_read_the_error(page, path, timeout: int) -> str:
    """Upload ``path`` with the page's upload button and return the error line that names it."""
    with page.expect_file_chooser() as chooser:
        page.click("button.widget-upload")
    chooser.value.set_files(str(path))
    name = path.name
    page.wait_for_function(
        f"Array.from(document.querySelectorAll('.pneumo-error')).some(e => e.innerText.includes('{name}'))",
        timeout=timeout,
    )
    texts = page.eval_on_selector_all(".pneumo-error", "es => es.map(e => e.innerText)")
    return next(text for text in texts if name in text)


@pytest.mark.slow
def test_the_explorer_in_headless_chromium(explorer_url, tmp_path):
    from playwright.sync_api import sync_playwright

    timings = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1300, "height": 1800})
            requests = []
            page.on("request", lambda request: requests.append(request.url))
            started = time.perf_counter()
            page.goto(explorer_url, timeout=120_000)
            page.wait_for_selector(".pneumo-sensitivity", timeout=180_000)
            page.wait_for_selector(".pneumo-heatmap[src^='blob:'], .pneumo-heatmap img[src^='blob:']", timeout=60_000)
            timings["page_ready_s"] = time.perf_counter() - started
            assert "Threshold lab" in page.inner_text("body")
            assert "def " not in page.inner_text("body")  # Voilà shows outputs and prose, no code
            cut = page.evaluate(MENUS_CUT)
            assert not cut, f"menus too narrow for their longest entry: {cut}"

            # 1. the threshold slider, dragged to its left end: every image is called pneumonia
            before = (page.inner_text(".pneumo-sensitivity"), page.inner_text(".pneumo-specificity"))
            handle = page.query_selector(".pneumo-threshold-slider .noUi-handle").bounding_box()
            track = page.query_selector(".pneumo-threshold-slider .noUi-target").bounding_box()
            middle = handle["y"] + handle["height"] / 2
            page.mouse.move(handle["x"] + handle["width"] / 2, middle)
            page.mouse.down()
            lab = page.inner_text(".pneumo-lab")
            page.mouse.move(track["x"] - 20, middle, steps=4)
            page.mouse.up()
            timings["threshold_update_s"] = _changed(page, ".pneumo-lab", lab)
            page.wait_for_function("document.querySelector('.pneumo-threshold').innerText === '0.000'")
            after = (page.inner_text(".pneumo-sensitivity"), page.inner_text(".pneumo-specificity"))
            assert after == ("1.000", "0.000") and after != before, (before, after)

            # 2. another image: a new heatmap
            heatmap = ".pneumo-heatmap"
            source = page.get_attribute(heatmap, "src")
            options = page.eval_on_selector(
                ".pneumo-image-choice select", "select => Array.from(select.options).map(option => option.value)"
            )
            assert len(options) > 1
            page.select_option(".pneumo-image-choice select", index=len(options) - 1)
            timings["heatmap_after_choice_s"] = _changed(page, heatmap, source, attribute="src")
            assert page.get_attribute(heatmap, "src").startswith("blob:")

            # 3. a corrupt upload: the command line's one-line error
            corrupt = tmp_path / "corrupt.jpg"
            corrupt.write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")
            with page.expect_file_chooser() as chooser:
                page.click("button.widget-upload")
            chooser.value.set_files(str(corrupt))
            page.wait_for_selector(".pneumo-error", timeout=30_000)
            error = page.inner_text(".pneumo-error")
            assert error.startswith("error: corrupt.jpg: ") and "\n" not in error.strip(), error

            # 4. a 50 MB upload: one line on this page, and the page still answers (it lost its connection before)
            large = tmp_path / "large.png"
            large.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(50 * 2**20))
            error = _upload_and_read_the_error(page, large, timeout=120_000)
            assert error.startswith("error: large.png: 50.0 MB, more than the explorer reads"), error
            source = page.get_attribute(heatmap, "src")
            page.select_option(".pneumo-image-choice select", index=0)
            _changed(page, heatmap, source, attribute="src")  # the page still answers after the large upload

            # 5. a 200 MB upload, above what the server's websocket takes: refused in the page, nothing sent
            huge = tmp_path / "huge.png"
            with huge.open("wb") as sparse:  # a sparse file: no 200 MB written to the disk
                sparse.write(b"\x89PNG\r\n\x1a\n")
                sparse.truncate(200 * 2**20)
            error = _upload_and_read_the_error(page, huge, timeout=60_000)
            assert error.startswith("error: huge.png: 200.0 MB, more than the explorer reads (32 MB)"), error
            source = page.get_attribute(heatmap, "src")
            page.select_option(".pneumo-image-choice select", index=1)
            _changed(page, heatmap, source, attribute="src")  # the connection is still open

            page.screenshot(path=str(tmp_path / "explorer.png"), full_page=True)
            assert (tmp_path / "explorer.png").stat().st_size > 10_000
            leaving = sorted({url for url in requests if bench_explore.outside_loopback(url)})
            assert requests and not leaving, f"requests that leave 127.0.0.1 (a classroom offline breaks): {leaving}"
        finally:
            browser.close()
    record = json.dumps({key: round(value, 3) for key, value in timings.items()}, indent=2)
    (tmp_path / "timings.json").write_text(record)
    if os.environ.get("PNEUMO_EXPLORE_TIMINGS"):
        Path(os.environ["PNEUMO_EXPLORE_TIMINGS"]).write_text(record)
    print(record)
