"""``sonic perf`` against a real server, side by side with NVIDIA perf_analyzer's own files."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sonic.launcher import LocalServer
from sonic.zoo.examples import write_model
from tests.conftest import SIMPLE_CONFIG, write_mlp
from tests.fixtures.perf_analyzer import run_perf_analyzer

#: perf_analyzer's CSV columns whose averages add up to the average request latency.
LATENCY_STAGES = ("Client Send", "Network+Server Send/Recv", "Server Queue", "Server Compute Input",
                  "Server Compute Infer", "Server Compute Output", "Client Recv")
FAST = ["-p", "300", "-s", "100", "-r", "10"]  # short windows; a loose bound on a busy machine


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    repo = tmp_path_factory.mktemp("repo")
    write_mlp(repo)
    with LocalServer(repo, "--allow-client-shm=true") as srv:
        yield srv


def sonic_perf(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sonic.cli", "perf", *map(str, args)],
                          capture_output=True, text=True, timeout=300)  # fmt: skip


def once_more_if_unstable(tool: Callable[..., subprocess.CompletedProcess[str]],
                          *args: object) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """``tool(*args)``, run a second time where it found no stable window: the tests that
    compare files need a finished run, and 300 ms windows on a loaded 2-core machine sometimes
    stay unstable for all ten trials."""
    done = tool(*args)
    if done.returncode != 0 and "Failed to obtain stable measurement" in done.stdout + done.stderr:
        done = tool(*args)
    return done


def rows(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def header(path: Path) -> bytes:
    """The first line as bytes, with its line end: scripts read perf_analyzer's files raw."""
    data = path.read_bytes()
    return data[: data.index(b"\n") + 1]


@pytest.mark.parametrize("extra", [
    ["--concurrency-range", "1:2"],
    ["--concurrency-range", "1", "--verbose-csv"],
    ["--request-rate-range", "100"],
    ["--concurrency-range", "1", "--percentile", "95"],
])  # fmt: skip
def test_csv_header_equals_perf_analyzer(server: LocalServer, tmp_path: Path,
                                         extra: list[str]) -> None:  # fmt: skip
    common = ["-m", "mlp", "-u", server.grpc_url, "-i", "grpc", *FAST, *extra]
    pa = once_more_if_unstable(run_perf_analyzer, *common, "-f", tmp_path / "pa.csv")
    assert pa.returncode == 0, pa.stdout + pa.stderr
    ours = once_more_if_unstable(sonic_perf, *common, "-f", tmp_path / "sonic.csv")
    assert ours.returncode == 0, ours.stdout + ours.stderr
    assert header(tmp_path / "sonic.csv") == header(tmp_path / "pa.csv")
    assert len(rows(tmp_path / "sonic.csv")) == len(rows(tmp_path / "pa.csv"))
    for name in ("sonic.csv", "pa.csv"):  # the same line ends throughout, and a last one
        data = (tmp_path / name).read_bytes()
        assert b"\r" not in data and data.endswith(b"\n"), name


def test_measures_like_perf_analyzer(server: LocalServer, tmp_path: Path) -> None:
    out = tmp_path / "s.csv"
    r = sonic_perf("-m", "mlp", "-u", server.grpc_url, "-i", "grpc", "-b", 4, *FAST,
                   "--concurrency-range", "1:4:3", "-f", out, "--profile-export-file",
                   tmp_path / "p.json")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "Request concurrency: 4" in r.stdout and "Avg request latency" in r.stdout
    (c1, c4) = sorted(rows(out), key=lambda x: int(x["Concurrency"]))
    # Little's law ties each row's throughput to its latency (the stages' averages add up to
    # it, as in perf_analyzer's file): a closed loop keeps `concurrency` requests of 4 out.
    # Whether 4 beats 1 is left out: on a busy 2-core machine it need not.
    for row in (c1, c4):
        latency_us = sum(int(row[c]) for c in LATENCY_STAGES)
        expected = int(row["Concurrency"]) * 4 / (latency_us / 1e6)
        assert 0.75 < float(row["Inferences/Second"]) / expected < 1.25, row
    assert int(c1["Server Compute Infer"]) > 0 and int(c1["p99 latency"]) >= int(c1["p50 latency"])
    export = json.loads((tmp_path / "p.json").read_text())
    assert [e["experiment"] for e in export["experiments"]] == [
        {"mode": "concurrency", "value": 1}, {"mode": "concurrency", "value": 4}]
    req = export["experiments"][0]["requests"][0]
    assert req["response_timestamps"][0] > req["timestamp"] > 1.7e18  # epoch ns


