"""The L7 gateway on one machine: HAProxy in front of ``sonic serve`` replicas, and Prometheus.

``sonic gateway --replicas N`` starts N servers on free loopback ports, a real
Prometheus scraping them (for the admission check and dashboards), and HAProxy
with ``deploy/k8s/base/gateway/haproxy.cfg``, the same configuration the Kubernetes
deployment runs, on the public ports.  Requests are balanced per gRPC call
(least outstanding requests), a dead replica is taken out by health checks
and its connection errors redispatched, calls without a valid JWT are refused
when auth is on, and RepositoryIndex is refused while the load metric is over
its threshold.  HAProxy and Prometheus come from Debian's packages.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

GATEWAY_DIR = Path(__file__).resolve().parents[2] / "deploy" / "k8s" / "base" / "gateway"
QUEUE_PER_EXEC = ("sum(rate(nv_inference_queue_duration_us[30s])) / "
                  "sum(rate(nv_inference_exec_count[30s]) * 1000 + 0.001)")  # fmt: skip


def _wait_port(host: str, port: int, proc: subprocess.Popen[bytes], what: str,
               timeout: float = 30) -> None:  # fmt: skip
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex((host, port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"{what} did not listen on {host}:{port} within {timeout} s")


def backends_config(replicas: list[tuple[str, int, int]]) -> str:
    """HAProxy backends for static replicas: (host, grpc_port, http_port) each."""
    grpc = "\n".join(f"    server r{i} {h}:{g} proto h2 check port {p} check-proto h1 "
                     "inter 500ms fall 1 rise 2"
                     for i, (h, g, p) in enumerate(replicas))  # fmt: skip
    http = "\n".join(f"    server r{i} {h}:{p} check inter 500ms fall 1 rise 2"
                     for i, (h, _, p) in enumerate(replicas))  # fmt: skip
    check = "    option httpchk GET /v2/health/ready\n    http-check expect status 200\n"
    return (f"backend sonic_grpc\n    balance leastconn\n{check}{grpc}\n\n"
            f"backend sonic_http\n    balance leastconn\n{check}{http}\n")  # fmt: skip


def prometheus_config(targets: list[str], interval_s: float = 1.0) -> str:
    listed = ", ".join(f"'{t}'" for t in targets)
    every = f"{round(interval_s * 1000)}ms"  # Prometheus durations take no decimals
    return (f"global:\n  scrape_interval: {every}\n  evaluation_interval: {every}\n"
            f"scrape_configs:\n  - job_name: sonic\n    static_configs:\n"
            f"      - targets: [{listed}]\n")  # fmt: skip


class _Daemon:
    """A Debian-packaged daemon run in its own scratch directory, logging to a file there."""

    program = ""
    workdir: Path
    proc: subprocess.Popen[bytes] | None = None

    def _launch(self, args: list[str], env: dict[str, str] | None = None) -> None:
        exe = shutil.which(self.program)
        if exe is None:
            raise FileNotFoundError(
                f"{self.program} is not installed (scripts/install_deploy_tools.sh installs it)"
            )
        self._log = (self.workdir / f"{self.program}.log").open("wb")
        self.proc = subprocess.Popen([exe, *args], env=env, stdout=self._log,
                                     stderr=subprocess.STDOUT)  # fmt: skip

    def logs(self) -> str:
        return (self.workdir / f"{self.program}.log").read_text(errors="replace")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(30)
            self._log.close()
            self.proc = None
        shutil.rmtree(self.workdir, ignore_errors=True)


@dataclass
class Prometheus(_Daemon):
    """A real Prometheus server scraping ``targets`` (host:port of /metrics)."""

    program = "prometheus"
    targets: list[str]
    port: int
    interval_s: float = 1.0
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="sonic-prom-")))

    def start(self) -> Prometheus:
        cfg = self.workdir / "prometheus.yml"
        cfg.write_text(prometheus_config(self.targets, self.interval_s))
        data = self.workdir / "data"
        self._launch([f"--config.file={cfg}", f"--storage.tsdb.path={data}",
                      f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"])
        assert self.proc is not None
        try:
            _wait_port("127.0.0.1", self.port, self.proc, "prometheus")
            # Its discovery hands targets to the scrapers only every 5 s: wait for a first scrape.
            # Until its storage is open the HTTP API answers 503 on a listening port.
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    if len(self.query("up")) == len(self.targets):
                        return self
                except urllib.error.HTTPError as err:
                    if err.code != 503:
                        raise
                time.sleep(0.25)
            raise TimeoutError(f"prometheus scraped none of {self.targets} within 30 s:\n"
                               f"{self.logs()[-2000:]}")  # fmt: skip
        except BaseException:
            self.stop()  # never leave a half-started daemon behind
            raise

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.port}"

    def query(self, promql: str) -> list[dict]:
        """An instant query through the HTTP API; the result vector."""
        q = urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(f"http://{self.url}/api/v1/query?{q}", timeout=10) as r:
            doc = json.loads(r.read())
        if doc.get("status") != "success":
            raise RuntimeError(f"prometheus query failed: {doc}")
        return doc["data"]["result"]


@dataclass
class Gateway(_Daemon):
    """HAProxy with deploy/k8s/base/gateway/haproxy.cfg in front of static replicas."""

    program = "haproxy"
    replicas: list[tuple[str, int, int]]
    grpc_port: int
    http_port: int
    stats_port: int
    tls_crt: str = ""  # PEM with certificate and key: TLS on the public ports
    auth: str = "none"  # none | jwt
    jwt_alg: str = "HS256"
    jwt_key: str = ""
    jwt_issuer: str = ""  # the tokens' iss and aud; required with auth="jwt"
    jwt_audience: str = ""
    prometheus: str = ""
    admission_threshold: float = 0.0
    admission_query: str = QUEUE_PER_EXEC
    admission_interval_ms: int = 500
    bind: str = "127.0.0.1"
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="sonic-gw-")))

    def env(self) -> dict[str, str]:
        tls = {"GATEWAY_TLS_CRT": self.tls_crt} if self.tls_crt else {}
        return {**os.environ, **tls, "SONIC_GATEWAY_DIR": str(GATEWAY_DIR),
                "GATEWAY_BIND": self.bind,
                "GATEWAY_GRPC_PORT": str(self.grpc_port), "GATEWAY_HTTP_PORT": str(self.http_port),
                "GATEWAY_STATS_PORT": str(self.stats_port), "SONIC_AUTH": self.auth,
                "SONIC_JWT_ALG": self.jwt_alg, "SONIC_JWT_KEY": self.jwt_key,
                **({"SONIC_JWT_ISSUER": self.jwt_issuer} if self.jwt_issuer else {}),
                **({"SONIC_JWT_AUDIENCE": self.jwt_audience} if self.jwt_audience else {}),
                "PROMETHEUS_URL": self.prometheus,
                "ADMISSION_THRESHOLD": str(self.admission_threshold),
                "ADMISSION_QUERY": self.admission_query,
                "ADMISSION_INTERVAL_MS": str(self.admission_interval_ms)}  # fmt: skip

    def start(self) -> Gateway:
        backends = self.workdir / "backends.cfg"
        backends.write_text(backends_config(self.replicas))
        self._launch(["-db", "-f", str(GATEWAY_DIR / "haproxy.cfg"), "-f", str(backends)],
                     env=self.env())  # fmt: skip
        assert self.proc is not None
        try:
            _wait_port(self.bind, self.grpc_port, self.proc, "haproxy")
        except BaseException as err:
            log = self.logs()[-2000:]
            self.stop()
            raise RuntimeError(f"haproxy did not start: {err}\n{log}") from err
        return self
