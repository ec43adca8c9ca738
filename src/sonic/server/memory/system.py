"""System shared memory: client regions in ``/dev/shm``, as ``tritonclient`` creates them.

A client creates a POSIX shared-memory object, registers ``(name, key,
offset, byte_size)``, and then names the region in tensor parameters
(``shared_memory_region``, ``shared_memory_offset``, ``shared_memory_byte_size``).

The server never maps a client's object.  A mapping faults (SIGBUS, which
Python cannot catch) as soon as the client truncates the file under it, and a
check before each access would race with the truncation; instead inputs are
read with ``preadv`` and outputs written with ``pwrite`` on the object's file
descriptor, which report a short file as a short count, turned into an error
naming the region.  That costs one copy of each input
(``benchmarks/shared_memory.py`` measures it).  Registration is refused unless the server was
started with ``--allow-client-shm=true``, and a key can only ever name an
object directly under ``/dev/shm`` (no ``/`` inside it, no ``..``, no
symbolic link, only regular files).  ``--client-shm-key-prefix`` narrows that
to the keys a site's jobs use, so a client cannot map another program's
shared memory even when the server's user could.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from typing import Any

import numpy as np

from sonic.errors import AlreadyExists, InvalidArgument, NotFound, Unavailable
from sonic.protocol.params import SHM_BYTE_SIZE, SHM_OFFSET, SHM_REGION
from sonic.protocol.tensors import Tensor, element_count, from_raw, to_raw
from sonic.server.memory.cuda import CudaRegion, CudaSharedMemoryManager
from sonic.server.principal import owned

SHM_ROOT = "/dev/shm"


@dataclass(slots=True)
class Region:
    name: str
    key: str
    offset: int
    byte_size: int
    #: The object, opened read-write at registration (never mapped: see the module's docstring).
    fd: int

    def status(self) -> dict[str, Any]:
        return {"name": self.name, "key": self.key, "offset": self.offset,
                "byte_size": self.byte_size}  # fmt: skip


def _path(key: str) -> str:
    bare = key[1:] if key.startswith("/") else key
    if not bare or "/" in bare or bare in (".", "..") or "\0" in bare:
        raise InvalidArgument(
            f"shared memory key '{key}' must name an object directly under {SHM_ROOT}, "
            "such as '/my_region' (no other '/' and no '..')"
        )
    return os.path.join(SHM_ROOT, bare)


def _integer(value: Any, key: str, what: str) -> int:
    """An integer tensor parameter (JSON gives any type; bool is not an integer here)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(f"{what}: '{key}' must be an integer, got {value!r}")
    return value


def _truncated(region: Region, start: int, size: int, have: int) -> InvalidArgument:
    return InvalidArgument(
        f"shared memory region '{region.name}' (key '{region.key}') was truncated after it was "
        f"registered: {size} bytes at offset {start} are needed, the object now ends after "
        f"{have}; register it again"
    )


def _pread(region: Region, start: int, size: int) -> np.ndarray:
    """``size`` bytes at ``start``, or an error if the object is now shorter (never SIGBUS)."""
    buf = np.empty(size, np.uint8)  # not zeroed first: half the time of a bytearray at 64 MiB
    view, done = memoryview(buf), 0
    while done < size:
        n = os.preadv(region.fd, [view[done:]], start + done)
        if n == 0:
            raise _truncated(region, start, size, start + done)
        done += n
    return buf


def _pwrite(region: Region, start: int, data: bytes) -> None:
    """Write ``data`` at ``start``; refuse rather than grow an object that was truncated."""
    have = os.fstat(region.fd).st_size
    if start + len(data) > have:
        raise _truncated(region, start, len(data), have)
    view, done = memoryview(data), 0
    while done < len(data):
        done += os.pwrite(region.fd, view[done:], start + done)


