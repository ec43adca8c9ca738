"""CUDA shared memory: client GPU buffers shared through CUDA IPC, as Triton's extension.

A client allocates device memory, takes its ``cudaIpcMemHandle_t`` (64 bytes;
``tritonclient.utils.cuda_shared_memory.get_raw_handle`` gives it base64-encoded)
and registers ``(name, raw_handle, device_id, byte_size)``.  The server opens
the handle with ``cudaIpcOpenMemHandle`` and then reads inputs out of it and
writes outputs into it by ``cudaMemcpy``.  The CUDA runtime is reached through
``ctypes`` (``libcudart`` of the CUDA toolkit or of the ``nvidia-cuda-runtime``
wheel), so the extension needs no CUDA Python package.

Registration needs ``--allow-client-shm=true``, like system shared memory.  On
a server without a usable GPU every call is UNSUPPORTED, with the CUDA
runtime's own reason.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import os
import sys
import threading
from dataclasses import dataclass
from typing import Any

from sonic.errors import AlreadyExists, InvalidArgument, NotFound, Unavailable, Unsupported
from sonic.server.principal import owned

IPC_HANDLE_SIZE = 64
_H2D, _D2H = 1, 2  # cudaMemcpyKind
_LAZY_PEER_ACCESS = 1  # cudaIpcMemLazyEnablePeerAccess


class _IpcHandle(ctypes.Structure):
    _fields_ = [("reserved", ctypes.c_char * IPC_HANDLE_SIZE)]


def _library_paths() -> list[str]:
    found = [ctypes.util.find_library("cudart") or ""]
    for root in sys.path:
        found += sorted(glob.glob(os.path.join(root, "nvidia", "cuda_runtime", "lib",
                                               "libcudart.so*")))  # fmt: skip
    found += sorted(glob.glob("/usr/local/cuda*/lib*/libcudart.so*"))
    return [p for p in found if p]


class CudaRuntime:
    """The few CUDA runtime calls the extension needs; raises with CUDA's error text."""

    def __init__(self) -> None:
        errors = []
        for path in _library_paths() or ["libcudart.so"]:
            try:
                self.lib = ctypes.CDLL(path)
                break
            except OSError as err:
                errors.append(str(err))
        else:
            why = "; ".join(errors) or "not found"
            raise Unsupported(f"CUDA shared memory needs the CUDA runtime (libcudart), which "
                              f"is not installed here ({why})")  # fmt: skip
        self.lib.cudaGetErrorString.restype = ctypes.c_char_p
        self.lib.cudaIpcOpenMemHandle.argtypes = [ctypes.POINTER(ctypes.c_void_p), _IpcHandle,
                                                  ctypes.c_uint]  # fmt: skip
        self.lib.cudaMemcpy.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t,
                                        ctypes.c_int]  # fmt: skip
        self.lib.cudaIpcCloseMemHandle.argtypes = [ctypes.c_void_p]
        self._lock = threading.Lock()

    def _check(self, rc: int, what: str) -> None:
        if rc != 0:
            text = self.lib.cudaGetErrorString(rc).decode(errors="replace")
            raise Unavailable(f"{what} failed: {text} (CUDA error {rc})")

    def device_count(self) -> int:
        n = ctypes.c_int(0)
        self._check(self.lib.cudaGetDeviceCount(ctypes.byref(n)), "cudaGetDeviceCount")
        return n.value

    def open(self, handle: bytes, device: int) -> int:
        ptr = ctypes.c_void_p()
        with self._lock:
            self._check(self.lib.cudaSetDevice(device), f"cudaSetDevice({device})")
            self._check(self.lib.cudaIpcOpenMemHandle(ctypes.byref(ptr), _IpcHandle(handle),
                                                      _LAZY_PEER_ACCESS), "cudaIpcOpenMemHandle")
        return int(ptr.value or 0)

    def close(self, ptr: int, device: int) -> None:
        with self._lock:
            self.lib.cudaSetDevice(device)
            self.lib.cudaIpcCloseMemHandle(ctypes.c_void_p(ptr))

    def to_host(self, ptr: int, size: int, device: int) -> bytearray:
        out = bytearray(size)
        buf = (ctypes.c_char * size).from_buffer(out)
        with self._lock:
            self._check(self.lib.cudaSetDevice(device), f"cudaSetDevice({device})")
            self._check(self.lib.cudaMemcpy(buf, ctypes.c_void_p(ptr), size, _D2H),
                        "cudaMemcpy (device to host)")  # fmt: skip
        return out

    def to_device(self, ptr: int, data: bytes, device: int) -> None:
        with self._lock:
            self._check(self.lib.cudaSetDevice(device), f"cudaSetDevice({device})")
            self._check(self.lib.cudaMemcpy(ctypes.c_void_p(ptr), data, len(data), _H2D),
                        "cudaMemcpy (host to device)")  # fmt: skip


