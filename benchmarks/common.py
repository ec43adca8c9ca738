"""What the benchmark scripts share: a command line whose --help is the script's docstring, and
generated samples cached between runs."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

#: Where generated samples are kept between runs.
SAMPLES = Path(__file__).resolve().parents[1] / "build" / "bench"


def arguments(doc: str | None) -> argparse.ArgumentParser:
    """An argument parser that prints the script's docstring (how to run it, what it measures)
    as written, line breaks included."""
    return argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)


def cached_sample(name: str, events: int, **options: Any) -> Path:
    """``build/bench/v<SAMPLE_VERSION>-<name>-<events>.root``: generated once
    (``sonic.workflow.generate_sample`` with ``options``), reused after; the name must say what
    the options chose, the version which generator made it."""
    from sonic.workflow.generate import SAMPLE_VERSION, generate_sample

    path = SAMPLES / f"v{SAMPLE_VERSION}-{name}-{events}.root"
    if not path.exists():
        print(f"generating {path}", flush=True)
        generate_sample(path, events, **options)
    return path
