"""Run a server (Voilà) as a child that never outlives ``pneumo``, with a quiet terminal.

The server runs in its own session, so a terminal's Ctrl-C, a ``kill -TERM`` from systemd or a closed
terminal's SIGHUP reach this process only; it then stops the server *and every process below it* (the
kernels, which jupyter_client starts in sessions of their own): SIGTERM first, so the server shuts its
kernels down, then SIGKILL for anything still alive after ``grace`` seconds.

Everything the server and its kernels print (start-up warnings, kernel log lines, tracebacks of browsers
that went away) goes to a log file. The terminal gets the lines :func:`page_event` recognizes: one per
page opened (given its kernel) or closed (its websocket closed, or its kernel shut down or culled), and
one when the pool of preheated kernels (``pneumo explore --pool``) is first full.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import psutil

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_PAGE_GIVEN = re.compile(r"Page given kernel: ([0-9a-f-]{8,})")  # logged by voila_kernels.ClassroomKernelManager
_POOL_FULL = re.compile(r"Preheated kernels with the notebook run: (\d+)")  # voila_kernels.POOL_READY
_KERNEL_SHUTDOWN = re.compile(r"Kernel shutdown: ([0-9a-f-]{8,})")
_PAGE_LEFT = re.compile(r"Starting buffering for ([0-9a-f-]{8,}):")  # the page's websocket closed
_PAGE_BACK = re.compile(r"Restoring connection for ([0-9a-f-]{8,}):")  # the same page reconnected


class _Stop(Exception):
    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class PageCounter:
    """Turns the server's log lines into one terminal line per page opened or closed.

    A page is open from the moment it is given its kernel (started for it, or taken from the preheated pool)
    until its websocket closes (the page was closed, reloaded, or its
    browser went away: jupyter_server then starts buffering the kernel's messages) or its kernel is shut down,
    whichever comes first; a page that reconnects to its kernel is open again. So "N open" counts pages still
    showing, not kernels waiting to be culled.
    """

    def __init__(self):
        self.open: set[str] = set()
        self.left: set[str] = set()  # kernels whose page closed, not yet culled
        self.preheated = False

    def page_event(self, line: str) -> str | None:
        started, stopped = _PAGE_GIVEN.search(line), _KERNEL_SHUTDOWN.search(line)
        left, back = _PAGE_LEFT.search(line), _PAGE_BACK.search(line)
        if started and started.group(1) not in self.open:
            self.open.add(started.group(1))
            return f"page opened (kernel {started.group(1)[:8]}; {len(self.open)} open)"
        if back and back.group(1) in self.left:
            self.left.discard(back.group(1))
            self.open.add(back.group(1))
            return f"page back (kernel {back.group(1)[:8]}; {len(self.open)} open)"
        for match in (left, stopped):
            if match and match.group(1) in self.open:
                self.open.discard(match.group(1))
                if match is left:
                    self.left.add(match.group(1))
                return f"page closed (kernel {match.group(1)[:8]}; {len(self.open)} open)"
        if stopped:
            self.left.discard(stopped.group(1))
        full = _POOL_FULL.search(line)
        if full and not self.preheated:  # logged once by the server; a second would be another server's
            self.preheated = True
            return f"{full.group(1)} kernels preheated, waiting for pages"
        return None


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now (for a server started next: the explorer's benchmark, the tests)."""
    import socket

    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def descendants(pid: int) -> list[psutil.Process]:
    """Every process below ``pid`` (children, their children, ...); empty when ``pid`` is gone."""
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def stop_tree(process: subprocess.Popen, grace: float = 6.0) -> None:
    """SIGTERM ``process`` and wait up to ``grace`` seconds for it and everything it started to end; then
    SIGKILL whatever is left. Processes it started are listed before it is signalled (once it exits,
    its orphans cannot be found from it)."""
    family = descendants(process.pid)
    if process.poll() is None:
        process.terminate()
    deadline = time.monotonic() + grace
    try:
        process.wait(timeout=max(0.1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        pass
    family += [child for child in descendants(process.pid) if child not in family]
    for member in family:  # a kernel the server did not get to shut down in time
        try:
            member.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(family, timeout=max(0.1, deadline - time.monotonic()))
    for member in alive:
        try:
            member.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=2)
    if process.poll() is None:
        process.kill()
        process.wait(timeout=5)


def serve(
    command: Sequence[str],
    log_path: str | os.PathLike,
    environment: dict[str, str] | None = None,
    echo: Callable[[str], None] | None = None,
    grace: float = 6.0,
) -> int:
    """Run ``command`` until it exits or this process gets SIGINT, SIGTERM or SIGHUP; then stop it and all
    its descendants. Its output is appended to ``log_path``; page events go to ``echo`` (the terminal).

    Returns the server's exit code, or 130 for Ctrl-C and 0 for SIGTERM/SIGHUP (a stop that was asked for).
    """
    echo = echo or (lambda text: print(text, flush=True))
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)

    def on_signal(signum, frame):
        raise _Stop(signum)

    previous = {number: signal.getsignal(number) for number in STOP_SIGNALS}
    with open(log_path, "a", encoding="utf-8", errors="replace") as log:
        log.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(command)}\n")
        log.flush()
        for number in STOP_SIGNALS:
            signal.signal(number, on_signal)
        process = None
        try:
            process = subprocess.Popen(
                list(command),
                env=environment,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                text=True,
                errors="replace",
                bufsize=1,
            )
            reader = threading.Thread(target=_relay, args=(process.stdout, log, PageCounter(), echo), daemon=True)
            reader.start()
            code = process.wait()
            reader.join(timeout=5)
            return code
        except _Stop as stop:
            return 130 if stop.signum == signal.SIGINT else 0
        finally:
            # further stop signals while stopping are ignored: a second Ctrl-C must not leave orphans
            for number in STOP_SIGNALS:
                signal.signal(number, signal.SIG_IGN)
            try:
                if process is not None:
                    stop_tree(process, grace=grace)
            finally:
                for number, handler in previous.items():
                    signal.signal(number, handler)


def _relay(stream, log, counter: PageCounter, echo: Callable[[str], None]) -> None:
    for line in stream:
        log.write(line)
        log.flush()
        event = counter.page_event(line)
        if event:
            echo(event)
