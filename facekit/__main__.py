"""``python -m facekit``: the ``facekit`` command, for environments where the console script is not on PATH."""

import sys

from facekit.cli import main

sys.exit(main())
