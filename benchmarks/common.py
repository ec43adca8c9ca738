"""What the benchmark scripts share: a command line whose --help is the script's docstring."""

from __future__ import annotations

import argparse


def arguments(doc: str | None) -> argparse.ArgumentParser:
    """An argument parser that prints the script's docstring (how to run it, what it measures)
    as written, line breaks included."""
    return argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
