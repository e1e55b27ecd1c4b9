"""The explorer's kernel managers. A module of its own because jupyter_server comes with the ``explore`` extra only.

- :class:`PoliteServerKernelManager` (one kernel): jupyter_server's, stopping kernels without the interrupt
  first (see :mod:`pneumo_utils.runs.kernels`).
- :class:`ClassroomKernelManager` (all of them): jupyter_server's, with two rules for a class's server.

  **A page that is still loading keeps its kernel.** jupyter_server culls a kernel with no websocket once it
  has been idle for ``cull_idle_timeout`` seconds. A page's kernel runs notebook 05 and then waits, idle, for
  the browser to load Voilà's scripts and connect; with 20 pages loading at once on two cores that took longer
  than a 30 s timeout, and kernels were culled under pages that were still starting (issue 29, class 6). So a
  kernel handed to a page that has never connected is kept for ``page_grace`` seconds from the hand-over
  (and as long as it is busy), then culled by the usual rule; once its page has connected, only the usual
  rule applies. A kernel still waiting in Voilà's preheated pool (``--pool``) has no page yet and is never
  culled: Voilà keeps the finished ones, this keeps the ones still starting.

  **The pool is refilled within a bound.** Voilà replaces every kernel a page takes from its pool, so a class
  of 30 on a pool of 30 would end with 60 kernels (about 100 MB each). A taken kernel is replaced only while
  the server holds fewer than ``max_kernels`` (``pneumo explore`` sets ``pool + pool // 4``, at least
  ``pool + 1``); pages beyond that start their own kernel, as without a pool.

  **Page lines.** The log gets ``Page given kernel: ID`` when a page request gets its kernel (started for it,
  or taken from the pool) and ``Page connected: ID`` when its websocket first connects, so the terminal's
  "page opened" counts pages, not preheated kernels (:class:`pneumo_utils.runs.serve.PageCounter`); and
  ``Preheated kernels with the notebook run: N`` once, when the whole pool has run notebook 05.
"""

from __future__ import annotations

import time
import weakref

from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager, ServerKernelManager
from traitlets import Float, Int

from pneumo_utils.runs.kernels import NoInterruptOnShutdown

PAGE_GIVEN = "Page given kernel: "
PAGE_CONNECTED = "Page connected: "
POOL_READY = "Preheated kernels with the notebook run: "


class PoliteServerKernelManager(NoInterruptOnShutdown, ServerKernelManager):
    """Named in Voilà's ``--MappingKernelManager.kernel_manager_class``."""


class ClassroomKernelManager(AsyncMappingKernelManager):
    """Named in Voilà's ``--VoilaConfiguration.multi_kernel_manager_class`` (Voilà adds its pool on top)."""

    page_grace = Float(
        300.0,
        config=True,
        help="Seconds a kernel handed to a page waits for the page to connect before the idle rule applies",
    )

    max_kernels = Int(0, config=True, help="Refill Voilà's pool only while fewer kernels than this run (0: no bound)")

    def __init__(self, **kwargs):
        self._given: dict[str, float] = {}  # kernel id -> time.monotonic() of the hand-over to a page
        self._connected: set[str] = set()
        self._pool_announced = False
        self._watched: weakref.WeakSet = weakref.WeakSet()  # pool tasks whose start is watched
        self._bound_refills()  # before Voilà's __init__ (which runs after this one returns) first fills the pool
        super().__init__(**kwargs)
        taking = getattr(self, "get_rendered_notebook", None)  # Voilà's pool, when --pool is on
        if taking is not None:

            async def take_from_pool(*args, **kwargs):
                render_task, rendered, kernel_id = await taking(*args, **kwargs)
                self._give(kernel_id)
                return render_task, rendered, kernel_id

            self.get_rendered_notebook = take_from_pool

    def _bound_refills(self) -> None:
        filling = getattr(self, "fill_if_needed", None)  # Voilà's pool, when --pool is on
        if filling is None:
            return

        def fill_within_bound(*args, **kwargs):
            pending = sum(not task.done() for pool in getattr(self, "_pools", {}).values() for task in pool)
            held = len(self._kernels) + pending
            if self.max_kernels and held >= self.max_kernels and getattr(self, "_pools", None):
                self.log.info("Pool not refilled: %d kernels held (at most %d)", held, self.max_kernels)
                return None
            filled = filling(*args, **kwargs)
            for pool in self._pools.values():
                for task in pool:
                    if task not in self._watched:  # once per task, however often the pool is refilled
                        self._watched.add(task)
                        task.add_done_callback(self._when_started)
            return filled

        self.fill_if_needed = fill_within_bound

    def _when_started(self, task) -> None:
        """A pool kernel started and Voilà began running the notebook in it: count it once that run is over.
        One that did not start (thirty kernels starting at once on two cores) is taken out of the pool, which
        starts another: a page must never be handed a kernel that failed."""
        if task.cancelled():
            return
        error = task.exception()
        if error is None:
            task.result()["task"].add_done_callback(lambda _: self._announce_pool())
            return
        for notebook, pool in self._pools.items():
            if task in pool:
                pool.remove(task)
                self.log.warning(
                    "A preheated kernel did not start (%s: %s); starting another", type(error).__name__, error
                )
                self.fill_if_needed(delay=0, notebook_name=notebook)

    def _announce_pool(self) -> None:
        """Log once when every kernel of the pool has run the notebook (Voilà's own "filled" line comes when
        they have started, seconds earlier): from then on a page is given a finished one."""
        if self._pool_announced:
            return
        size = self.kernel_pools_config.get("default", {}).get("pool_size", 0)
        ready = 0
        for pool in self._pools.values():
            for task in pool:
                if task.done() and not task.cancelled() and task.exception() is None and task.result()["task"].done():
                    ready += 1
        if size and ready >= size:
            self._pool_announced = True
            self.log.info("%s%d", POOL_READY, ready)

    def _give(self, kernel_id: str) -> None:
        self._given[kernel_id] = time.monotonic()
        self.log.info("%s%s", PAGE_GIVEN, kernel_id)

    async def start_kernel(self, *args, **kwargs):
        for_pool = (kwargs.get("env") or {}).get("VOILA_PREHEAT") == "True"
        kernel_id = await super().start_kernel(*args, **kwargs)
        if not for_pool:  # Voilà starts it for a page request
            self._give(kernel_id)
        return kernel_id

    def notify_connect(self, kernel_id):
        super().notify_connect(kernel_id)
        if kernel_id not in self._connected:
            self._connected.add(kernel_id)
            self.log.info("%s%s", PAGE_CONNECTED, kernel_id)

    def still_starting(self, kernel_id: str) -> bool:
        """Whether the page of ``kernel_id`` may still be loading: no page yet (a pool kernel), or handed to a
        page less than ``page_grace`` seconds ago that has never connected."""
        if kernel_id in self._connected:
            return False
        given = self._given.get(kernel_id)
        return given is None or time.monotonic() - given < self.page_grace

    async def cull_kernel_if_idle(self, kernel_id):
        kernel = self._kernels.get(kernel_id)
        if kernel is None:
            return None
        if getattr(kernel, "execution_state", None) != "dead" and self.still_starting(kernel_id):
            return None
        return await super().cull_kernel_if_idle(kernel_id)

    def remove_kernel(self, kernel_id):
        self._given.pop(kernel_id, None)
        self._connected.discard(kernel_id)
        return super().remove_kernel(kernel_id)
