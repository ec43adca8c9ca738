"""The GPUs this server may use, and their gauges, through NVML (``nvidia-ml-py``).

Discovery decides where models go: a ``KIND_AUTO`` (or group-less) model runs on
the GPUs when there are any, and a ``KIND_GPU`` group on a server without them
fails to load with a message saying so, or runs on the CPU instead when the
server was started with ``--allow-cpu-fallback=true``.  ``CUDA_VISIBLE_DEVICES``
is honoured as CUDA honours it (indices or UUIDs, in its order), and the
indices the server reports and ``instance_group.gpus`` names are the visible
ones, numbered from 0, as Triton numbers them.

The gauges are Triton's ``nv_gpu_*`` metrics, read at scrape time.  Without the
NVML library or a driver there are no GPUs and no gauges: nothing fails.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("sonic.server.gpus")


@dataclass(frozen=True, slots=True)
class Gpu:
    index: int  # as the server and instance_group.gpus number it (visible order)
    nvml_index: int
    uuid: str
    name: str


def _nvml() -> Any | None:
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception as err:  # ImportError, or NVMLError when there is no driver
        log.debug("no NVML: %s", err)
        return None
    return pynvml


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def visible(all_gpus: list[tuple[int, str, str]], cuda_visible: str | None) -> list[Gpu]:
    """Apply ``CUDA_VISIBLE_DEVICES`` to ``(nvml index, uuid, name)`` rows, as CUDA does:
    entries in its order, by index or (a prefix of) UUID, stopping at the first unknown one."""
    if cuda_visible is None:
        return [Gpu(i, n, u, name) for i, (n, u, name) in enumerate(all_gpus)]
    out: list[Gpu] = []
    for entry in (e.strip() for e in cuda_visible.split(",")):
        if not entry:
            break
        match = [g for g in all_gpus
                 if (entry.isdigit() and g[0] == int(entry)) or g[1].startswith(entry)]  # fmt: skip
        if len(match) != 1 or any(g.nvml_index == match[0][0] for g in out):
            break
        n, uuid, name = match[0]
        out.append(Gpu(len(out), n, uuid, name))
    return out


def discover() -> list[Gpu]:
    """The GPUs this process may use; empty without NVML or a driver."""
    nvml = _nvml()
    if nvml is None:
        return []
    try:
        rows = []
        for n in range(nvml.nvmlDeviceGetCount()):
            h = nvml.nvmlDeviceGetHandleByIndex(n)
            rows.append((n, _text(nvml.nvmlDeviceGetUUID(h)), _text(nvml.nvmlDeviceGetName(h))))
    except Exception as err:
        log.warning("NVML could not list the GPUs: %s", err)
        return []
    return visible(rows, os.environ.get("CUDA_VISIBLE_DEVICES"))


def readings(gpus: list[Gpu]) -> list[dict[str, Any]]:
    """Per GPU: utilization [0, 1], memory used and total (bytes), power (W) and its limit.

    A GPU whose reading fails (reset, fallen off the bus) is left out of this scrape.
    """
    nvml = _nvml() if gpus else None
    if nvml is None:
        return []
    out = []
    for g in gpus:
        try:
            h = nvml.nvmlDeviceGetHandleByIndex(g.nvml_index)
            mem = nvml.nvmlDeviceGetMemoryInfo(h)
            out.append({
                "uuid": g.uuid,
                "utilization": nvml.nvmlDeviceGetUtilizationRates(h).gpu / 100.0,
                "memory_used": int(mem.used), "memory_total": int(mem.total),
                "power": nvml.nvmlDeviceGetPowerUsage(h) / 1000.0,
                "power_limit": nvml.nvmlDeviceGetEnforcedPowerLimit(h) / 1000.0,
            })  # fmt: skip
        except Exception as err:
            log.warning("NVML reading of GPU %s failed: %s", g.uuid, err)
    return out
