"""``pneumo explore`` (notebook 05 served as a web app with Voilà) and ``pneumo report`` (one HTML file)."""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
import tempfile
from pathlib import Path

from pneumo_utils import config
from pneumo_utils.cli.common import UsageError, refuse_existing, save

EXPLORE_NOTEBOOK = config.NOTEBOOKS_DIR / "05_explore.ipynb"


DEFAULT_LOG = config.PROJECT_ROOT / "runs" / "explorer.log"
MAX_POOL = 100
POOL_REFILL_DELAY = 30  # seconds: kernels taken from the pool are replaced after the pages opened with them load


def voila_command(
    port: int,
    host: str,
    open_browser: bool,
    cull_idle_timeout: int = 300,
    template: str | None = None,
    pool: int = 0,
    page_grace: int = 300,
) -> list[str]:
    """The Voilà server for notebook 05: no code cells, no tracebacks, bound to ``host``.

    A kernel whose page is gone (closed, or a browser that went away without a word) is shut down after
    ``cull_idle_timeout`` idle seconds; a kernel with its page still open is kept. Kernels stop without the
    interrupt that jupyter_client sends first by default (a false 'KeyboardInterrupt' in the log). The log
    level is INFO because the terminal's page lines are read from the log's kernel lines.

    A page still loading keeps its kernel for ``page_grace`` seconds before the idle rule applies
    (:class:`pneumo_utils.runs.voila_kernels.ClassroomKernelManager`). With ``pool`` > 0 Voilà keeps that
    many kernels with notebook 05 already run, so a page opened is handed one at once; a kernel taken is
    replaced after ``POOL_REFILL_DELAY`` seconds (once the pages opened together have loaded) while the server
    holds fewer than ``pool + pool // 4`` kernels.
    """
    from pneumo_utils.explore import UPLOAD_MESSAGE_LIMIT

    manager = "--MappingKernelManager."
    return [
        sys.executable,
        "-m",
        "voila",
        str(EXPLORE_NOTEBOOK),
        f"--port={port}",
        f"--Voila.ip={host}",
        "--Voila.port_retries=0",
        "--VoilaConfiguration.show_tracebacks=False",
        # an upload is one websocket message: accepted up to this size, so the page answers a large file in one
        # line instead of losing its connection (tornado's default is 10 MB)
        "--Voila.tornado_settings=" + json.dumps({"websocket_max_message_size": UPLOAD_MESSAGE_LIMIT}),  # an int
        "--Voila.log_level=INFO",
        f"{manager}cull_idle_timeout={cull_idle_timeout}",
        f"{manager}cull_connected=False",
        f"{manager}cull_interval={max(1, min(60, cull_idle_timeout // 2))}",
        f"{manager}kernel_manager_class=pneumo_utils.runs.voila_kernels.PoliteServerKernelManager",
        "--VoilaConfiguration.multi_kernel_manager_class=pneumo_utils.runs.voila_kernels.ClassroomKernelManager",
        f"--ClassroomKernelManager.page_grace={page_grace}",
        *(
            [
                "--VoilaConfiguration.preheat_kernel=True",
                f"--VoilaConfiguration.default_pool_size={pool}",
                f"--VoilaKernelManager.fill_delay={POOL_REFILL_DELAY}",
                f"--ClassroomKernelManager.max_kernels={pool + max(1, pool // 4)}",
            ]
            if pool
            else []
        ),
        *([f"--template={template}"] if template else []),
        *([] if open_browser else ["--no-browser"]),
    ]


def _check_address(host: str, port: int) -> None:
    """The address must exist on this machine and the port be free, before anything starts."""
    import socket

    try:
        family, kind, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (OSError, UnicodeError) as error:
        raise UsageError(f"--host {host}: not an address of this machine ({error})") from None
    with socket.socket(family, kind) as probe:
        try:
            probe.bind(address)
        except OSError as error:
            problem = (
                "is in use; choose another with --port"
                if error.errno == errno.EADDRINUSE
                else f"cannot be used ({error.strerror or error})"
            )
            raise UsageError(f"{host}:{port} {problem}") from None


