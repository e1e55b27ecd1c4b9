"""``pneumo explore`` as a long-running teaching server: SIGTERM, SIGINT and SIGHUP stop Voilà and every
kernel within 10 s; kernels of pages that went away without a word are culled; the terminal shows the
address and one line per page, everything else goes to the log. Real processes, real signals; no browser
(a page visit is an HTTP request that starts a kernel, dropped before the page's websocket connects)."""

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import psutil
import pytest

pytest.importorskip("voila")

from helpers import free_port, wait_for  # noqa: E402

from pneumo_utils.runs import serve  # noqa: E402


def _running(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _kernels(pid: int) -> list[psutil.Process]:
    found = []
    for child in serve.descendants(pid):
        try:
            if _running(child) and "ipykernel" in " ".join(child.cmdline()):
                found.append(child)
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            pass  # ended while being looked at
    return found


class Explorer:
    def __init__(self, run, tmp_path, cull_idle_timeout: int = 300, *extra: str):
        self.port = free_port()
        self.log = tmp_path / "explorer.log"
        self.terminal = tmp_path / "terminal.txt"
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pneumo_utils.cli",
                "explore",
                "--run",
                str(run),
                "--port",
                str(self.port),
                "--no-browser",
                "--log",
                str(self.log),
                "--cull-idle-timeout",
                str(cull_idle_timeout),
                *extra,
            ],
            stdout=self.terminal.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_for(self.listening, 90, "the explorer listening")
        self.family = {child.pid for child in serve.descendants(self.process.pid)}

    def listening(self) -> bool:
        with socket.socket() as probe:
            return probe.connect_ex(("127.0.0.1", self.port)) == 0

    def visit_and_vanish(self) -> None:
        """Request the page, read its first bytes (the kernel has started), and drop the connection."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/", timeout=60) as response:
            response.read(2048)

    def kernels(self) -> list[psutil.Process]:
        found = _kernels(self.process.pid)
        self.family |= {kernel.pid for kernel in found} | {child.pid for child in serve.descendants(self.process.pid)}
        return found

    def alive(self) -> list[int]:
        alive = []
        for pid in self.family | {self.process.pid}:
            try:
                if _running(psutil.Process(pid)):
                    alive.append(pid)
            except psutil.NoSuchProcess:
                pass
        return alive

    def stop(self) -> None:
        """The test's own clean-up: SIGTERM, then SIGKILL for anything of the family still alive."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=15)
        for pid in self.alive():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.mark.slow
def test_abandoned_pages_are_culled_and_sigterm_leaves_nothing(smoke_run, tmp_path):
    explorer = Explorer(smoke_run, tmp_path, 4, "--page-grace", "4")
    try:
        for _ in range(2):
            explorer.visit_and_vanish()
        wait_for(lambda: len(explorer.kernels()) == 2, 60, "two kernels for two visits")
        # the browsers are gone: their kernels are shut down after 4 idle seconds
        wait_for(lambda: not explorer.kernels(), 90, "the kernels of abandoned pages culled")
        explorer.visit_and_vanish()
        wait_for(lambda: len(explorer.kernels()) == 1, 60, "a kernel for a third visit")
        os.kill(explorer.process.pid, signal.SIGTERM)  # the pneumo process only, as systemd would
        started = time.monotonic()
        explorer.process.wait(timeout=15)
        wait_for(
            lambda: not explorer.alive(),
            max(0.5, 10 - (time.monotonic() - started)),
            "server and kernels gone after SIGTERM",
        )
    finally:
        explorer.stop()
    assert explorer.process.returncode == 0
    assert not explorer.listening()
    terminal = explorer.terminal.read_text().splitlines()
    assert terminal[0].startswith(f"explorer: http://127.0.0.1:{explorer.port}/"), terminal
    events = terminal[1:]
    assert [line.split(" (")[0] for line in events] == [
        "page opened",
        "page opened",
        "page closed",
        "page closed",
        "page opened",
        "page closed",
    ], terminal  # last: at the stop
    log = explorer.log.read_text()
    assert "Kernel started" in log and "Culling" in log  # what the terminal left out is in the log
    assert "KeyboardInterrupt" not in log and "Traceback" not in log


