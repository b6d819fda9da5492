"""``python -m gpenguard``."""

from gpenguard.cli import main

main()
