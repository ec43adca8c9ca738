"""The `sonic` processes pick grpc's transport before grpc loads
(see sonic.server.settings.GRPC_EXPERIMENTS)."""

from __future__ import annotations

import os
import subprocess
import sys

from sonic.server.settings import GRPC_EXPERIMENTS

PROBE = """
import os, sys
from sonic.cli import main
assert "grpc" not in sys.modules, "grpc loaded before the command chose its transport"
try:
    main(["serve", "--help"])
except SystemExit:
    pass
print(os.environ.get("GRPC_EXPERIMENTS"))
"""


def _probe(env: dict[str, str]) -> str:
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True,
                         check=True, timeout=60)  # fmt: skip
    return out.stdout.strip().splitlines()[-1]


def test_cli_selects_grpc_transport_unless_set() -> None:
    env = {k: v for k, v in os.environ.items() if k != "GRPC_EXPERIMENTS"}
    assert _probe(env) == GRPC_EXPERIMENTS
    assert _probe({**env, "GRPC_EXPERIMENTS": "-event_engine_dns"}) == "-event_engine_dns"
