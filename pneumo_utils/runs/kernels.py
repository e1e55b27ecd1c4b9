"""Jupyter kernel managers that stop a kernel by asking it to, without interrupting it first.

``jupyter_client`` sends every kernel a SIGINT before its shutdown request. A kernel that is handling a
message at that moment logs ``[IPKernelApp] ERROR | KeyboardInterrupt caught in kernel.``, so the log of a
clean run (``kernels.log`` of ``pneumo run``, the explorer's log) reads like a failure. These managers ask
for the shutdown only; a kernel that does not stop within jupyter_client's wait is still terminated and then
killed by it, so nothing is left running.

``pneumo run`` passes :class:`PoliteKernelManager` to papermill; ``pneumo explore`` names
``pneumo_utils.runs.voila_kernels.PoliteServerKernelManager`` (the same rule on jupyter_server's manager, which
only the explorer's extra installs) in Voilà's ``--MappingKernelManager.kernel_manager_class``.
"""

from __future__ import annotations

from jupyter_client.manager import AsyncKernelManager


class NoInterruptOnShutdown:
    """Mix-in for a jupyter_client kernel manager: no SIGINT before the shutdown request."""

    async def _async_interrupt_kernel(self) -> None:
        if getattr(self, "shutting_down", False):
            return  # a shutdown request follows; an interrupt now would only log a false alarm
        await super()._async_interrupt_kernel()


class PoliteKernelManager(NoInterruptOnShutdown, AsyncKernelManager):
    """For nbclient / papermill."""
