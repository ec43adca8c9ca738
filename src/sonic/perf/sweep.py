"""``sonic perf sweep``: batch sizes x concurrencies, and model settings through explicit control.

As Model Analyzer's brute-force search: for every combination of instance
count and dynamic-batching settings the model is reloaded with that config
(``RepositoryModelLoad`` with a ``config`` override, which needs
``--model-control-mode=explicit`` on the server), then every batch size and
concurrency is measured with perf_analyzer's method.  The original config is
restored at the end.  Rows go into the tidy table.
"""

from __future__ import annotations

import copy
import itertools
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from sonic.perf.inputs import build_inputs
from sonic.perf.profiler import Profiler, Settings, Unstable, payloads
from sonic.perf.target import Target, model_spec
from sonic.perf.tidy import from_level, row


@dataclass(slots=True)
class SweepSpace:
    batch_sizes: list[int] = field(default_factory=lambda: [1])
    concurrencies: list[int] = field(default_factory=lambda: [1, 2, 4, 8])
    instance_counts: list[int] = field(default_factory=list)  # empty: leave as configured
    max_queue_delays_us: list[int] = field(default_factory=list)
    preferred_batch_sizes: list[list[int]] = field(default_factory=list)

    def variants(self) -> Iterator[dict[str, Any]]:
        axes = [[("instance_count", v) for v in self.instance_counts] or [None],
                [("max_queue_delay_us", v) for v in self.max_queue_delays_us] or [None],
                [("preferred_batch_size", v) for v in self.preferred_batch_sizes]
                or [None]]  # fmt: skip
        for combo in itertools.product(*axes):
            yield dict(c for c in combo if c is not None)

    def size(self) -> int:
        n = 1
        for axis in (self.instance_counts, self.max_queue_delays_us, self.preferred_batch_sizes):
            n *= max(len(axis), 1)
        return n * len(self.batch_sizes) * len(self.concurrencies)


def apply_variant(config: dict[str, Any], variant: dict[str, Any]) -> dict[str, Any]:
    """The model config (JSON form) with the variant's settings."""
    cfg = copy.deepcopy(config)
    if "instance_count" in variant:
        groups = cfg.get("instance_group") or [{"kind": "KIND_CPU"}]
        for g in groups:
            g["count"] = variant["instance_count"]
        cfg["instance_group"] = groups
    if "max_queue_delay_us" in variant or "preferred_batch_size" in variant:
        db = cfg.setdefault("dynamic_batching", {})
        if "max_queue_delay_us" in variant:
            db["max_queue_delay_microseconds"] = variant["max_queue_delay_us"]
        if "preferred_batch_size" in variant:
            db["preferred_batch_size"] = variant["preferred_batch_size"]
    return cfg


def sweep(
    target: Target,
    space: SweepSpace,
    settings: Settings,
    meta: dict[str, Any],
    *,
    input_data: str = "random",
    shapes: dict[str, tuple[int, ...]] | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> list[dict[str, Any]]:
    """Measure every point; an unstable point is kept as a row without numbers."""
    client = target.client()
    original = client.get_model_config(target.model, target.version, **target.kwargs())
    original = original.get("config", original)
    rows: list[dict[str, Any]] = []
    changed = False
    try:
        for variant in space.variants():
            if variant:
                cfg = apply_variant(original, variant)
                client.load_model(target.model, config=json.dumps(cfg),
                                  **target.kwargs(as_json=False))  # fmt: skip
                changed = True
            applied = apply_variant(original, variant)
            v_meta = {**meta, "model": target.model,
                      "instance_count": sum(g.get("count", 1)
                                            for g in applied.get("instance_group", [])) or None,
                      "max_queue_delay_us": applied.get("dynamic_batching", {})
                      .get("max_queue_delay_microseconds")}  # fmt: skip
            model = model_spec(target)
            for batch in space.batch_sizes:
                steps = build_inputs(model, batch, input_data, shapes)
                prof = Profiler(target, model, batch, payloads(target, model, steps), settings,
                                log=lambda _: None)  # fmt: skip
                for conc in space.concurrencies:
                    progress(f"{variant or 'as configured'} batch {batch} concurrency {conc}")
                    try:
                        rows.append(from_level(prof.measure("concurrency", conc), v_meta))
                    except Unstable:
                        rows.append(row({**v_meta, "batch_size": batch}, concurrency=conc))
    finally:
        if changed:
            client.load_model(target.model, config=json.dumps(original),
                              **target.kwargs(as_json=False))  # fmt: skip
        client.close()
    return rows
