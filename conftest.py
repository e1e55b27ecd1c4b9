"""Test-wide set-up.

- Notebooks run by nbval pick the smoke profile and write into a temporary folder (the kernel inherits
  these environment variables), so the tests never touch results/ or saved_models/.
- Source notebooks are committed without outputs, so the reference outputs of the cells marked
  ``# NBVAL_CHECK_OUTPUT`` live in ``tests/nbval_reference.json`` (keyed by notebook and cell id) and are
  put into nbval's items here; nbval then compares them as usual. Regenerate them with
  ``python tests/nbval_reference.py`` after a deliberate change.
"""

import json
import os
import tempfile
from pathlib import Path

from nbformat.v4 import new_output

os.environ.setdefault("PNEUMO_PROFILE", "smoke")
os.environ.setdefault("PNEUMO_OUTPUT_DIR", tempfile.mkdtemp(prefix="pneumo-nbval-"))

REFERENCE_FILE = Path(__file__).parent / "tests" / "nbval_reference.json"
CHECK_MARK = "NBVAL_CHECK_OUTPUT"


def pytest_collection_modifyitems(session, config, items):
    reference = json.loads(REFERENCE_FILE.read_text()) if REFERENCE_FILE.exists() else {}
    for item in items:
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
