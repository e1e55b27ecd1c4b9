"""The explorer's kernel manager: jupyter_server's, stopping kernels without the interrupt first (see
:mod:`pneumo_utils.runs.kernels`). A module of its own because jupyter_server comes with the ``explore`` extra only."""

from __future__ import annotations

from jupyter_server.services.kernels.kernelmanager import ServerKernelManager

from pneumo_utils.runs.kernels import NoInterruptOnShutdown


class PoliteServerKernelManager(NoInterruptOnShutdown, ServerKernelManager):
    """Named in Voilà's ``--MappingKernelManager.kernel_manager_class``."""
