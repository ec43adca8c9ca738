"""Which server a client's calls go to: discovery, health, queue time, preference, fallback.

Servers are discovered with RepositoryIndex (a server that refuses it, as a
saturated SuperSONIC gateway does, is skipped with a warning); the best one is
live, ready, hosts the model, has failed least, then queues least.  The choice
is made once and again only after a failure, as CMSSW's client does, since it
costs health and statistics calls to every server.  When no remote server can
serve, a local ``sonic serve`` is started on free ports from the job's own
repository.
"""

from __future__ import annotations

import atexit
import logging
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from sonic.client.endpoint import Endpoint
from sonic.client.errors import NoServerError, describe_failure, retryable, timed_out
from sonic.client.servers import Server

log = logging.getLogger("sonic.client")
T = TypeVar("T")


class Router:
    """The servers of one model, and the one its calls go to now."""

    def __init__(self, model: str, version: str, protocol: str, endpoints: list[Endpoint], *,
                 preferred: str | None, fallback_repository: Path | None,
                 control_timeout_s: float, wake_timeout_s: float = 0.0,
                 control_attempts: int = 1) -> None:  # fmt: skip
        """``control_attempts``: how many times a control call (discovery, health, metadata)
        that timed out is asked, the job's own count of same-server attempts."""
        self.model = model
        self.version = version
        self.protocol = protocol
        self.endpoints = endpoints
        self.preferred = preferred
        self.fallback_repository = fallback_repository
        self.control_timeout_s = control_timeout_s
        self.control_attempts = max(1, control_attempts)
        self.current: Endpoint | None = None
        self.fallback: Any = None
        self.fallback_endpoint: Endpoint | None = None
        self.lock = threading.Lock()
        #: Why servers were skipped at discovery, for the error a job sees if none is left.
        self.refusals: list[str] = []
        self.discover(wake_timeout_s)

    def discover(self, wake_timeout_s: float = 0.0) -> None:
        """Ask every server what it serves.  A server that refuses (a saturated gateway does,
        on purpose) is skipped with a warning; with ``wake_timeout_s``, while no server has
        answered and the refusals are retryable (a site scaled to zero, starting a server),
        ask again with backoff until that much time has passed."""
        deadline = time.monotonic() + wake_timeout_s
        delay = 0.5
        pending = list(self.endpoints)
        while True:
            failed = []
            for ep in pending:
                try:
                    index = self.ask(ep, lambda c, kw: c.get_model_repository_index(**kw))
                except Exception as err:
                    failed.append((ep, err))
                    continue
                rows = index["models"] if isinstance(index, dict) else index
                ep.models = {r["name"] for r in rows if r.get("state", "READY") == "READY"}
            answered = len(failed) < len(pending) or any(ep.models for ep in self.endpoints)
            waiting = [(ep, err) for ep, err in failed if retryable(err)]
            if answered or not waiting or time.monotonic() + delay > deadline:
                break
            log.warning("no server answered yet (%s); asking again in %.1f s",
                        describe_failure(waiting[0][0].server, waiting[0][1]), delay)  # fmt: skip
            time.sleep(delay * (0.5 + random.random() / 2))
            delay = min(delay * 2, 5.0)
            pending = [ep for ep, _ in waiting]
        for ep, err in failed:
            log.warning("server %s skipped: RepositoryIndex failed: %s", ep.server.name, err)
            ep.failures += 1
            self.refusals.append(describe_failure(ep.server, err))

    def ask(self, ep: Endpoint, call: Callable[[Any, dict[str, Any]], T], *,
            as_json: bool = True) -> T:  # fmt: skip
        """``call(client, keywords)`` on ``ep``'s synchronous client, asked again while it
        times out, up to ``control_attempts`` times.  A lost packet must not cost a job its
        only server before its first event, when its inference calls would be retried; a
        call that was answered (a refusal too) is not asked again."""
        kw = self.json(ep) if as_json else self.control(ep)
        attempt = 1
        while True:
            try:
                return call(ep.sync(), kw)
            except Exception as err:
                if attempt >= self.control_attempts or not timed_out(err):
                    raise
                log.info("server %s: control call timed out (attempt %d of %d); asking again",
                         ep.server.name, attempt, self.control_attempts)  # fmt: skip
                attempt += 1

    def control(self, ep: Endpoint) -> dict[str, Any]:
        """Keyword arguments of every control call: the server's token and, over gRPC, a
        deadline (HTTP clients carry theirs, Endpoint.timeout_s)."""
        kw: dict[str, Any] = {"headers": ep.headers()}
        if self.protocol == "grpc":
            kw["client_timeout"] = self.control_timeout_s
        return kw

    def json(self, ep: Endpoint) -> dict[str, Any]:
        """As :meth:`control`, with JSON answers over gRPC."""
        kw = self.control(ep)
        if self.protocol == "grpc":
            kw["as_json"] = True
        return kw

    def queue_ns(self, ep: Endpoint) -> float:
        try:
            stats = self.ask(ep, lambda c, kw: c.get_inference_statistics(self.model, **kw))
            q = stats["model_stats"][0]["inference_stats"]["queue"]
            return int(q.get("ns", 0)) / max(int(q.get("count", 0)), 1)
        except Exception:
            return float("inf")

    def candidates(self, exclude: set[str] = frozenset()) -> list[Endpoint]:  # type: ignore[assignment]
        hosts = [
            ep for ep in self.endpoints if self.model in ep.models and ep.server.name not in exclude
        ]
        live = []
        for ep in hosts:
            try:
                if self.ask(ep, lambda c, kw: c.is_server_live(**kw), as_json=False) and self.ask(
                    ep, lambda c, kw: c.is_model_ready(self.model, self.version, **kw),
                    as_json=False,
                ):
                    live.append(ep)
            except Exception:
                ep.failures += 1
        pref = [ep for ep in live if ep.server.name == self.preferred]
        rest = sorted((ep for ep in live if ep not in pref),
                      key=lambda ep: (ep.failures, self.queue_ns(ep)))  # fmt: skip
        return pref + rest

    def best(self) -> Endpoint:
        """The server calls go to; chosen once, and again only after a failure.

        Choosing costs health and statistics calls to every server, so it is not
        done per request (CMSSW likewise picks at start and on retry).
        """
        current = self.current
        if current is not None:
            return current
        candidates = self.candidates()
        why = "no remote server hosts the model" + (
            f" ({'; '.join(self.refusals)})" if self.refusals else "")
        chosen = (
            candidates[0] if candidates else self.use_fallback(why)
        )
        self.current = chosen
        return chosen

    def use_fallback(self, why: str) -> Endpoint:
        with self.lock:
            if self.fallback_endpoint is not None:
                return self.fallback_endpoint
            if self.fallback_repository is None:
                raise NoServerError(
                    f"model '{self.model}': {why}, and no fallback_repository is configured "
                    "for a local fallback server"
                )
            from sonic.launcher import LocalServer

            log.warning("model '%s': %s; starting a local fallback server", self.model, why)
            # Client shared memory allowed: the one case where CMSSW uses it, its own fallback.
            self.fallback = LocalServer(Path(self.fallback_repository),
                                         "--allow-client-shm=true").start()  # fmt: skip
            atexit.register(self.fallback.stop)
            url = self.fallback.grpc_url if self.protocol == "grpc" else self.fallback.http_url
            ep = Endpoint(Server("fallback", url), self.protocol, models={self.model})
            self.fallback_endpoint = ep
            return ep

    def next(self, kind: str, current: Endpoint, tried: set[str]) -> Endpoint | None:
        if kind == "same":
            return current
        if kind == "diff":
            others = self.candidates(exclude=tried)
            return others[0] if others else None
        return self.use_fallback("every remote attempt failed")

    def with_log(self, attempts: list[str]) -> list[str]:
        if self.fallback is not None and any(a.startswith("fallback:") for a in attempts):
            attempts = [*attempts, "fallback server log:\n" + self.fallback.log()[-3000:]]
        return attempts

    async def close_async(self) -> None:
        for ep in [*self.endpoints, self.fallback_endpoint]:
            if ep is not None:
                await ep.close_aio()

    def close(self) -> None:
        for ep in self.endpoints:
            ep.close()
        if self.fallback_endpoint is not None:
            self.fallback_endpoint.close()
        if self.fallback is not None:
            self.fallback.stop()
            self.fallback = None
