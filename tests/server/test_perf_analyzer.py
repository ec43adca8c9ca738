"""NVIDIA perf_analyzer (the C++ binary from the tritonclient 2.41.0 wheel) against sonic serve.

``make test`` installs it with ``scripts/install_perf_analyzer.sh``; the test
fails, not skips, when it is missing, because it is part of the acceptance.
"""

from __future__ import annotations

import csv
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.perf_analyzer import perf_analyzer_path

pytestmark = pytest.mark.perf_analyzer

SERVER_COLUMNS = ["Server Queue", "Server Compute Input", "Server Compute Infer",
                  "Server Compute Output"]  # fmt: skip


@pytest.mark.parametrize(
    ("protocol", "extra"),
    [("grpc", []), ("http", []), ("grpc", ["--streaming"]), ("http", ["-b", "8"])],
    ids=["grpc", "http", "grpc-streaming", "http-batch8"],
)
def test_perf_analyzer_reports_server_breakdown(
    server: Any, tmp_path: Path, protocol: str, extra: list[str]
) -> None:
    url = server.grpc_url if protocol == "grpc" else server.http_url
    out = tmp_path / "pa.csv"
    proc = subprocess.run(
        [perf_analyzer_path(), "-m", "mlp", "-u", url, "-i", protocol, "--concurrency-range", "1:2",
         "--measurement-interval", "400", "-s", "50", "-r", "20", "-f", str(out), *extra],
        capture_output=True, text=True, timeout=240, env=dict(os.environ),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Server:" in proc.stdout and "compute infer" in proc.stdout, proc.stdout
    with out.open() as f:
        rows = list(csv.DictReader(f))
    assert sorted(int(r["Concurrency"]) for r in rows) == [1, 2]
    for row in rows:
        assert float(row["Inferences/Second"]) > 0
        for col in SERVER_COLUMNS:
            assert col in row, list(row)
        assert int(row["Server Compute Infer"]) > 0


def test_perf_analyzer_shapes_and_zero_data(server: Any) -> None:
    proc = subprocess.run(
        [perf_analyzer_path(), "-m", "identity_fp32", "-u", server.grpc_url, "-i", "grpc",
         "--shape", "INPUT0:32", "--input-data", "zero", "-b", "2", "-p", "300", "-s", "50",
         "-r", "20"],
        capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Throughput" in proc.stdout
