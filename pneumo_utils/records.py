"""Provenance and atomic JSON writing: what is recorded next to every result, and how it is written."""

from __future__ import annotations

import datetime as _dt
import math
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from pneumo_utils.config import PROJECT_ROOT


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
    for name, distribution in (("tensorflow", "tensorflow"), ("keras", "keras"), ("numpy", "numpy"),
                               ("opencv", "opencv-python-headless"), ("scikit-learn", "scikit-learn"),
                               ("pneumo-utils", "pneumo-utils")):
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


def finite(value: Any) -> Any:
    """NaN and infinity become null: strict JSON has no NaN, and "not measurable" is what they mean here."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [finite(item) for item in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:  # numpy scalars
        return finite(value.item())
    return value


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` whole or not at all (see :mod:`pneumo_utils.outputs`)."""
    from pneumo_utils import outputs

    return outputs.write_text(path, text)


def write_json_atomic(path: str | os.PathLike, payload: Any) -> Path:
    """Write strict JSON (NaN as null) whole or not at all, replacing ``path`` (see :mod:`pneumo_utils.outputs`)."""
    from pneumo_utils import outputs

    return outputs.write_json(path, payload)
