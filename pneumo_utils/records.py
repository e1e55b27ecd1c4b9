"""Provenance and atomic JSON writing: what is recorded next to every result, and how it is written."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
from typing import Any

from pneumo_utils.config import PROJECT_ROOT
from pneumo_utils.outputs import finite, write_json, write_text  # noqa: F401 - finite: re-exported


def git_commit() -> str | None:
    """The project's current commit, or None outside a git checkout."""
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=10, check=True
        )
        return result.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shape results, read from package metadata (nothing is imported)."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {"python": platform.python_version()}
    for name, distribution in (
        ("tensorflow", "tensorflow"),
        ("keras", "keras"),
        ("numpy", "numpy"),
        ("opencv", "opencv-python-headless"),
        ("scikit-learn", "scikit-learn"),
        ("pneumo-utils", "pneumo-utils"),
    ):
        try:
            versions[name] = version(distribution)
        except PackageNotFoundError:
            continue
    return versions


def provenance() -> dict[str, Any]:
    """Date, git commit, library versions and machine: recorded beside every result."""
    return {
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "versions": library_versions(),
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count()},
    }


# the one atomic writer (outputs), under the names the records read well with
write_text_atomic = write_text
write_json_atomic = write_json
