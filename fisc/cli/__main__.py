"""``python -m fisc.cli``: the ``fisc`` command."""

import sys

from fisc.cli import main

sys.exit(main())