@pytest.mark.parametrize("extra", [
    ["-i", "http"],
    ["-i", "grpc", "--shared-memory", "system"],
    ["-i", "http", "--shared-memory", "system"],
    ["-i", "grpc", "--measurement-mode", "count_windows", "--measurement-request-count", "30"],
    ["-i", "grpc", "--request-rate-range", "200", "--request-distribution", "poisson"],
    ["-i", "grpc", "--processes", "2", "--concurrency-range", "2"],
    # 16 kB requests: the completion-callback sender, in two spawned processes.
    ["-i", "grpc", "-b", "64", "--processes", "2", "--concurrency-range", "4"],
    ["-i", "grpc", "--input-data", "zero", "-H", "x-job:test"],
])  # fmt: skip
def test_modes(server: LocalServer, tmp_path: Path, extra: list[str]) -> None:
    url = server.http_url if "http" in extra else server.grpc_url
    r = sonic_perf("-m", "mlp", "-u", url, *FAST, *extra, "-f", tmp_path / "s.csv")
    assert r.returncode == 0, r.stdout + r.stderr
    (row,) = rows(tmp_path / "s.csv")
    assert float(row["Inferences/Second"]) > 0
    if "--request-rate-range" in extra:
        assert 100 < float(row["Inferences/Second"]) < 300


def test_json_input_data_steps(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    from sonic.zoo.examples import simple_model

    write_model(simple_model(), repo, "simple", config=SIMPLE_CONFIG)
    data = tmp_path / "data.json"
    data.write_text(json.dumps({"data": [
        {"INPUT0": list(range(16)), "INPUT1": [1] * 16},
        {"INPUT0": {"content": [2] * 16, "shape": [16]}, "INPUT1": [3] * 16},
    ]}))  # fmt: skip
    with LocalServer(repo) as srv:
        r = sonic_perf("-m", "simple", "-u", srv.grpc_url, "-i", "grpc", *FAST,
                       "--input-data", data)  # fmt: skip
        assert r.returncode == 0, r.stdout + r.stderr
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps({"data": [{"INPUT0": [1] * 16}]}))
        r = sonic_perf("-m", "simple", "-u", srv.grpc_url, "-i", "grpc", "--input-data", bad)
        assert r.returncode == 2 and "lacks input(s) ['INPUT1']" in r.stderr


def test_errors_are_clear(server: LocalServer) -> None:
    r = sonic_perf("-m", "nosuch", "-u", server.grpc_url, "-i", "grpc")
    assert r.returncode == 1 and "nosuch" in r.stderr
    r = sonic_perf("-m", "mlp", "-u", server.grpc_url, "-i", "grpc", "-b", 1000)
    assert r.returncode == 2 and "max_batch_size 256" in r.stderr
    r = sonic_perf("-m", "mlp", "-u", server.grpc_url, "--concurrency-range", "4:1")
    assert r.returncode == 2 and "start <= end" in r.stderr
    # A stability bound of 0% is never met: perf_analyzer's failure message and exit code.
    r = sonic_perf("-m", "mlp", "-u", server.grpc_url, "-i", "grpc", "-p", 200, "-s", 0, "-r", 3)
    assert r.returncode == 2 and "Failed to obtain stable measurement within 3" in r.stderr
