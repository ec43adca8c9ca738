"""``sonic plan``: how many servers (or GPUs) a workload needs, from a measured profile.

Inputs: a profile (tidy-table rows of one model on one server type: throughput
and latency against concurrency, and ideally against request rate) and a
workload: ``jobs`` client jobs, each
processing ``events_per_s`` events per second with ``inferences_per_event``
inferences (rows) each.

- Demand D = jobs x events/s x inferences/event, in inferences per second.
- A server's usable capacity C is the highest measured throughput whose
  latency (``p99``, or the average) stays within the latency budget, if one
  is given, times the target utilisation (default 0.8: headroom for bursts).
- Servers N = ceil(D / C).  Each then carries D / N, and its expected latency
  is the profile's latency interpolated at that throughput, from the
  request-rate points when there are any: jobs send on their own schedule, and
  an open-loop request finds an idle server colder (threads asleep) than a
  closed loop keeps it, so closed-loop latency is too optimistic at low load.
  Below the lowest point the latency stays at its value: a lightly loaded
  server still takes one service time.
- Clients per server = jobs / N (the client-to-GPU ratio on GPU servers).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

#: Columns that must be equal across a profile's points.
SERIES = ("server", "model", "hardware", "protocol", "batch_size", "instance_count",
          "max_queue_delay_us")  # fmt: skip


@dataclass(frozen=True, slots=True)
class Workload:
    jobs: int
    events_per_s: float
    inferences_per_event: float = 1.0

    def __post_init__(self) -> None:
        if self.jobs < 1 or self.events_per_s <= 0 or self.inferences_per_event <= 0:
            raise ValueError("a workload needs jobs >= 1, events/s > 0 and inferences/event > 0")

    @property
    def demand(self) -> float:
        return self.jobs * self.events_per_s * self.inferences_per_event


@dataclass(frozen=True, slots=True)
class Plan:
    demand: float  # inferences/s
    capacity_per_server: float  # usable, after the utilisation target
    max_throughput: float  # measured, within the latency budget
    servers: int
    load_per_server: float
    utilisation: float  # load / measured max
    expected_avg_latency_us: float
    expected_p99_latency_us: float
    clients_per_server: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _points(profile: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    pts = [r for r in profile if r.get("throughput")
           and (r.get("concurrency") is not None or r.get("request_rate") is not None)]  # fmt: skip
    if not pts:
        raise ValueError("the profile has no measurements with a throughput")
    keys = {tuple(r.get(k) for k in SERIES) for r in pts}
    if len(keys) > 1:
        raise ValueError(f"the profile mixes {len(keys)} series of ({', '.join(SERIES)}): "
                         f"{sorted(map(str, keys))}; select one")  # fmt: skip
    return sorted(pts, key=lambda r: float(r["throughput"]))


def plan(profile: Sequence[dict[str, Any]], workload: Workload, *,
         latency_budget_us: float | None = None, utilisation: float = 0.8) -> Plan:  # fmt: skip
    if not 0 < utilisation <= 1:
        raise ValueError(f"utilisation must be in (0, 1], not {utilisation}")
    pts = _points(profile)

    def lat(r: dict[str, Any], key: str) -> float:
        return float(r.get(key) or r.get("p50_us") or 0)

    usable = [r for r in pts if latency_budget_us is None or lat(r, "p99_us") <= latency_budget_us]
    if not usable:
        best = min(lat(r, "p99_us") for r in pts)
        raise ValueError(f"no measured point meets the latency budget of {latency_budget_us:g} us "
                         f"(the lowest p99 measured is {best:g} us)")  # fmt: skip
    max_tput = max(float(r["throughput"]) for r in usable)
    capacity = max_tput * utilisation
    servers = max(1, math.ceil(workload.demand / capacity))
    load = workload.demand / servers
    # Jobs send on their own schedule: open-loop (request-rate) points describe
    # their latency; closed-loop ones only where no rate was measured.
    curve = [r for r in pts if r.get("request_rate") is not None] or pts
    x = np.array([float(r["throughput"]) for r in curve])

    def at(key: str) -> float:
        y = np.array([lat(r, key) for r in curve])
        return float(np.interp(load, x, y))  # flat below the first and above the last point

    return Plan(workload.demand, capacity, max_tput, servers, load, load / max_tput,
                at("avg_us"), at("p99_us"), workload.jobs / servers)  # fmt: skip