def _command_explore(args: argparse.Namespace) -> int:
    from pneumo_utils import explore
    from pneumo_utils.runs import serve

    if not 0 < args.port < 65536:
        raise UsageError(f"--port must be between 1 and 65535, got {args.port}")
    if args.cull_idle_timeout < 1:
        raise UsageError(f"--cull-idle-timeout must be at least 1 second, got {args.cull_idle_timeout}")
    if args.page_grace < 1:
        raise UsageError(f"--page-grace must be at least 1 second, got {args.page_grace}")
    if not 0 <= args.pool <= MAX_POOL:
        raise UsageError(f"--pool must be between 0 and {MAX_POOL} kernels, got {args.pool}")
    try:
        import voila  # noqa: F401 - checked before anything starts
    except ImportError:
        raise UsageError("pneumo explore needs Voilà and ipywidgets: pip install -e '.[explore]'") from None
    _check_address(args.host, args.port)
    session = explore.resolve(args.run, args.model, args.data_dir)  # bad paths: one line, exit 2
    if not session.scores and session.run_dir is None:
        raise UsageError(
            "--model without --run: no run's per-image scores to explore, and no data set found to "
            "score (give --run RUN_DIR, or --data-dir DIR to score its validation split)"
        )
    if not session.scores:
        raise UsageError(
            f"{session.run_dir}: no per-image scores (metrics/scores_validation.csv); "
            "run notebook 03 on it (pneumo run) first"
        )
    from pneumo_utils import explore_service

    # the shared part, once for every page: TensorFlow, the model, its gate, the scored splits' tables (a broken
    # model is refused here, in one line); each page's kernel stays thin and asks this process over loopback
    service = explore_service.ModelService(session)
    address, key = service.start()
    service.warm_up()  # the first page's heatmap, in the background while Voilà starts
    environment = {
        **os.environ,
        explore.MODEL_ENV: str(session.model_path),
        explore_service.ADDRESS_ENV: address,
        explore_service.KEY_ENV: key,
        "PYTHONWARNINGS": "ignore::DeprecationWarning",
    }
    environment[explore.RUN_ENV] = str(session.run_dir) if session.run_dir else ""
    if session.data_root:
        environment[explore.DATA_ENV] = str(session.data_root)
    log = Path(args.log) if args.log else DEFAULT_LOG
    print(
        f"explorer: http://{args.host}:{args.port}/ (model {config.portable_path(session.model_path)}; "
        f"log {args.log or config.portable_path(log)}; Ctrl-C stops it)",
        flush=True,
    )
    if session.data_problem:
        print(f"warning: {session.data_problem}", file=sys.stderr, flush=True)
    from pneumo_utils.runs import voila_template

    # the page's icon font and styles come from this server, not a CDN: a classroom without internet works
    with tempfile.TemporaryDirectory(prefix="pneumo-explore-") as jupyter_path:
        try:
            voila_template.write_template(jupyter_path)
        except voila_template.TemplateError as error:
            raise UsageError(str(error)) from None
        environment["JUPYTER_PATH"] = os.pathsep.join(filter(None, [jupyter_path, os.environ.get("JUPYTER_PATH")]))
        command = voila_command(
            args.port,
            args.host,
            not args.no_browser,
            args.cull_idle_timeout,
            template=voila_template.NAME,
            pool=args.pool,
            page_grace=args.page_grace,
        )
        try:
            return serve.serve(command, log, environment)
        finally:
            service.close()
            with open(log, "a", encoding="utf-8") as record:  # pneumo bench explore reads it
                record.write(f"model service: {json.dumps(service.stats(), sort_keys=True)}\n")


