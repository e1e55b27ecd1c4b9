"""What every ``pneumo`` command shares: usage errors, ``-p`` parsing and the one way to save a result."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from pneumo_utils import config, reading
from pneumo_utils.outputs import json_bytes  # noqa: F401 - the commands' one JSON serializer

DATA_HELP = "data set root (default: $PNEUMO_DATA_DIR, then data/chest_xray)"
DEFAULT_MODEL = config.SAVED_MODEL


class UsageError(Exception):
    """Bad command-line input: exit code 2."""


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``["epochs=3", "resume=true"]`` -> ``{"epochs": 3, "resume": True}`` (values parsed as YAML)."""
    overrides = {}
    for pair in pairs:
        key, separator, value = pair.partition("=")
        if not separator or not key.strip():
            raise UsageError(f"-p expects key=value, got {pair!r}")
        source = f"-p {pair}" if len(pair) <= 80 else f"-p {key.strip()}=..."
        try:
            overrides[key.strip()] = reading.parse_yaml(value, source, reading.VALUE_LIMIT, "the value")
        except reading.FileRefused as error:
            raise UsageError(str(error)) from None
    return overrides


def positive_int(text: str) -> int:
    """An argparse type: an integer of at least 1 (a batch size, a count)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def refuse_existing(output: Path | None, overwrite: bool) -> None:
    """Before any work: an output that exists (and no --overwrite), or that is a folder, is a usage error."""
    from pneumo_utils import outputs

    if output is None:
        return
    try:
        outputs.refuse_existing(output, overwrite)
    except outputs.OutputError as error:
        raise UsageError(str(error)) from None


def save(output: Path, payload: bytes, overwrite: bool) -> int:
    """Write one finished result (exclusive unless --overwrite); on failure say so in one line, keep the
    work in a rescue file, and return exit status 1."""
    from pneumo_utils import outputs

    written, problem = outputs.save_or_rescue(output, payload, overwrite)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 1
    print(f"wrote {outputs.display(written)}", file=sys.stderr)
    return 0
