"""The ``sonic`` command: one module per command group, registered in :mod:`~sonic.cli.main`."""

from sonic.cli.main import main

__all__ = ["main"]
