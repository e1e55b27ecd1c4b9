"""``pneumo bench explore --pages N``: a class of N students opening the explorer at once, in real Chromium pages.

It starts ``pneumo explore`` on a free local port (a child in its own session, stopped with SIGTERM at the end),
opens N pages at once (one browser, one context per page: N separate sessions, as N students), and measures:

- **time to ready**: from the page's request until its widgets show (the threshold lab's readout and the
  first heatmap drawn), per page; beside it **time to HTML**, until the page's HTML was received whole (the
  server's answer: what is left is the browser loading Voilà's scripts and drawing the widgets);
- **threshold change**: with every page open, each page moves its threshold slider (all at once) and waits
  for the lab's readout to change;
- **heatmap**: then each page chooses another image (a different one per page, so none comes from the
  service's cache) and waits for its heatmap to change;
- **server memory**: ``pneumo explore`` and every process below it (Voilà, the kernels), sampled every
  second (``/proc/PID/smaps_rollup``; sampling more often loaded the machine it measured): the peak of the
  summed RSS and of the summed PSS (shared pages counted once, split among the processes that share them:
  what the machine actually holds);
- **what each kernel loaded**: whether any page's kernel mapped TensorFlow (it should not: the model is loaded
  once, by ``pneumo explore``), and the model service's counters from the log.

With ``pool`` > 0 the server keeps that many kernels preheated (``pneumo explore --pool``), and the pages are
opened once the pool is full, as a class would come in after its teacher started the server; the time the pool
took to fill is recorded beside (``pool_ready_s``).

Chromium runs on the same machine as the server here (a classroom's browsers run on the students' machines),
so its pages compete for the same cores: the times are an upper bound for the server.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from pneumo_utils.config import PROJECT_ROOT
from pneumo_utils.runs import serve
from pneumo_utils.runs.report import CHROMIUM_FLAGS, find_chromium

PAGE_HEIGHT = "Math.max(...Array.from(document.querySelectorAll('*')).map(element => element.scrollHeight))"
READY = ".pneumo-heatmap[src^='blob:'], .pneumo-heatmap img[src^='blob:']"
STATS_LINE = re.compile(r"model service: (\{.*\})")
POOL_FULL = "Preheated kernels with the notebook run"  # voila_kernels.POOL_READY: the pool has run notebook 05
# lines of the server's log worth reading beside the figures: a page that never became ready shows up here
LOG_PROBLEMS = re.compile(
    r"Traceback|ERROR|Culling '|timed out|did not respond|did not start|Pool not refilled", re.IGNORECASE
)


class BenchError(RuntimeError):
    """The benchmark could not run (no Chromium, no Playwright, the server did not start)."""


def _family(pid: int) -> list[psutil.Process]:
    """``pid`` and every process below it (empty when it is gone)."""
    try:
        return [psutil.Process(pid), *serve.descendants(pid)]
    except psutil.NoSuchProcess:
        return []


class MemorySampler:
    """Peak summed RSS and PSS of a process and its descendants, sampled in a thread."""

    def __init__(self, pid: int, interval: float = 1.0):
        self.pid, self.interval = pid, interval
        self.peak_rss = self.peak_pss = 0
        self.peak_kernels = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *_) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            rss = pss = kernels = 0
            for process in _family(self.pid):
                try:
                    memory = process.memory_full_info()
                    rss, pss = rss + memory.rss, pss + getattr(memory, "pss", memory.rss)
                    kernels += "ipykernel" in " ".join(process.cmdline())
                except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                    pass
            self.peak_rss, self.peak_pss = max(self.peak_rss, rss), max(self.peak_pss, pss)
            self.peak_kernels = max(self.peak_kernels, kernels)
            self._stop.wait(self.interval)


def cpu_seconds(processes: list[psutil.Process]) -> float:
    """User + system CPU seconds of ``processes`` so far (with their waited-for children)."""
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
            total += times.user + times.system + times.children_user + times.children_system
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
    return total


def _browser_processes() -> list[psutil.Process]:
    here = psutil.Process()
    return [child for child in here.children(recursive=True) if "chrom" in child.name().lower()]


def kernels_with_tensorflow(pid: int) -> tuple[int, int]:
    """(kernels below ``pid``, how many of them have TensorFlow's library mapped)."""
    kernels = loaded = 0
    for process in _family(pid):
        try:
            if "ipykernel" not in " ".join(process.cmdline()):
                continue
            kernels += 1
            maps = Path(f"/proc/{process.pid}/maps").read_text(errors="replace")
            loaded += "libtensorflow" in maps or "_pywrap_tensorflow" in maps
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, OSError):
            pass
    return kernels, loaded


def _summary(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"min": None, "median": None, "max": None}
    return {
        "min": round(min(values), 3),
        "median": round(statistics.median(values), 3),
        "max": round(max(values), 3),
    }


