"""Import TensorFlow without its start-up log lines on the terminal.

TensorFlow's C++ core writes INFO lines (oneDNN, missing CUDA drivers) to file descriptor 2 while it is
imported and first looks for devices, before any Python setting can silence them. The command line
catches that output and replays everything except those known lines, so a user sees only what matters
(an error stays visible).
"""

from __future__ import annotations

import os
import re
import sys
import tempfile

_NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\)|[IW]\d{4} |E\d{4} .*(cuInit|cuda|CUDA)|"
    r".*(oneDNN custom operations|cuda drivers|TF_ENABLE_ONEDNN_OPTS|rebuild TensorFlow with the appropriate)).*"
)


def import_tensorflow_quietly() -> None:
    if "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow

            threads = os.environ.get("PNEUMO_TF_THREADS")  # set per worker by `pneumo sweep`
            if threads and threads.isdigit() and int(threads) > 0:
                tensorflow.config.threading.set_intra_op_parallelism_threads(int(threads))
                tensorflow.config.threading.set_inter_op_parallelism_threads(int(threads))
            tensorflow.config.list_logical_devices()  # device start-up logs its own lines (cuInit)
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode(errors="replace").splitlines():
                if line.strip() and not _NOISE.match(line):
                    print(line, file=sys.stderr)
