"""Regenerate ``tests/nbval_reference.json``: the stdout of every ``# NBVAL_CHECK_OUTPUT`` cell when the
notebooks run on the smoke profile. Run it after a deliberate change to those cells' output:

    python tests/nbval_reference.py
"""

import json
import sys
import tempfile
from pathlib import Path

import nbformat

from pneumo_utils.runs.pipeline import run_notebooks

REFERENCE_FILE = Path(__file__).with_name("nbval_reference.json")


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="pneumo-reference-") as output_dir:
        run_notebooks(profile="smoke", output_dir=output_dir, progress_bar=False)
        reference = {}
        for path in sorted((Path(output_dir) / "executed").glob("*.ipynb")):
            for cell in nbformat.read(path, as_version=4).cells:
                if cell.cell_type == "code" and "NBVAL_CHECK_OUTPUT" in cell.source:
                    text = "".join(out.get("text", "") for out in cell.outputs if out.get("name") == "stdout")
                    reference.setdefault(path.name, {})[cell.id] = text
    REFERENCE_FILE.write_text(json.dumps(reference, indent=2) + "\n")
    print(f"wrote {REFERENCE_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
