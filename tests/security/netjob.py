"""A job's stream of requests through a faulty network, for tests.security.test_network_faults.

Run inside the test's network namespace (``ip netns exec``): it sends one event at a time
from a few concurrent workers through the SONIC client (gRPC, with a deadline and
retries), optionally through a proxy that delays every chunk by ``--delay-ms`` each way,
and prints one JSON line with what came back: which events were answered, with their own
values or not, how long each took and how many attempts the client made.
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import json
import signal
import socket
import sys
import threading
import time
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient

from sonic.client import Client


class DelayProxy:
    """TCP proxy on 127.0.0.1 that holds every chunk ``delay_s`` before passing it on (order
    kept): latency emulation where the kernel has no netem.  With ``hold_s``, nothing passes
    before that long after the proxy started: a path whose first packets are lost and
    retransmitted later, as a TCP connection over a lossy network sees."""

    def __init__(self, target: tuple[str, int], delay_s: float, hold_s: float = 0.0) -> None:
        self.target = target
        self.delay_s = delay_s
        self.released = time.monotonic() + hold_s
        self.loop = asyncio.new_event_loop()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self.sock = sock
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        asyncio.run_coroutine_threadsafe(self._serve(), self.loop).result(10)

    async def _serve(self) -> None:
        self.sock.listen(128)
        self.server = await asyncio.start_server(self._pair, sock=self.sock)

    async def _pair(self, r1: asyncio.StreamReader, w1: asyncio.StreamWriter) -> None:
        r2, w2 = await asyncio.open_connection(*self.target)
        await asyncio.gather(self._pipe(r1, w2), self._pipe(r2, w1), return_exceptions=True)

    def _due(self) -> float:
        return max(time.monotonic() + self.delay_s, self.released)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def later() -> None:
            while True:
                due, data = await queue.get()
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                if not data:
                    writer.close()
                    return
                writer.write(data)
                await writer.drain()

        sender = asyncio.create_task(later())
        while data := await reader.read(1 << 16):
            queue.put_nowait((self._due(), data))
        queue.put_nowait((self._due(), b""))
        await sender


def _executions(args: argparse.Namespace) -> int:
    """The servers' own count of successful executions, asked directly (not through the
    proxy or a gateway)."""
    total = 0
    for server in (args.count_at or args.server).split(","):
        stats = grpcclient.InferenceServerClient(server).get_inference_statistics(
            args.model, as_json=True, client_timeout=30)["model_stats"][0]["inference_stats"]
        total += int(stats["success"].get("count", 0))
    return total


async def run(args: argparse.Namespace) -> dict[str, Any]:
    host, port = args.server.rsplit(":", 1)
    url = args.server
    if args.delay_ms:
        url = f"127.0.0.1:{DelayProxy((host, int(port)), args.delay_ms / 1000).port}"
    client = Client(args.model, [url], timeout=args.timeout, shared_memory="off",
                    retries=[("same", args.retries)])  # fmt: skip
    await asyncio.to_thread(client.info)
    executed_before = _executions(args)
    answers: dict[int, list[float]] = {}
    failures: dict[int, str] = {}
    durations: list[float] = []
    pending = list(range(args.events))
    print("started", flush=True)

    async def worker() -> None:
        while pending:
            event = pending.pop(0)
            x = np.full((1, 8), event, np.float32)
            t0 = time.monotonic()
            try:
                out = await client.infer_async({"INPUT0": x})
                answers.setdefault(event, []).extend(out["OUTPUT0"].reshape(-1)[:1].tolist())
            except Exception as err:  # a lost event: reported, not raised
                failures[event] = f"{type(err).__name__}: {err}"
            durations.append(time.monotonic() - t0)
            await asyncio.sleep(args.pace_ms / 1000)

    await asyncio.gather(*(worker() for _ in range(args.concurrency)))
    await client.close_async()
    client.close()
    return {
        "events": args.events,
        "answered": sorted(answers),
        "wrong": sorted(e for e, v in answers.items() if v != [float(e)]),
        "failures": failures,
        "slowest_s": max(durations),
        # Executions the server counted: more than the events when an answer was lost on the
        # way back and the client asked again (at-least-once; the job still gets one result).
        "executed": _executions(args) - executed_before,
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", required=True)
    parser.add_argument("--model", default="identity_fp32")
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=2.0)
    parser.add_argument("--retries", type=int, default=8)
    parser.add_argument("--delay-ms", type=float, default=0)
    parser.add_argument("--count-at", default="",
                        help="servers whose executions to count (default: --server)")
    parser.add_argument("--pace-ms", type=float, default=0, help="pause between a worker's events")
    args = parser.parse_args()
    # Every thread's stack on SIGUSR1: what a job stuck past the test's patience was waiting on.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    print(json.dumps(asyncio.run(run(args))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
