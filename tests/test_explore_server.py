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
    def __init__(self, run, tmp_path, cull_idle_timeout: int = 300):
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
    explorer = Explorer(smoke_run, tmp_path, cull_idle_timeout=4)
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


def test_page_lines_are_read_from_kernel_start_and_shutdown():
    counter = serve.PageCounter()
    assert (
        counter.page_event("[Voila] Kernel started: 0123abcd-0000-1111-2222-333344445555")
        == "page opened (kernel 0123abcd; 1 open)"
    )
    assert counter.page_event("[IPKernelApp] WARNING | Kernel is running over TCP without encryption") is None
    assert (
        counter.page_event("[Voila] Kernel shutdown: 0123abcd-0000-1111-2222-333344445555")
        == "page closed (kernel 0123abcd; 0 open)"
    )
    assert counter.page_event("[Voila] Kernel shutdown: 0123abcd-0000-1111-2222-333344445555") is None


def test_a_page_is_closed_when_its_websocket_closes_not_when_its_kernel_is_culled():
    kernel = "0123abcd-0000-1111-2222-333344445555"
    other = "99999999-0000-1111-2222-333344445555"
    counter = serve.PageCounter()
    counter.page_event(f"[Voila] Kernel started: {kernel}")
    assert counter.page_event(f"[Voila] Kernel started: {other}") == "page opened (kernel 99999999; 2 open)"
    closed = counter.page_event(f"[Voila] Starting buffering for {kernel}:c9b84587-b656-4ab0-9130-0e0d29720dcc")
    assert closed == "page closed (kernel 0123abcd; 1 open)"
    assert counter.page_event(f"[Voila] Kernel shutdown: {kernel}") is None  # culled later: not counted twice
    counter.page_event(f"[Voila] Starting buffering for {other}:aaaa")
    assert counter.page_event(f"[Voila] Restoring connection for {other}:aaaa") == "page back (kernel 99999999; 1 open)"
