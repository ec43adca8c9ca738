"""The device check: CPU against GPU, served against in-process, for the CMS SONIC models.

For ``deepmet``, ``particlenet``, ``facile`` and the benchmark MLP, each as TorchScript (one
module, run on the CPU and on the GPU, so that the comparison is of devices, not of runtimes),
at batch sizes 1 to 1024: throughput and p99 latency

- in-process: the job runs the module itself (inputs copied to the device, forward, outputs
  copied back, as a job would);
- served: one ``sonic serve`` with a KIND_CPU and a KIND_GPU instance group of each model,
  loaded over gRPC by ``sonic perf``'s engine at concurrency 2 from this process.

Built to run in at most 8 minutes on one NVIDIA H200 with 16 cores and no package registry:
``--wheels DIR`` installs the wheels carried with it (``scripts/gpu_wheels.sh`` downloads
them here) into ``build/gpu-site`` and puts them behind the machine's own packages (its
PyTorch, numpy, grpcio and protobuf are used).  Without a GPU it measures the CPU only::

    python3 benchmarks/gpu_check.py --wheels build/gpu-wheels --out "$OUT"
    .venv/bin/python benchmarks/gpu_check.py --batches 1,16 --seconds 0.5   # CPU, a quick look

Prints one table and writes ``gpu_check.csv`` (every cell) to ``--out``.
"""

from __future__ import annotations

import csv
import itertools
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SITE = ROOT / "build" / "gpu-site"


def install(wheels: Path) -> None:
    """Carried wheels into build/gpu-site, consulted after the machine's own packages."""
    if not SITE.exists():
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
                        "--target", str(SITE), *map(str, sorted(wheels.glob("*.whl")))],
                       check=True)  # fmt: skip


def _paths() -> None:
    sys.path.insert(0, str(ROOT / "src"))
    if SITE.exists():
        sys.path.append(str(SITE))


_paths()

import numpy as np  # noqa: E402
import torch  # noqa: E402
from common import arguments  # noqa: E402  (benchmarks/, the script's own folder)

MODELS = ("deepmet", "particlenet", "facile", "mlp")
N_PF, N_SV = 50, 5  # ParticleNet's particles and vertices per jet


def modules() -> dict[str, tuple[Any, dict[str, tuple[str, tuple[int, ...]]], str, int]]:
    """name -> (module, inputs {name: (datatype, dims)}, output name, output width)."""
    from torch import nn

    from sonic.workflow.deepmet import build_network
    from sonic.workflow.inputs import MAX_N_PF
    from sonic.zoo.particlenet import INPUT_NAMES, N_CLASSES, PF_FEATURES, SV_FEATURES
    from sonic.zoo.particlenet import _module as particlenet

    torch.manual_seed(0)

    class Facile(nn.Module):  # FacileHcalReconstructor's interface, as the ONNX example
        def __init__(self) -> None:
            super().__init__()
            widths = [10 + 7 + 30, 200, 100, 50, 20, 10, 5]
            layers: list[nn.Module] = []
            for a, b in itertools.pairwise(widths):
                layers += [nn.Linear(a, b), nn.ReLU()]
            self.mlp = nn.Sequential(*layers, nn.Linear(5, 1))

        def forward(self, x: torch.Tensor, depth: torch.Tensor, ieta: torch.Tensor) -> torch.Tensor:
            d = nn.functional.one_hot((depth[:, 0].long() - 1).clamp(0, 6), 7).float()
            e = nn.functional.one_hot(ieta[:, 0].long().abs().clamp(0, 29), 30).float()
            return self.mlp(torch.cat([x, d, e], dim=1))

    mlp = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                        nn.Linear(256, 2))  # fmt: skip
    pn_inputs = dict(zip(INPUT_NAMES, [(2, N_PF), (PF_FEATURES, N_PF), (1, N_PF), (2, N_SV),
                                       (SV_FEATURES, N_SV), (1, N_SV)], strict=True))  # fmt: skip
    return {
        "deepmet": (build_network(), {"input": ("FP32", (MAX_N_PF, 8)),
                                      "input_cat0": ("FP32", (MAX_N_PF, 1)),
                                      "input_cat1": ("FP32", (MAX_N_PF, 1)),
                                      "input_cat2": ("FP32", (MAX_N_PF, 1))}, "output", 2),
        "particlenet": (particlenet(), {k: ("FP32", v) for k, v in pn_inputs.items()},
                        "softmax", N_CLASSES),
        "facile": (Facile(), {"continuousinputs": ("FP32", (10,)), "depth": ("INT32", (1,)),
                              "ieta": ("INT32", (1,))}, "output", 1),
        "mlp": (mlp, {"input": ("FP32", (64,))}, "output", 2),
    }  # fmt: skip