@pytest.mark.slow
def test_preheated_kernels_and_a_page_still_loading_are_not_culled(smoke_run, tmp_path):
    """Issue 29 (class 6): with 20 pages opening at once and a 30 s cull timeout, kernels were culled while
    their pages were still loading. Here the cull timeout is 2 s: the pool's kernels (no page yet) are never
    culled; a page handed its kernel keeps it for the page grace (12 s) although it never connects; after
    the grace the usual rule culls it."""
    explorer = Explorer(smoke_run, tmp_path, 2, "--page-grace", "12", "--pool", "2")
    try:
        wait_for(lambda: "2 kernels preheated" in explorer.terminal.read_text(), 120, "the pool filled")
        pool = {kernel.pid for kernel in explorer.kernels()}
        assert len(pool) == 2
        time.sleep(6)  # three cull timeouts, six cull rounds
        assert {kernel.pid for kernel in explorer.kernels()} == pool, "a preheated kernel was culled"
        given = time.monotonic()
        explorer.visit_and_vanish()
        opened = wait_for(
            lambda: re.search(r"page opened \(kernel (\w{8})", explorer.terminal.read_text()), 30, "the page line"
        ).group(1)
        log = explorer.log.read_text()
        assert log.index(f"Kernel started: {opened}") < log.index("Preheated kernels")  # taken from the pool
        time.sleep(max(0.0, 8 - (time.monotonic() - given)))
        log = explorer.log.read_text()
        assert not re.search(rf"Culling .*{opened}", log), "culled while its page could still be loading"
        wait_for(lambda: re.search(rf"Culling .*{opened}", explorer.log.read_text()), 30, "culled after the grace")
        culled_at = time.monotonic() - given
        assert culled_at >= 12, culled_at
        # the culled kernel's process ends; the other pool kernel waits on
        wait_for(lambda: len(pool & {kernel.pid for kernel in explorer.kernels()}) == 1, 30, "the culled kernel gone")
    finally:
        explorer.stop()


@pytest.mark.slow
def _every_asset_is_local(port: int) -> None:
    base = f"http://127.0.0.1:{port}"
    with urllib.request.urlopen(f"{base}/", timeout=60) as response:
        head = b""
        while b"</head>" not in head:
            chunk = response.read(65536)
            assert chunk, "the page ended before its head"
            head += chunk
    page = head.decode("utf-8", "replace")
    external = re.findall(r'(?:href|src)="(https?://[^"]+)"', page)
    assert not external, external  # no CDN: FontAwesome and the styles come from the explorer itself
    assert "/voila/templates/pneumo/static/css/all.min.css" in page
    with urllib.request.urlopen(f"{base}/voila/templates/pneumo/static/css/all.min.css", timeout=30) as css:
        assert b"../webfonts/fa-solid-900.woff2" in css.read()
    with urllib.request.urlopen(
        f"{base}/voila/templates/pneumo/static/webfonts/fa-solid-900.woff2", timeout=30
    ) as font:
        assert font.status == 200 and font.read(4) == b"wOF2"


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGHUP])
def test_sigint_and_sighup_stop_the_server_within_ten_seconds(smoke_run, tmp_path, signum):
    explorer = Explorer(smoke_run, tmp_path)
    try:
        assert explorer.family, "the Voilà server runs below pneumo explore"
        if signum == signal.SIGINT:  # once: the page needs nothing from outside this server (a class offline)
            _every_asset_is_local(explorer.port)
        os.kill(explorer.process.pid, signum)
        started = time.monotonic()
        explorer.process.wait(timeout=15)
        wait_for(
            lambda: not explorer.alive(),
            max(0.5, 10 - (time.monotonic() - started)),
            f"server gone after {signal.Signals(signum).name}",
        )
    finally:
        explorer.stop()
    assert explorer.process.returncode == (130 if signum == signal.SIGINT else 0)
    assert not explorer.listening()


def test_page_lines_are_read_from_the_kernel_hand_over_and_shutdown():
    counter = serve.PageCounter()
    assert (
        counter.page_event("[Voila] Page given kernel: 0123abcd-0000-1111-2222-333344445555")
        == "page opened (kernel 0123abcd; 1 open)"
    )
    assert counter.page_event("[IPKernelApp] WARNING | Kernel is running over TCP without encryption") is None
    assert (
        counter.page_event("[Voila] Kernel shutdown: 0123abcd-0000-1111-2222-333344445555")
        == "page closed (kernel 0123abcd; 0 open)"
    )
    assert counter.page_event("[Voila] Kernel shutdown: 0123abcd-0000-1111-2222-333344445555") is None
    # a kernel started for the preheated pool has no page yet; the pool's first fill is announced, once
    assert counter.page_event("[Voila] Kernel started: 99999999-0000-1111-2222-333344445555") is None
    full = "[Voila] Preheated kernels with the notebook run: 3"
    assert counter.page_event(full) == "3 kernels preheated, waiting for pages"
    assert counter.page_event(full) is None


def test_a_page_is_closed_when_its_websocket_closes_not_when_its_kernel_is_culled():
    kernel = "0123abcd-0000-1111-2222-333344445555"
    other = "99999999-0000-1111-2222-333344445555"
    counter = serve.PageCounter()
    counter.page_event(f"[Voila] Page given kernel: {kernel}")
    assert counter.page_event(f"[Voila] Page given kernel: {other}") == "page opened (kernel 99999999; 2 open)"
    closed = counter.page_event(f"[Voila] Starting buffering for {kernel}:c9b84587-b656-4ab0-9130-0e0d29720dcc")
    assert closed == "page closed (kernel 0123abcd; 1 open)"
    assert counter.page_event(f"[Voila] Kernel shutdown: {kernel}") is None  # culled later: not counted twice
    counter.page_event(f"[Voila] Starting buffering for {other}:aaaa")
    assert counter.page_event(f"[Voila] Restoring connection for {other}:aaaa") == "page back (kernel 99999999; 1 open)"
