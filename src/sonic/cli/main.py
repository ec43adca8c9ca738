"""The ``sonic`` command: the group, and where each subcommand comes from.

- ``sonic serve``: :mod:`sonic.cli.serve` (tritonserver's flags);
- ``sonic repo``: :mod:`sonic.cli.repo`;
- ``sonic sample``, ``sonic workflow``: :mod:`sonic.cli.workflow`;
- ``sonic perf``, ``sonic plan``: :mod:`sonic.cli.perf`;
- ``sonic gateway``, ``sonic demo``: :mod:`sonic.cli.ops`.

Subcommands import what they run inside their bodies, so ``sonic --help`` and
``sonic serve`` do not pay for PyTorch, TensorFlow or uproot.
"""

from __future__ import annotations

import os

import click

from sonic import __version__
from sonic.cli.ops import demo, gateway
from sonic.cli.perf import perf, plan_cmd
from sonic.cli.repo import repo
from sonic.cli.serve import serve
from sonic.cli.workflow import sample, workflow
from sonic.server.settings import GRPC_EXPERIMENTS


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sonic")
def main() -> None:
    """SONIC in Python: inference as a service for particle-physics computing."""
    # Read once, when grpc first loads: every subcommand imports grpc after this.
    os.environ.setdefault("GRPC_EXPERIMENTS", GRPC_EXPERIMENTS)


for command in (serve, repo, sample, workflow, perf, plan_cmd, gateway, demo):
    main.add_command(command)
