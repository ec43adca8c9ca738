"""The relay's server end: the Unix socket the front ends call, and their processes' lifecycle."""


from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from sonic.server.frontends.grpc_frames import (
    Dispatch,
    ServerSide,
)

log = logging.getLogger("sonic.server.relay")

RELAY_PREFIX = "sonic-relay-"


def _remove_stale_relays() -> None:
    """Remove this user's relay directories whose server process is gone (killed, so it could
    not remove its own)."""
    for path in Path(tempfile.gettempdir()).glob(f"{RELAY_PREFIX}*-*"):
        pid = path.name[len(RELAY_PREFIX):].split("-", 1)[0]
        try:
            if not pid.isdigit() or path.stat().st_uid != os.getuid():
                continue
            os.kill(int(pid), 0)
        except ProcessLookupError:
            with contextlib.suppress(OSError):
                (path / "relay.sock").unlink(missing_ok=True)
                path.rmdir()
        except OSError:
            continue


class RelayHub(Dispatch):
    """The server's end: a Unix socket that front ends connect to, calling ``services``."""

    def __init__(self, services: dict[str, Any]) -> None:
        super().__init__(services)
        self.hellos: asyncio.Queue[dict[str, int]] = asyncio.Queue()
        _remove_stale_relays()
        # Mode 0700: this user only.  The pid in the name lets a later server remove the
        # directory of one that was killed before it could (see _remove_stale_relays).
        self._dir = Path(tempfile.mkdtemp(prefix=f"{RELAY_PREFIX}{os.getpid()}-"))
        self.path = self._dir / "relay.sock"
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self._server = await self.loop.create_unix_server(lambda: ServerSide(self),
                                                          str(self.path))  # fmt: skip

    def hello(self, info: dict[str, int]) -> None:
        self.hellos.put_nowait(info)

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
        with contextlib.suppress(OSError):
            self.path.unlink()
            self._dir.rmdir()


@dataclass(frozen=True)
class FrontendSettings:
    """What a front-end process needs, passed to it as JSON on its command line."""

    socket: str
    address: str
    max_message_bytes: int
    reuse_port: bool
    bdp_probe: bool
    forward_metadata: bool
    tls: dict[str, Any]
    #: The server's AuthSettings: a front end refuses calls without valid credentials before
    #: reading their messages (CredentialsFirst); the server then checks each call in full.
    auth: dict[str, Any]
    keepalive: dict[str, Any]


class Frontends:
    """Starts the front-end processes, restarts one that dies, and stops them."""

    def __init__(self, hub: RelayHub, settings: FrontendSettings, count: int) -> None:
        self.hub = hub
        self.settings = settings
        self.count = count
        self.procs: list[asyncio.subprocess.Process] = []
        self.port = 0
        self._watch: asyncio.Task[None] | None = None

    async def _spawn(self, settings: FrontendSettings) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "sonic.server.relay.frontend", json.dumps(asdict(settings))
        )

    async def _started(self, proc: asyncio.subprocess.Process, timeout_s: float = 60) -> int:
        hello = asyncio.ensure_future(self.hub.hellos.get())
        exited = asyncio.ensure_future(proc.wait())
        done, _ = await asyncio.wait({hello, exited}, timeout=timeout_s,
                                     return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
        if hello not in done:
            hello.cancel()
            exited.cancel()
            if proc.returncode is None:
                proc.kill()
            raise OSError(f"gRPC front end {proc.pid} did not start (exit status "
                          f"{proc.returncode}; its log is above)")  # fmt: skip
        exited.cancel()
        return int(hello.result()["port"])

    async def start(self) -> int:
        """Start all front ends; the bound gRPC port (chosen by the first when 0)."""
        first = await self._spawn(self.settings)
        self.procs.append(first)
        self.port = await self._started(first)
        host = self.settings.address.rsplit(":", 1)[0]
        self.settings = replace(self.settings, address=f"{host}:{self.port}")
        for _ in range(self.count - 1):
            proc = await self._spawn(self.settings)
            self.procs.append(proc)
            await self._started(proc)
        self._watch = asyncio.create_task(self._restart_dead())
        return self.port

    async def _restart_dead(self) -> None:
        exits = {asyncio.ensure_future(p.wait()): i for i, p in enumerate(self.procs)}
        try:
            while True:
                done, _ = await asyncio.wait(exits, return_when=asyncio.FIRST_COMPLETED)
                for fut in done:
                    i = exits.pop(fut)
                    log.error("gRPC front end %d exited with status %s; restarting it",
                              self.procs[i].pid, self.procs[i].returncode)  # fmt: skip
                    await asyncio.sleep(0.5)
                    self.procs[i] = await self._spawn(self.settings)
                    exits[asyncio.ensure_future(self.procs[i].wait())] = i
                    try:
                        await self._started(self.procs[i])
                    except OSError as err:
                        log.error("%s", err)
        finally:
            for fut in exits:
                fut.cancel()

    async def stop(self) -> None:
        """Stop the front ends (SIGTERM, SIGKILL after 5 s), then close the hub."""
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        for proc in self.procs:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        self.hub.close()