def _command_markdown(args: argparse.Namespace) -> int:
    """``pneumo report RUN_DIR --markdown``: RUN_DIR/README.md (the results in full, from the run's files). The
    committed run's pages are written by ``pneumo promote`` (``pneumo promote results`` rewrites only them)."""
    from pneumo_utils import outputs
    from pneumo_utils.runs import results_page

    run_dir = Path(args.run_dir)
    output = Path(args.output) if args.output else run_dir / "README.md"
    if args.pdf:
        raise UsageError("--pdf prints the HTML report; it does not go with --markdown")
    if args.png:
        raise UsageError("--png pictures the HTML report; it does not go with --markdown")
    outputs.refuse_committed(output, "the output (pneumo promote results writes the committed pages)")
    refuse_existing(output, args.overwrite)
    page = results_page.results_markdown(run_dir)
    return save(output, page.encode("utf-8"), args.overwrite)


def _command_report(args: argparse.Namespace) -> int:
    from pneumo_utils import outputs
    from pneumo_utils.runs import report

    if args.markdown:
        return _command_markdown(args)
    run_dir = Path(args.run_dir)
    output = Path(args.output) if args.output else run_dir / "report.html"
    pdf = output.with_suffix(".pdf") if args.pdf else None
    png = output.with_suffix(".png") if args.png else None
    outputs.refuse_committed(output, "the report (pneumo promote writes the committed run's report)")
    for path in (output, pdf, png):
        refuse_existing(path, args.overwrite)
    status = save(output, report.build_report(run_dir).encode("utf-8"), args.overwrite)
    if status == 0 and pdf is not None:
        status = save(pdf, report.print_pdf(output), args.overwrite)
    if status == 0 and png is not None:
        status = save(png, report.screenshot_png(output), args.overwrite)
    return status


def register(commands) -> None:
    """Add this module's command(s) to the ``pneumo`` parser."""
    explore = commands.add_parser("explore", help="the interactive explorer (notebook 05) as a web app (Voilà)")
    explore.add_argument(
        "--run", default=None, metavar="DIR", help="a run folder to explore (default: the committed run, results/)"
    )
    explore.add_argument("--model", default=None, metavar="PATH", help="the model (default: the run's)")
    explore.add_argument("--data-dir", default=None, help="where the run's images are (default: as recorded)")
    explore.add_argument("--port", type=int, default=8866)
    explore.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    explore.add_argument("--no-browser", action="store_true", help="do not open a browser")
    explore.add_argument(
        "--log",
        default=None,
        metavar="FILE",
        help="where the server's and its kernels' output goes (default: runs/explorer.log)",
    )
    explore.add_argument(
        "--cull-idle-timeout",
        type=int,
        default=300,
        metavar="SECONDS",
        help="shut down the kernel of a page that is gone after this many idle seconds "
        "(default 300; a page still open keeps its kernel)",
    )
    explore.add_argument(
        "--page-grace",
        type=int,
        default=300,
        metavar="SECONDS",
        help="a page still loading keeps its kernel this long before --cull-idle-timeout applies (default 300)",
    )
    explore.add_argument(
        "--pool",
        type=int,
        default=0,
        metavar="N",
        help="keep N kernels with the notebook already run, so N pages opened at once are ready sooner "
        f"(about 100 MB each; default 0; at most {MAX_POOL})",
    )
    explore.set_defaults(handler=_command_explore)

    report = commands.add_parser("report", help="one self-contained HTML report of a run (and a PDF with --pdf)")
    report.add_argument("run_dir", help="the run folder (runs/<profile>-<time>, or results/ for the committed run)")
    report.add_argument(
        "--output",
        default=None,
        metavar="FILE",
        help="default: RUN_DIR/report.html (RUN_DIR/README.md with --markdown)",
    )
    report.add_argument("--pdf", action="store_true", help="also print it to PDF (beside it) with headless Chromium")
    report.add_argument(
        "--png", action="store_true", help="also save a full-page screenshot (beside it; needs Playwright)"
    )
    report.add_argument(
        "--markdown",
        action="store_true",
        help="write the results in full as Markdown instead (default: RUN_DIR/README.md; the "
        "committed run's pages are written by pneumo promote)",
    )
    report.add_argument("--overwrite", action="store_true", help="replace an existing report")
    report.set_defaults(handler=_command_report)
