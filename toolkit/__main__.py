"""``python -m toolkit`` runs the ``strangler`` command (for environments without the console script)."""

from .cli import main

main()