def example(inputs: dict[str, tuple[str, tuple[int, ...]]], batch: int) -> list[np.ndarray]:
    rng = np.random.default_rng(batch)
    out = []
    for name, (dt, dims) in inputs.items():
        if dt == "INT32":
            out.append(rng.integers(1, 8, (batch, *dims)).astype(np.int32))
        elif name.endswith("mask"):
            out.append(np.ones((batch, *dims), np.float32))
        else:
            out.append(rng.standard_normal((batch, *dims)).astype(np.float32))
    return out


def _torch_device(device: str) -> torch.device:
    return torch.device("cuda:0" if device == "gpu" else "cpu")


def trace(module: Any, inputs: dict[str, tuple[str, tuple[int, ...]]], device: str) -> Any:
    """Traced on the device it will run on: a trace records device arguments as constants."""
    dev = _torch_device(device)
    args = tuple(torch.from_numpy(a).to(dev) for a in example(inputs, 2))
    return torch.jit.trace(module.eval().to(dev), args)


def write_repository(repo: Path, devices: list[str], max_batch: int) -> None:
    for name, (module, inputs, output, width) in modules().items():
        for dev in devices:
            scripted = trace(module, inputs, dev)
            d = repo / f"{name}_{dev}"
            (d / "1").mkdir(parents=True)
            scripted.save(str(d / "1" / "model.pt"))
            tensors = ",\n  ".join(
                f'{{ name: "{n}", data_type: TYPE_{"FP32" if dt == "FP32" else "INT32"}, '
                f"dims: [ {', '.join(map(str, dims))} ] }}" for n, (dt, dims) in inputs.items())
            (d / "config.pbtxt").write_text(
                f'name: "{name}_{dev}"\nplatform: "pytorch_libtorch"\nmax_batch_size: {max_batch}\n'
                f"input [\n  {tensors}\n]\n"
                f'output [ {{ name: "{output}", data_type: TYPE_FP32, dims: [ {width} ] }} ]\n'
                f"instance_group [ {{ count: 1, kind: KIND_{dev.upper()} }} ]\n")  # fmt: skip


def in_process(name: str, device: str, batches: list[int], seconds: float) -> list[dict]:
    module, inputs, _, _ = modules()[name]
    dev = _torch_device(device)
    module = trace(module, inputs, device)
    rows = []
    for b in batches:
        host = [torch.from_numpy(a) for a in example(inputs, b)]
        lat = []
        with torch.inference_mode():
            module(*[t.to(dev) for t in host]).cpu()  # warm-up
            t_end = time.perf_counter() + seconds
            while time.perf_counter() < t_end or len(lat) < 3:
                t0 = time.perf_counter()
                module(*[t.to(dev, non_blocking=True) for t in host]).cpu()
                lat.append(time.perf_counter() - t0)
        rows.append(_row(name, device, "in-process", b, lat))
    return rows


def _row(name: str, device: str, mode: str, batch: int, lat: list[float]) -> dict:
    total = sum(lat)
    return {"model": name, "device": device, "mode": mode, "batch_size": batch,
            "throughput": round(batch * len(lat) / total, 1) if total else 0.0,
            "p99_ms": round(float(np.percentile(np.array(lat) * 1e3, 99)), 3),
            "requests": len(lat)}  # fmt: skip


