"""``python -m facekit``: the ``facekit`` command, for environments where the console script is not on PATH."""

from facekit.cli import main

main()