class SharedMemoryManager:
    def __init__(self, allow_register: bool, key_prefix: str = "") -> None:
        self.allow_register = allow_register
        self.key_prefix = key_prefix.lstrip("/")
        self.regions: dict[str, Region] = {}
        #: CUDA regions; one namespace with the system ones, as in Triton.
        self.cuda = CudaSharedMemoryManager(allow_register)

    # -- control ---------------------------------------------------------------
    def register(self, name: str, key: str, offset: int, byte_size: int) -> None:
        if not self.allow_register:
            raise Unavailable(
                "system shared memory registration is disabled on this server; start it with "
                "--allow-client-shm=true to allow clients on the same host to register regions"
            )
        if not name:
            raise InvalidArgument("a shared memory region needs a name")
        if owned(name) in self.regions or owned(name) in self.cuda.regions:
            raise AlreadyExists(f"shared memory region '{name}' is already registered")
        if offset < 0 or byte_size <= 0:
            raise InvalidArgument(
                f"shared memory region '{name}': offset must be >= 0 and byte_size > 0, got "
                f"offset {offset} and byte_size {byte_size}"
            )
        path = _path(key)
        if not os.path.basename(path).startswith(self.key_prefix):
            raise InvalidArgument(
                f"shared memory key '{key}' is not allowed: this server only maps keys that "
                f"start with '/{self.key_prefix}' (--client-shm-key-prefix)"
            )
        try:
            fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW)
        except OSError as err:
            raise InvalidArgument(
                f"unable to open shared memory region '{name}' with key '{key}': {err.strerror}"
            ) from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise InvalidArgument(f"shared memory key '{key}' is not a shared memory object")
            size = st.st_size
            if offset + byte_size > size:
                raise InvalidArgument(
                    f"shared memory region '{name}': offset {offset} + byte_size {byte_size} "
                    f"exceeds the {size} bytes of '{key}'"
                )
        except BaseException:
            os.close(fd)
            raise
        self.regions[owned(name)] = Region(name, key, offset, byte_size, fd)

    def register_cuda(self, name: str, raw_handle: bytes, device_id: int, byte_size: int) -> None:
        if owned(name) in self.regions:
            raise AlreadyExists(f"shared memory region '{name}' is already registered")
        self.cuda.register(name, raw_handle, device_id, byte_size)

    def unregister(self, name: str = "") -> None:
        """Unregister ``name``, or every region of the caller."""
        caller = owned("")[0]
        keys = [owned(name)] if name else [k for k in self.regions if k[0] == caller]
        for key in keys:
            region = self.regions.pop(key, None)
            if region is not None:
                os.close(region.fd)

    def status(self, name: str = "") -> list[dict[str, Any]]:
        if name:
            if owned(name) not in self.regions:
                raise NotFound(f"Unable to find system shared memory region: '{name}'")
            return [self.regions[owned(name)].status()]
        caller = owned("")[0]
        return [r.status() for k, r in self.regions.items() if k[0] == caller]

    # -- data --------------------------------------------------------------------
    def _window(self, params: dict[str, Any], what: str) -> tuple[Region | CudaRegion, int, int]:
        name = params[SHM_REGION]
        if not isinstance(name, str):
            raise InvalidArgument(f"{what}: '{SHM_REGION}' must be a string, got {name!r}")
        key = owned(name)
        region: Region | CudaRegion | None = self.regions.get(key) or self.cuda.regions.get(key)
        if region is None:
            raise NotFound(
                f"{what}: unable to find shared memory region '{name}'; register it first"
            )
        if SHM_BYTE_SIZE not in params:
            raise InvalidArgument(f"{what}: '{SHM_BYTE_SIZE}' is required with '{SHM_REGION}'")
        offset = _integer(params.get(SHM_OFFSET, 0) or 0, SHM_OFFSET, what)
        size = _integer(params[SHM_BYTE_SIZE], SHM_BYTE_SIZE, what)
        if offset < 0 or size < 0 or offset + size > region.byte_size:
            raise InvalidArgument(
                f"{what}: offset {offset} + byte size {size} is outside shared memory region "
                f"'{name}' of {region.byte_size} bytes"
            )
        return region, region.offset + offset, size

    def read_input(self, t: Tensor) -> np.ndarray:
        region, start, size = self._window(t.parameters, f"input '{t.name}'")
        element_count(t.shape, t.name)
        if isinstance(region, CudaRegion):
            buf = memoryview(self.cuda.read(region, start, size))
        else:
            buf = memoryview(_pread(region, start, size))
        return from_raw(t.name, t.datatype, t.shape, buf)

    def write_output(self, t: Tensor) -> None:
        region, start, size = self._window(t.parameters, f"output '{t.name}'")
        raw = to_raw(t.data, t.datatype)
        if len(raw) > size:
            raise InvalidArgument(
                f"shared memory size specified with the request for output '{t.name}' "
                f"({size} bytes) should be at least {len(raw)} bytes to hold the results"
            )
        if isinstance(region, CudaRegion):
            self.cuda.write(region, start, raw)
        else:
            _pwrite(region, start, raw)
        t.parameters[SHM_BYTE_SIZE] = len(raw)

    def close(self) -> None:
        self.unregister()
        self.cuda.close()
