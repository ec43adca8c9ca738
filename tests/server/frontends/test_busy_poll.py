"""The event loop keeps polling for --busy-poll-us after a request, then sleeps again."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import tritonclient.grpc as grpcclient
import uvloop

from sonic.launcher import LocalServer
from sonic.server.frontends import busypoll
from sonic.server.frontends.busypoll import BusyPoll
from sonic.server.settings import ServerSettings
from sonic.server.workers import worker_args
from tests.conftest import write_mlp


def _passes(window_s: float, wait_s: float) -> tuple[int, bool]:
    """Loop passes polled after one touch, and whether it still polls after ``wait_s``."""

    async def main() -> tuple[int, bool]:
        poll = BusyPoll(window_s)
        poll.touch()
        await asyncio.sleep(wait_s)
        return poll.passes, poll.polling

    return uvloop.run(main())


def test_polls_for_the_window_then_stops() -> None:
    passes, still = _passes(0.02, 0.1)
    assert passes > 10  # the loop went round without sleeping
    assert not still  # and went back to sleep once the window was over


def test_zero_window_never_polls() -> None:
    assert _passes(0.0, 0.05) == (0, False)


def test_no_polling_while_requests_keep_company(monkeypatch: pytest.MonkeyPatch) -> None:
    """A request that arrived with another in flight stops the polling, and none starts for
    COMPANY_S; after that a touch polls again."""
    monkeypatch.setattr(busypoll, "COMPANY_S", 0.05)

    async def main() -> tuple[int, bool, int, bool]:
        poll = BusyPoll(1.0)
        poll.touch()
        await asyncio.sleep(0.01)
        polled = poll.passes
        poll.company()
        await asyncio.sleep(0.01)
        stopped = not poll.polling
        poll.touch()  # within COMPANY_S of the company: still no polling
        await asyncio.sleep(0.01)
        quiet = poll.passes - polled
        await asyncio.sleep(0.05)
        poll.touch()
        await asyncio.sleep(0.01)
        return polled, stopped, quiet, poll.polling

    polled, stopped, quiet, again = uvloop.run(main())
    assert polled > 10
    assert stopped
    assert quiet <= 1  # at most the pass already scheduled when company came
    assert again


def _cpu(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


def _one_request(server: LocalServer) -> None:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    x = grpcclient.InferInput("input", [1, 64], "FP32")
    x.set_data_from_numpy(np.ones((1, 64), np.float32))
    client.infer("mlp", [x])
    client.close()


@pytest.mark.parametrize("window_us", [0, 300_000])
def test_server_spins_only_in_the_window(tmp_path: Path, window_us: int) -> None:
    """A 0.3 s window (far above the 1 ms default, to be visible in CPU time) spins one core
    after a request; with 0 the server sleeps; either way an idle server uses no CPU."""
    repo = tmp_path / "repo"
    write_mlp(repo)
    with LocalServer(repo, f"--busy-poll-us={window_us}") as server:
        assert server.proc is not None
        _one_request(server)  # warm-up: connection, first call
        time.sleep(0.5)
        before = _cpu(server.proc.pid)
        _one_request(server)
        time.sleep(0.5)
        after_window = _cpu(server.proc.pid)
        time.sleep(0.5)
        idle = _cpu(server.proc.pid) - after_window
    spent = after_window - before
    if window_us:
        assert spent > 0.1, spent  # ~0.3 s of polling
    else:
        assert spent < 0.1, spent
    assert idle < 0.05, idle


def test_workers_inherit_the_window_and_flow_control() -> None:
    settings = ServerSettings(model_repositories=[Path("/m")], busy_poll_us=250,
                              grpc_bdp_probe=True)  # fmt: skip
    args = worker_args(settings, 9000)
    assert "--busy-poll-us=250" in args
    assert "--grpc-http2-bdp-probe=true" in args


def test_requests_in_company_stop_the_polling(tmp_path: Path) -> None:
    """Through the data plane (native transport's hand-overs): a request alone leaves the loop
    polling after its answer; two that arrive together stop it, and a request alone soon after
    does not start it again (a client keeping several out wakes the loop anyway)."""
    from sonic.zoo.examples import MLP_BENCHMARK_CONFIG
    from tests.server.test_plans import Harness, _mlp

    async def scenario() -> None:
        async with Harness(tmp_path, MLP_BENCHMARK_CONFIG) as h:
            poll = h.server.dataplane.busy_poll
            poll.window_s = 5.0  # long enough to see, whatever the machine's speed
            await h.answered(h.hand_over(_mlp(1, id="alone")))
            assert poll.polling
            await h.answered(h.hand_over(_mlp(1, id="a"), _mlp(1, id="b", seed=1)))
            assert not poll.polling
            passes = poll.passes
            await h.answered(h.hand_over(_mlp(1, id="c", seed=2)))
            assert not poll.polling and poll.passes == passes

    asyncio.run(scenario())
