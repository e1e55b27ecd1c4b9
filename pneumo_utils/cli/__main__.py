"""``python -m pneumo_utils.cli``: the same as the ``pneumo`` command."""

import sys

from pneumo_utils.cli import main

sys.exit(main())