def served(url: str, name: str, device: str, batches: list[int], seconds: float) -> list[dict]:
    from sonic.perf.engine import Load, LoadSpec
    from sonic.perf.inputs import build_inputs
    from sonic.perf.profiler import payloads
    from sonic.perf.target import Target, model_spec

    target = Target(url, "grpc", f"{name}_{device}")
    spec = model_spec(target)
    rows = []
    for b in batches:
        data = payloads(target, spec, build_inputs(spec, b))
        load = Load(LoadSpec(target, data, "concurrency", 2))
        time.sleep(min(0.5, seconds / 3))
        load.flush()
        time.sleep(seconds)
        records = load.stop()
        if load.first_error:
            raise RuntimeError(f"{name}_{device} b{b}: {load.first_error}")
        ok = records[records[:, 4] == 1]
        lat = list((ok[:, 1] - ok[:, 0]) / 1e9)
        row = _row(name, device, "served", b, lat)
        span = (ok[:, 1].max() - ok[:, 0].min()) / 1e9 if len(ok) else 0
        row["throughput"] = round(b * len(ok) / span, 1) if span else 0.0
        rows.append(row)
    return rows


def main() -> None:
    ap = arguments(__doc__)
    ap.add_argument("--wheels", type=Path, help="carried wheels to install first")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--batches", default="1,4,16,64,256,1024")
    ap.add_argument("--seconds", type=float, default=1.2, help="per cell")
    ap.add_argument("--models", default=",".join(MODELS))
    args = ap.parse_args()
    started = time.perf_counter()
    if args.wheels:
        install(args.wheels)
        _paths()
    from sonic.launcher import LocalServer
    from sonic.server.gpus import discover

    gpus = discover()
    devices = ["cpu", "gpu"] if gpus and torch.cuda.is_available() else ["cpu"]
    batches = [int(b) for b in args.batches.split(",")]
    models = args.models.split(",")
    from importlib.metadata import version

    print(f"# {platform.node()}: {os.cpu_count()} cores; GPUs: "
          f"{', '.join(g.name for g in gpus) or 'none'}; python {platform.python_version()}; "
          + "; ".join(f"{p} {version(p)}" for p in ("torch", "numpy", "grpcio", "protobuf",
                                                   "tritonclient", "onnxruntime")),
          flush=True)  # fmt: skip
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        write_repository(repo, devices, max(batches))
        launcher = [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(ROOT / 'src')!r}); "
                    f"sys.path.append({str(SITE)!r}); from sonic.cli import main; main()",
                    "serve"]  # fmt: skip
        with LocalServer(repo, "--grpc-max-message-size=1073741824",
                         command=launcher) as server:  # fmt: skip
            for name in models:
                for dev in devices:
                    rows += in_process(name, dev, batches, args.seconds)
                    rows += served(server.grpc_url, name, dev, batches, args.seconds)
                    print(f"# {name} {dev} done at {time.perf_counter() - started:.0f} s",
                          flush=True)  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    with (args.out / "gpu_check.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    table(rows, devices, batches, models)
    print(f"# {time.perf_counter() - started:.0f} s; wrote {args.out / 'gpu_check.csv'}")


def table(rows: list[dict], devices: list[str], batches: list[int], models: list[str]) -> None:
    """One line per model and batch size: throughput (rows/s) and p99 (ms) for every column."""
    cols = [(d, m) for d in devices for m in ("in-process", "served")]
    index = {(r["model"], r["device"], r["mode"], r["batch_size"]): r for r in rows}
    head = " | ".join(f"{d} {m}" for d, m in cols)
    print(f"\n| model | batch | {head} |\n|---|---|" + "---|" * len(cols))
    for name in models:
        for b in batches:
            cells = []
            for d, m in cols:
                r = index[(name, d, m, b)]
                cells.append(f"{r['throughput']:,.0f}/s, p99 {r['p99_ms']:.2f} ms")
            print(f"| {name} | {b} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
