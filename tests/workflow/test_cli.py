"""``sonic sample`` and ``sonic workflow run`` as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import uproot

from tests.workflow.conftest import MODEL


def sonic(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sonic.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=300)  # fmt: skip


def test_sample_then_run(tmp_path: Path) -> None:
    sample = tmp_path / "s.root"
    r = sonic("sample", sample, "--events", 5, "--pileup", 2, "--pool-size", 4, "--seed", 3,
              "--process", "znunu")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert uproot.open(sample)["Events"].num_entries == 5
    summary = tmp_path / "summary.json"
    r = sonic("workflow", "run", sample, "--model", MODEL, "--output-dir", tmp_path / "out",
              "--json", summary, "--chunk-size", 2)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "5 events" in r.stdout and "infer_client" in r.stdout
    result = json.loads(summary.read_text())
    assert result["events"] == 5 and result["events_per_s"] > 0
    assert Path(result["outputs"][0]).exists()


def test_sample_pileup_scan_writes_a_file_per_value(tmp_path: Path) -> None:
    r = sonic("sample", tmp_path / "scan.root", "--events", 2, "--pileup", 0, "--pileup", 3,
              "--pool-size", 4, "--process", "zmumu")  # fmt: skip
    assert r.returncode == 0, r.stderr
    for pu, most in ((0, 0), (3, 20)):
        n_pu = uproot.open(tmp_path / f"scan-pu{pu}.root")["Events"]["Pileup_nPU"].array()
        assert len(n_pu) == 2 and max(n_pu) <= most


def test_bad_arguments_are_named(tmp_path: Path) -> None:
    r = sonic("sample", tmp_path / "x.root", "--process", "wjets")
    assert r.returncode == 2 and "wjets" in r.stderr
    r = sonic("workflow", "run", tmp_path / "missing.root")
    assert r.returncode == 2 and "missing.root" in r.stderr
