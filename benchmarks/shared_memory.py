"""What reading client shared memory with ``preadv`` costs against mapping it.

The server used to map each client region and read inputs straight out of the mapping;
a client that truncated its file then killed the server with SIGBUS.  It now reads with
``preadv`` and writes with ``pwrite`` (sonic.server.memory.system), which copies each input once.
This measures both ways side by side in one run, alternating, on the same region:

- the data-plane step alone: an input of N bytes read into an array, and an output of N
  bytes written back (``SharedMemoryManager.read_input``/``write_output`` against the old
  mapping path, rebuilt here as it was);
- the whole request: ``tritonclient`` gRPC inference of an identity model with the input
  and output in shared memory, against the same request with the tensors in the message.

Prints a markdown table and writes ``benchmarks/results/shared_memory.json``.
Usage: ``python benchmarks/shared_memory.py [--repeats 200]``
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.utils.shared_memory as shm

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from sonic.launcher import LocalServer
from sonic.protocol.tensors import Tensor, from_raw
from sonic.server.memory.system import SharedMemoryManager
from sonic.zoo.examples import identity_model, write_model

SIZES = [4 << 10, 1 << 20, 16 << 20, 64 << 20]
OUT = Path(__file__).parent / "results" / "shared_memory.json"


def _median_us(fn: object, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e6


def data_plane(size: int, repeats: int) -> dict[str, float]:
    key = f"/sonic_bench_{os.getpid()}"
    region = shm.create_shared_memory_region("bench", key, 2 * size)
    try:
        shm.set_shared_memory_region(region, [np.ones(size // 4, np.float32)])
        manager = SharedMemoryManager(allow_register=True)
        manager.register("bench", key, 0, 2 * size)
        params = {"shared_memory_region": "bench", "shared_memory_byte_size": size}
        shape = (size // 4,)
        fd = os.open(f"/dev/shm{key[1:]}" if key.startswith("//") else f"/dev/shm{key}",
                     os.O_RDWR)  # fmt: skip
        mapping = mmap.mmap(fd, 2 * size)
        os.close(fd)
        out = np.full(shape, 2.0, np.float32)
        raw = out.tobytes()

        def pread_read() -> None:
            manager.read_input(Tensor("x", "FP32", shape, np.empty(0), dict(params))).sum()

        def mmap_read() -> None:
            from_raw("x", "FP32", shape, memoryview(mapping)[:size]).sum()

        def pwrite_write() -> None:
            manager.write_output(Tensor("y", "FP32", shape, out,
                                        {**params, "shared_memory_offset": size}))  # fmt: skip

        def mmap_write() -> None:
            mapping[size : 2 * size] = raw

        result = {}
        for _ in range(2):  # alternate, keep the second round (warm caches for both)
            result = {
                "read_pread_us": _median_us(pread_read, repeats),
                "read_mmap_us": _median_us(mmap_read, repeats),
                "write_pwrite_us": _median_us(pwrite_write, repeats),
                "write_mmap_us": _median_us(mmap_write, repeats),
            }
        manager.close()
        mapping.close()
        return result
    finally:
        shm.destroy_shared_memory_region(region)


def whole_request(size: int, repeats: int, server: LocalServer) -> dict[str, float]:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    x = np.ones((1, size // 4), np.float32)
    key = f"/sonic_bench_req_{os.getpid()}"
    region = shm.create_shared_memory_region("req", key, 2 * size)
    try:
        shm.set_shared_memory_region(region, [x])
        client.register_system_shared_memory("req", key, 2 * size)
        via_shm_in = grpcclient.InferInput("INPUT0", list(x.shape), "FP32")
        via_shm_in.set_shared_memory("req", size)
        via_shm_out = grpcclient.InferRequestedOutput("OUTPUT0")
        via_shm_out.set_shared_memory("req", size, offset=size)
        inline = grpcclient.InferInput("INPUT0", list(x.shape), "FP32")
        inline.set_data_from_numpy(x)
        result = {}
        for _ in range(2):
            result = {
                "shm_us": _median_us(lambda: client.infer("identity_fp32", [via_shm_in],
                                                          outputs=[via_shm_out]), repeats),
                "inline_us": _median_us(lambda: client.infer("identity_fp32", [inline]),
                                        repeats),
            }  # fmt: skip
        client.unregister_system_shared_memory("req")
        return result
    finally:
        shm.destroy_shared_memory_region(region)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()
    repo = Path(tempfile.mkdtemp())
    write_model(identity_model("FP32"), repo, "identity_fp32")
    rows = []
    with LocalServer(repo, "--allow-client-shm=true") as server:
        for size in SIZES:
            n = max(5, args.repeats * (4 << 10) // size) if size > 1 << 20 else args.repeats
            rows.append({"bytes": size, "repeats": n, **data_plane(size, n),
                         **whole_request(size, max(5, n // 4), server)})  # fmt: skip
    print("| bytes | read: preadv / mmap (us) | ratio | write: pwrite / mmap (us) | ratio | "
          "request: shm / inline (us) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['bytes']} | {r['read_pread_us']:.1f} / {r['read_mmap_us']:.1f} | "
              f"{r['read_pread_us'] / r['read_mmap_us']:.2f} | {r['write_pwrite_us']:.1f} / "
              f"{r['write_mmap_us']:.1f} | {r['write_pwrite_us'] / r['write_mmap_us']:.2f} | "
              f"{r['shm_us']:.0f} / {r['inline_us']:.0f} |")
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps({
        "date": time.strftime("%Y-%m-%d"), "python": platform.python_version(),
        "numpy": np.__version__, "command": "python benchmarks/shared_memory.py "
        f"--repeats {args.repeats}", "rows": rows}, indent=1) + "\n")  # fmt: skip


if __name__ == "__main__":
    main()