@dataclass(slots=True)
class CudaRegion:
    name: str
    device_id: int
    byte_size: int
    ptr: int
    offset: int = 0  # CUDA regions start at their allocation

    def status(self) -> dict[str, Any]:
        return {"name": self.name, "device_id": self.device_id, "byte_size": self.byte_size}


class CudaSharedMemoryManager:
    def __init__(self, allow_register: bool) -> None:
        self.allow_register = allow_register
        #: By (caller, name): see sonic.server.principal.
        self.regions: dict[tuple[str, str], CudaRegion] = {}
        self._runtime: CudaRuntime | None = None
        self._devices = 0

    def runtime(self) -> CudaRuntime:
        """The CUDA runtime with at least one device, or UNSUPPORTED saying why not."""
        if self._runtime is None:
            rt = CudaRuntime()
            try:
                devices = rt.device_count()
            except Unavailable as err:
                raise Unsupported(f"CUDA shared memory is not available on this server: "
                                  f"{err.message}") from None  # fmt: skip
            if devices == 0:
                raise Unsupported("CUDA shared memory is not available on this server: no GPU")
            self._runtime, self._devices = rt, devices
        return self._runtime

    def register(self, name: str, raw_handle: bytes, device_id: int, byte_size: int) -> None:
        rt = self.runtime()
        if not self.allow_register:
            raise Unavailable(
                "CUDA shared memory registration is disabled on this server; start it with "
                "--allow-client-shm=true to allow clients on the same host to register regions"
            )
        if not name:
            raise InvalidArgument("a CUDA shared memory region needs a name")
        if owned(name) in self.regions:
            raise AlreadyExists(f"CUDA shared memory region '{name}' is already registered")
        if len(raw_handle) != IPC_HANDLE_SIZE:
            raise InvalidArgument(f"CUDA shared memory region '{name}': raw_handle must be the "
                                  f"{IPC_HANDLE_SIZE}-byte cudaIpcMemHandle_t, got "
                                  f"{len(raw_handle)} bytes")  # fmt: skip
        if not 0 <= device_id < self._devices:
            raise InvalidArgument(
                f"CUDA shared memory region '{name}': device_id {device_id} does not exist; "
                f"this server has {self._devices} GPU(s)"
            )
        if byte_size <= 0:
            raise InvalidArgument(f"CUDA shared memory region '{name}': byte_size must be > 0")
        ptr = rt.open(raw_handle, device_id)
        self.regions[owned(name)] = CudaRegion(name, device_id, byte_size, ptr)

    def unregister(self, name: str = "") -> None:
        self.runtime()  # UNSUPPORTED without a GPU, as for status and register
        caller = owned("")[0]
        self._release([owned(name)] if name else [k for k in self.regions if k[0] == caller])

    def _release(self, keys: list[tuple[str, str]]) -> None:
        for key in keys:
            region = self.regions.pop(key, None)
            if region is not None and self._runtime is not None:
                self._runtime.close(region.ptr, region.device_id)

    def status(self, name: str = "") -> list[dict[str, Any]]:
        self.runtime()
        if name:
            if owned(name) not in self.regions:
                raise NotFound(f"Unable to find cuda shared memory region: '{name}'")
            return [self.regions[owned(name)].status()]
        caller = owned("")[0]
        return [r.status() for k, r in self.regions.items() if k[0] == caller]

    def read(self, region: CudaRegion, start: int, size: int) -> bytearray:
        """``size`` bytes from ``start`` of a region, on the host."""
        return self.runtime().to_host(region.ptr + start, size, region.device_id)

    def write(self, region: CudaRegion, start: int, data: bytes) -> None:
        self.runtime().to_device(region.ptr + start, data, region.device_id)

    def close(self) -> None:
        """Release every region; quiet on a server without a GPU (nothing to release)."""
        self._release(list(self.regions))
