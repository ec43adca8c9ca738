"""System shared memory for a client on the same host as its server (CMSSW's ``useSharedMemory``).

When the server runs on this node, input tensors need not cross the socket:
the client writes them into a POSIX shared-memory region the server has
registered, and the request carries only the region's name, size and offset.
Regions are created and registered once and reused (one per request in
flight, grown to the largest request), and unregistered on close.  Outputs of
a fixed size come back through the same region, after the inputs, as CMSSW
does; BYTES tensors and outputs with a variable dim stay on the wire.

``auto`` mode uses it for servers whose address is this host's and that
accept the registration (``sonic serve --allow-client-shm=true``; Triton
accepts by default); a server that refuses is used over the wire, silently.
A server that does not know a region (it restarted, or a local balancer
sent the request to another server) gets it registered again, and the
request is sent once more (:func:`unknown_region`).

``cuda`` mode does the same with CUDA shared memory (device memory shared by
CUDA IPC, Triton's CUDA shared-memory extension) for a GPU server on this
node: inputs go into a device region of ``cuda_device``; outputs come back on
the wire (tritonclient reads a CUDA region only from its start).  It needs a
GPU here: without one, the client says so with CUDA's own reason.
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

log = logging.getLogger(__name__)
_names = itertools.count()
#: How long closing waits for a region the server still holds (see :meth:`ShmPool.close`).
UNREGISTER_WAIT_S = 5.0


def is_local(host: str) -> bool:
    """True if ``host`` is this machine (loopback, or one of its own addresses)."""
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    own = {"127.0.0.1", "::1"}
    with contextlib.suppress(OSError):
        own |= {i[4][0] for i in socket.getaddrinfo(socket.gethostname(), None)}
    for info in infos:
        addr = info[4][0]
        if addr in own or ipaddress.ip_address(addr.split("%")[0]).is_loopback:
            return True
    return False


@dataclass(slots=True)
class Region:
    name: str
    handle: Any
    size: int


class ShmPool:
    """Registered regions of one server, handed out one per request in flight: system shared
    memory, or with ``cuda_device`` set, CUDA device memory on that GPU."""

    def __init__(self, client: Callable[[], Any], headers: dict[str, str] | None,
                 cuda_device: int | None = None) -> None:  # fmt: skip
        self._client = client
        self._headers = headers
        self.cuda_device = cuda_device
        self._free: list[Region] = []
        self._all: list[Region] = []
        self._lock = threading.Lock()

    def _module(self) -> Any:
        if self.cuda_device is None:
            import tritonclient.utils.shared_memory as shm
        else:
            import tritonclient.utils.cuda_shared_memory as shm
        return shm

    def acquire(self, nbytes: int) -> Region:
        """A registered region of at least ``nbytes``; raises if the server refuses."""
        shm = self._module()
        with self._lock:
            fits = [r for r in self._free if r.size >= nbytes]
            if fits:
                region = min(fits, key=lambda r: r.size)
                self._free.remove(region)
                return region
        name, size = f"sonic_client_{os.getpid()}_{next(_names)}", max(nbytes, 1)
        if self.cuda_device is None:
            handle = shm.create_shared_memory_region(name, f"/{name}", size)
        else:
            handle = shm.create_shared_memory_region(name, size, self.cuda_device)
        region = Region(name, handle, size)
        try:
            self.register(region)
        except Exception:
            shm.destroy_shared_memory_region(region.handle)
            raise
        with self._lock:
            self._all.append(region)
        return region

    def register(self, region: Region) -> None:
        """Register the region with the server (again, after it forgot it)."""
        if self.cuda_device is None:
            self._client().register_system_shared_memory(
                region.name, f"/{region.name}", region.size, headers=self._headers)  # fmt: skip
            return
        raw = self._module().get_raw_handle(region.handle)
        self._client().register_cuda_shared_memory(region.name, raw, self.cuda_device,
                                                   region.size, headers=self._headers)  # fmt: skip

    def write(self, region: Region, arrays: list[np.ndarray]) -> list[tuple[int, int]]:
        """The arrays one after the other into the region; their (offset, size)."""
        if self.cuda_device is None:
            return write_inputs(region, arrays)
        arrays = [np.ascontiguousarray(a) for a in arrays]
        self._module().set_shared_memory_region(region.handle, arrays)  # back to back from 0
        offsets = np.cumsum([0, *(a.nbytes for a in arrays)])
        return [(int(o), a.nbytes) for o, a in zip(offsets, arrays, strict=False)]

    def release(self, region: Region) -> None:
        with self._lock:
            self._free.append(region)

    def close(self) -> None:
        shm = self._module()
        with self._lock:
            regions, self._all, self._free = self._all, [], []
        for r in regions:
            self._unregister(r.name)
            with contextlib.suppress(Exception):
                shm.destroy_shared_memory_region(r.handle)

    def _unregister(self, name: str) -> None:
        """Triton refuses to unregister a region a request still holds ("it is currently in
        use"), and lets go of a request only after its response is on the way: a close right
        after the last answer can get there first, and the region would stay registered on the
        server for good.  So a region in use is tried again, for up to ``UNREGISTER_WAIT_S``
        (also the grace given to requests still in flight); any other failure, or one that
        outlasts the wait, is logged with the region's name rather than passed over."""
        kind = "system" if self.cuda_device is None else "cuda"
        deadline = time.monotonic() + UNREGISTER_WAIT_S
        while True:
            try:
                getattr(self._client(), f"unregister_{kind}_shared_memory")(
                    name, headers=self._headers)  # fmt: skip
                return
            except Exception as err:
                if "in use" not in str(err) or time.monotonic() > deadline:
                    log.warning("could not unregister shared-memory region %s: %s", name, err)
                    return
            time.sleep(0.01)


def write_inputs(region: Region, arrays: list[np.ndarray]) -> list[tuple[int, int]]:
    """Copy the arrays one after the other into the region; their (offset, size)."""
    import tritonclient.utils.shared_memory as shm

    spans, offset = [], 0
    for a in arrays:
        a = np.ascontiguousarray(a)
        shm.set_shared_memory_region(region.handle, [a], offset=offset)
        spans.append((offset, a.nbytes))
        offset += a.nbytes
    return spans


def output_spans(outputs: dict[str, tuple[np.dtype, tuple[int, ...]]],
                 start: int) -> dict[str, tuple[int, int]]:  # fmt: skip
    """(offset, size) in the region for each output of a fixed shape, after ``start``."""
    spans, offset = {}, start
    for name, (dtype, shape) in outputs.items():
        size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        spans[name] = (offset, size)
        offset += size
    return spans


def read_output(region: Region, offset: int, dtype: np.dtype, shape: tuple[int, ...]) -> Any:
    """An output the server wrote into the region, copied out (the region is reused)."""
    import tritonclient.utils.shared_memory as shm

    return np.array(shm.get_contents_as_numpy(region.handle, dtype, shape, offset=offset))


def unknown_region(err: Exception) -> bool:
    """True where the server refused a request because it does not know its region."""
    text = str(err).lower()
    return "shared memory region" in text and ("unable to find" in text or "not found" in text)
