"""``pneumo index``: a data set's layout, counts, duplicates, unreadable files and label conflicts."""

from __future__ import annotations

import argparse
import json
import sys

from pneumo_utils import config
from pneumo_utils.cli.common import (
    DATA_HELP,
)


def _command_index(args: argparse.Namespace) -> int:
    from pneumo_utils import data

    index = data.index_dataset(config.resolve_data_dir(args.data_dir))
    report = data.summary(index, config.resolve_data_dir(args.data_dir)) | data.problems(index)
    print(json.dumps(report, indent=2, default=int))
    for line in report["unreadable"]:
        print(f"unreadable: {line}", file=sys.stderr)
    for conflict in report["label_conflicts"]:
        print(
            f"label conflict: {conflict['files']} ({conflict['labels']}, splits {conflict['splits']})", file=sys.stderr
        )
    for line in data.layout_warnings(config.resolve_data_dir(args.data_dir)):
        if "label conflict" not in line:  # listed one by one above
            print(f"warning: {line}", file=sys.stderr)
    return 0


def register(commands) -> None:
    """Add this module's command(s) to the ``pneumo`` parser."""
    index = commands.add_parser("index", help="check a data set's layout; print counts, fingerprint, duplicates")
    index.add_argument("--data-dir", default=None, help=DATA_HELP)
    index.set_defaults(handler=_command_index)
