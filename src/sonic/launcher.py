"""Start ``sonic serve`` as a subprocess on free loopback ports, and stop it cleanly.

Used by the demo, the tests, the benchmarks and (later) the client's local
fallback server.  It depends only on the standard library and the CLI, never
on server internals, so the client can use it too.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """``n`` distinct ports that were free a moment ago (bind to port 0)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class LocalServer:
    """A ``sonic serve`` process; use as a context manager or call start/stop."""

    def __init__(
        self,
        model_repositories: list[Path] | Path,
        *extra_args: str,
        host: str = "127.0.0.1",
        command: list[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        repos = (
            [model_repositories]
            if isinstance(model_repositories, Path | str)
            else list(model_repositories)
        )
        self.repos = [Path(r) for r in repos]
        self.host = host
        self.http_port, self.grpc_port, self.metrics_port = free_ports(3, host)
        self.extra_args = list(extra_args)
        self.command = command or [sys.executable, "-m", "sonic.cli", "serve"]
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self._log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - lives as long as the server
            prefix="sonic-serve-", suffix=".log", delete=False
        )

    @property
    def http_url(self) -> str:
        return f"{self.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"

    def args(self) -> list[str]:
        args = [*self.command]
        for r in self.repos:
            args.append(f"--model-repository={r}")
        args += [
            f"--http-port={self.http_port}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-port={self.metrics_port}",
            f"--http-address={self.host}",
            f"--grpc-address={self.host}",
            f"--metrics-address={self.host}",
            *self.extra_args,
        ]
        return args

    def start(self, timeout_s: float = 60.0) -> LocalServer:
        env = dict(os.environ if self.env is None else self.env)
        self.proc = subprocess.Popen(
            self.args(), stdout=self._log, stderr=subprocess.STDOUT, env=env
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                log = self.log()
                self._log.close()
                raise RuntimeError(
                    f"sonic serve exited with {self.proc.returncode} during start-up:\n{log}"
                )
            if self._ready():
                return self
            time.sleep(0.05)
        self.stop()
        log = self.log()
        self._log.close()
        raise TimeoutError(f"sonic serve was not ready within {timeout_s}s:\n{log}")

    def _ready(self) -> bool:
        """The server's own "ready" line (printed once every listener is up, whatever TLS or
        credentials its HTTP port wants), or plain HTTP /v2/health/ready (other servers)."""
        if "sonic server ready" in self.log():
            return True
        try:
            url = f"http://{self.http_url}/v2/health/ready"
            with urllib.request.urlopen(url, timeout=1) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            return False

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM, wait for the drain, SIGKILL only if it hangs; returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def log(self) -> str:
        with contextlib.suppress(OSError):
            return Path(self._log.name).read_text(errors="replace")
        return ""

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
        self._log.close()
        with contextlib.suppress(OSError):
            os.unlink(self._log.name)