async def _changed(page, selector: str, before: str | None, attribute: str | None, timeout: float) -> float:
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        element = await page.query_selector(selector)
        now = element and (await element.get_attribute(attribute) if attribute else await element.inner_text())
        if now and now != before:
            return time.perf_counter() - started
        await asyncio.sleep(0.05)
    raise TimeoutError(f"{selector} did not change within {timeout:.0f} s")


def outside_loopback(url: str) -> bool:
    """Whether a page's request leaves this machine (anything but 127.0.0.1, localhost, data: and blob:)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme in ("data", "blob", "about"):
        return False
    return parts.hostname not in ("127.0.0.1", "localhost", "::1")


async def _drive(url: str, pages: int, chromium: str, timeout: float, screenshot: Path | None = None) -> dict[str, Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium, args=list(CHROMIUM_FLAGS))
        try:
            contexts = [await browser.new_context(viewport={"width": 1300, "height": 1800}) for _ in range(pages)]
            tabs = [await context.new_page() for context in contexts]
            requests: list[str] = []
            for tab in tabs:  # every request of every page: an offline classroom needs none to leave the server
                tab.on("request", lambda request: requests.append(request.url))

            served: list[float] = []

            async def open_one(tab) -> float:
                started = time.perf_counter()
                response = await tab.goto(url, timeout=timeout * 1000, wait_until="commit")
                if response is not None:  # the server's part: the page's HTML, received whole
                    await response.finished()
                    served.append(time.perf_counter() - started)
                await tab.wait_for_selector(".pneumo-sensitivity", timeout=timeout * 1000)
                await tab.wait_for_selector(READY, timeout=timeout * 1000)
                return time.perf_counter() - started

            opened = await asyncio.gather(*(open_one(tab) for tab in tabs), return_exceptions=True)
            ready = [value for value in opened if isinstance(value, float)]
            failures = [
                f"{type(value).__name__}: {value}".splitlines()[0] for value in opened if not isinstance(value, float)
            ]
            live = [tab for tab, value in zip(tabs, opened, strict=True) if isinstance(value, float)]
            if screenshot is not None and live:  # the first page as a student first sees it
                await live[0].wait_for_timeout(1000)  # the ROC picture and the fonts settle
                # Voilà scrolls inside the page, so a "full page" is one window: make the window as tall as the page
                height = await live[0].evaluate(PAGE_HEIGHT)
                await live[0].set_viewport_size({"width": 1300, "height": min(int(height) + 40, 12000)})
                await live[0].wait_for_timeout(500)
                await live[0].screenshot(path=str(screenshot), full_page=True)

            async def move_threshold(tab) -> float:
                box = await (await tab.query_selector(".pneumo-threshold-slider .noUi-handle")).bounding_box()
                track = await (await tab.query_selector(".pneumo-threshold-slider .noUi-target")).bounding_box()
                before = await tab.inner_text(".pneumo-lab")
                middle = box["y"] + box["height"] / 2
                await tab.mouse.move(box["x"] + box["width"] / 2, middle)
                await tab.mouse.down()
                await tab.mouse.move(track["x"] + track["width"] * 0.3, middle, steps=2)
                await tab.mouse.up()
                return await _changed(tab, ".pneumo-lab", before, None, timeout)

            async def choose_image(tab, index: int) -> float:
                before = await tab.get_attribute(".pneumo-heatmap", "src")
                count = await tab.eval_on_selector(".pneumo-image-choice select", "select => select.options.length")
                await tab.select_option(".pneumo-image-choice select", index=(3 + index) % max(1, count))
                return await _changed(tab, ".pneumo-heatmap", before, "src", timeout)

            threshold = await asyncio.gather(*(move_threshold(tab) for tab in live), return_exceptions=True)
            heatmap = await asyncio.gather(
                *(choose_image(tab, index) for index, tab in enumerate(live)), return_exceptions=True
            )
            browser_cpu = cpu_seconds(_browser_processes())
            for values in (threshold, heatmap):
                failures += [
                    f"{type(value).__name__}: {value}".splitlines()[0]
                    for value in values
                    if not isinstance(value, float)
                ]
            return {
                "ready": ready,
                "served": served,
                "threshold": [value for value in threshold if isinstance(value, float)],
                "heatmap": [value for value in heatmap if isinstance(value, float)],
                "failures": failures,
                "browser_cpu_s": browser_cpu,
                "requests": len(requests),
                "outside_loopback": sorted({request for request in requests if outside_loopback(request)}),
            }
        finally:
            await browser.close()


def bench_explore(
    pages: int,
    run_dir: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
    model_path: str | os.PathLike | None = None,
    timeout: float = 300.0,
    screenshot: str | os.PathLike | None = None,
    pool: int = 0,
    server_log: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Open ``pages`` explorer pages at once against a fresh ``pneumo explore`` (with ``pool`` kernels
    preheated); the figures as a dict. With ``screenshot``, the first page once ready is also saved there as a
    full-page PNG. The server's log goes to ``server_log`` (kept), else to a temporary file (removed)."""
    if pages < 1:
        raise BenchError(f"--pages must be at least 1, got {pages}")
    if pool < 0:
        raise BenchError(f"--pool must be at least 0, got {pool}")
    chromium = find_chromium()
    if chromium is None:
        raise BenchError("pneumo bench explore needs Chromium (apt-get install chromium) and Playwright")
    try:
        import playwright  # noqa: F401
    except ImportError:
        raise BenchError("pneumo bench explore needs Playwright: pip install -e '.[test]'") from None
    port = serve.free_port()
    with tempfile.TemporaryDirectory(prefix="pneumo-bench-explore-") as folder:
        log = Path(server_log).resolve() if server_log else Path(folder) / "explorer.log"
        command = [sys.executable, "-m", "pneumo_utils.cli", "explore", "--port", str(port), "--no-browser"]
        command += ["--log", str(log)]
        command += ["--run", str(run_dir)] if run_dir else []
        command += ["--data-dir", str(data_dir)] if data_dir else []
        command += ["--model", str(model_path)] if model_path else []
        command += ["--pool", str(pool)] if pool else []
        started = time.perf_counter()
        server = subprocess.Popen(
            command,
            stdout=subprocess.DEVNULL,
            stderr=(Path(folder) / "terminal.txt").open("w"),
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            with MemorySampler(server.pid) as memory:
                while True:  # the server listens once the model is loaded and Voilà is up
                    if server.poll() is not None:
                        raise BenchError(
                            "pneumo explore stopped: " + (Path(folder) / "terminal.txt").read_text().strip()[-300:]
                        )
                    with socket.socket() as probe:
                        if probe.connect_ex(("127.0.0.1", port)) == 0:
                            break
                    if time.perf_counter() - started > timeout:
                        raise BenchError(f"pneumo explore did not listen within {timeout:.0f} s")
                    time.sleep(0.25)
                listening = time.perf_counter() - started
                while pool and POOL_FULL not in (log.read_text(errors="replace") if log.is_file() else ""):
                    if server.poll() is not None or time.perf_counter() - started > timeout + listening:
                        problems = [
                            line for line in log.read_text(errors="replace").splitlines() if LOG_PROBLEMS.search(line)
                        ]
                        raise BenchError(
                            f"the pool of {pool} kernels did not fill within {timeout:.0f} s"
                            + (f" (the log: {problems[-1][:200]})" if problems else "")
                        )
                    time.sleep(0.5)
                pool_ready = time.perf_counter() - started if pool else None
                driven = asyncio.run(
                    _drive(
                        f"http://127.0.0.1:{port}/",
                        pages,
                        chromium,
                        timeout,
                        Path(screenshot) if screenshot else None,
                    )
                )
                kernels, with_tensorflow = kernels_with_tensorflow(server.pid)
                server_cpu = cpu_seconds(_family(server.pid))
        finally:  # SIGTERM (pneumo explore stops Voilà and its kernels), then SIGKILL for anything left
            serve.stop_tree(server, grace=30)
        text = log.read_text(errors="replace") if log.is_file() else ""
        found = STATS_LINE.findall(text)
        service = json.loads(found[-1]) if found else {}
    return {
        "pages": pages,
        "pages_ready": len(driven["ready"]),
        "pool": pool,
        "server_listening_s": round(listening, 3),
        "pool_ready_s": None if pool_ready is None else round(pool_ready, 3),
        "time_to_ready_s": _summary(driven["ready"]),
        "time_to_html_s": _summary(driven["served"]),
        "threshold_change_s": _summary(driven["threshold"]),
        "heatmap_s": _summary(driven["heatmap"]),
        "peak_server_rss_mb": round(memory.peak_rss / 2**20),
        "peak_server_pss_mb": round(memory.peak_pss / 2**20),
        "peak_kernels": memory.peak_kernels,
        "server_cpu_s": round(server_cpu, 1),
        "browser_cpu_s": round(driven["browser_cpu_s"], 1),
        "kernels_at_end": kernels,
        "kernels_with_tensorflow": with_tensorflow,
        "model_service": service,
        "failures": driven["failures"][:10],
        "page_requests": driven["requests"],
        "requests_outside_loopback": driven["outside_loopback"][:10],
        "log_problems": log_problems(text),
        "cpu": _cpu(),
        "note": "Chromium ran on the same machine, sharing its cores with the server",
    }


def log_problems(text: str) -> list[str]:
    """The server log's lines worth reading beside the figures (at most 20), without the log's header (the
    command line) and with this machine's folders left out, so the result can be committed."""
    found = set()
    for line in text.splitlines():
        if line.startswith("--- ") or not LOG_PROBLEMS.search(line):
            continue
        for folder, name in ((str(PROJECT_ROOT), "."), (sys.prefix, "<python>"), (str(Path.home()), "~")):
            line = line.replace(folder, name)
        found.add(line.strip()[:200])
    return sorted(found)[:20]


def _cpu() -> dict[str, Any]:
    flags = ""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        pass
    model = re.search(r"model name\s*:\s*(.*)", flags)
    return {
        "cores": os.cpu_count(),
        "model": model.group(1).strip() if model else None,
        "avx512_bf16": "avx512_bf16" in flags,
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
    }
