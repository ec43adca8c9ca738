"""The atheris harness runs (a short run here; the benchmark runs 100,000+ inputs)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import atheris  # noqa: F401  (the fuzz engine)

HARNESS = Path(__file__).resolve().parents[2] / "benchmarks" / "fuzz_protocol.py"


def test_fuzz_harness_finds_nothing_in_a_short_run() -> None:
    run = subprocess.run([sys.executable, str(HARNESS), "-runs=3000", "--no-record"],
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Done 3000 runs" in run.stderr
