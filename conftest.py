"""Test-wide set-up.

- Notebooks run by nbval pick the smoke profile and write into a temporary folder (the kernel inherits
  these environment variables), so the tests never touch results/ or saved_models/.
- Source notebooks are committed without outputs, so the reference outputs of the cells marked
  ``# NBVAL_CHECK_OUTPUT`` live in ``tests/nbval_reference.json`` (keyed by notebook and cell id) and are
  put into nbval's items here; nbval then compares them as usual. Regenerate them with
  ``python tests/nbval_reference.py`` after a deliberate change.
"""

import atexit
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from nbformat.v4 import new_output

os.environ.setdefault("PNEUMO_PROFILE", "smoke")
_SHARED_WEIGHTS = Path(__file__).resolve().parent.parent / "shared" / "weights"
if _SHARED_WEIGHTS.is_dir():  # this workspace's copy of Keras's files; a user's machine has Keras's cache instead
    os.environ.setdefault("PNEUMO_WEIGHTS_DIR", str(_SHARED_WEIGHTS))
if "PNEUMO_OUTPUT_DIR" not in os.environ:  # made by the first process (xdist's workers inherit it), removed by it
    _NBVAL_OUTPUT = tempfile.mkdtemp(prefix="pneumo-nbval-")
    os.environ["PNEUMO_OUTPUT_DIR"] = _NBVAL_OUTPUT
    atexit.register(shutil.rmtree, _NBVAL_OUTPUT, ignore_errors=True)

REFERENCE_FILE = Path(__file__).parent / "tests" / "nbval_reference.json"
CHECK_MARK = "NBVAL_CHECK_OUTPUT"


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist turns the group marker into the item's id suffix
def pytest_collection_modifyitems(session, config, items):
    reference = json.loads(REFERENCE_FILE.read_text()) if REFERENCE_FILE.exists() else {}
    for item in items:
        if "notebooks" in item.path.parts:  # here, not in tests/: `pytest notebooks` alone must group them too
            item.add_marker(pytest.mark.xdist_group("notebooks"))
        cell = getattr(item, "cell", None)
        if cell is None or CHECK_MARK not in cell.get("source", ""):
            continue
        notebook = Path(str(item.fspath)).name
        expected = reference.get(notebook, {}).get(cell.get("id"))
        if expected is None:
            raise LookupError(
                f"{notebook}: no reference output for checked cell {cell.get('id')!r} in {REFERENCE_FILE}"
            )
        cell["outputs"] = [new_output("stream", name="stdout", text=expected)]
        cell["execution_count"] = 1


@pytest.hookimpl(optionalhook=True)  # a pytest-xdist hook, called in the controller with each worker's item ids
def pytest_xdist_node_collection_finished(node, ids):
    """Fail loudly when the notebooks would not run on one worker, in order: under ``--dist loadgroup`` every
    notebook item's id must carry the ``@notebooks`` group (a pytest / pytest-xdist pair that loses the suffix
    spreads the cells over both workers, and each cell then fails on names made in the cells before it)."""
    if node.config.getoption("dist", "no") != "loadgroup":
        return
    lost = [nodeid for nodeid in ids if nodeid.startswith("notebooks/") and "@notebooks" not in nodeid]
    if lost:
        pytest.exit(
            f"{len(lost)} notebook item(s) lost their xdist group (first: {lost[0]}): this pytest "
            f"({pytest.__version__}) and pytest-xdist do not keep --dist loadgroup; install the versions "
            "pyproject.toml's test extra allows",
            returncode=4,
        )
