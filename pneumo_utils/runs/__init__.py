"""Runs: executing the notebooks as one pipeline (papermill, HTML, run summary, promote), many of them on Dask
(``sweep``), training experiments and their tables, the one-file report and the results page, benchmarks, and
the explorer's server with its polite kernel managers.

Promises: a run writes only into its own folder, under a lock, and records its parameters beside every result;
the processes a run starts (kernels, Voilà, Dask workers it made, Chromium) stop with it. May import every layer
below it (``explain``, ``model``, ``predict``, ``data``, ...), never ``cli``.
"""
