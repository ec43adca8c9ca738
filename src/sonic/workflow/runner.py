"""``sonic workflow run``: the DeepMET job, direct or as a service, on one process or Dask.

Per file, chunk by chunk: read the ``PFCands_*`` branches with uproot (I/O),
build the CMSSW inputs (:mod:`sonic.workflow.inputs`), infer, and write one
row per event (ids, DeepMET's MET as NanoAOD's ``DeepMETResolutionTune_pt/phi``
and the MET columns the file carries, for resolution studies) to Parquet or
ROOT.  Inference runs either

- ``direct``: in-process onnxruntime on the model file; or
- ``service``: through :class:`sonic.client.Client` (any servers, gRPC or
  HTTP, retries, local fallback, shared memory with a server on the same
  node), ``sync`` or ``async``; in ``async`` mode
  the next chunk is read and built while the server works on this one, as
  CMSSW's ExternalWork lets other modules run while a request is in flight.

Every stage is timed: I/O, input building, inference as the client saw it,
inference as the server reported it (queue + compute, from the statistics
extension) and output.  :func:`run_files` spreads files over a Dask
``distributed`` cluster (a LocalCluster by default, or a scheduler address),
one task per file, each writing its own output.
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sonic.workflow.inputs import (
    INPUT_NAMES,
    MAX_N_PF,
    NORM_FACTOR,
    OUTPUT_NAME,
    PF_BRANCHES,
    DeepMETInputs,
    build_inputs,
)

EVENT_BRANCHES = ("run", "luminosityBlock", "event")
#: MET columns copied to the output when the file has them.
MET_BRANCHES = ("GenMET_pt", "GenMET_phi", "RawPFMET_pt", "RawPFMET_phi", "PuppiMET_pt",
                "PuppiMET_phi", "Pileup_nPU", "GenProcess_id")  # fmt: skip
STAGES = ("io", "inputs", "infer_client", "infer_server", "output")


@dataclass(slots=True)
class JobConfig:
    """What one job does; picklable, so Dask can send it to workers."""

    mode: str = "direct"  # direct | service
    model: Path | None = None  # the ONNX file, for direct
    model_name: str = "deepmet"
    servers: tuple[str, ...] = ()
    server_file: Path | None = None
    protocol: str = "grpc"
    client_mode: str = "async"  # sync | async
    shared_memory: str = "auto"  # auto | on | off (see sonic.client.shm)
    fallback_repository: Path | None = None
    #: Seconds to wait for servers that refuse while they start (a site scaled to zero).
    wake_timeout_s: float = 0.0
    chunk_size: int = 100
    max_events: int | None = None  # per file, as cmsRun's maxEvents
    max_n_pf: int = MAX_N_PF
    norm_factor: float = NORM_FACTOR
    ignore_leptons: bool = False
    output_format: str = "parquet"  # parquet | root
    threads: int = 0  # onnxruntime intra-op threads for direct; 0 = its default

    def __post_init__(self) -> None:
        if self.mode not in ("direct", "service"):
            raise ValueError(f"mode must be 'direct' or 'service', not {self.mode!r}")
        if self.client_mode not in ("sync", "async"):
            raise ValueError(f"client_mode must be 'sync' or 'async', not {self.client_mode!r}")
        if self.output_format not in ("parquet", "root"):
            raise ValueError(
                f"output_format must be 'parquet' or 'root', not {self.output_format!r}"
            )
        if self.mode == "direct" and self.model is None:
            raise ValueError("direct mode needs the model file (model=...)")
        if self.mode == "service" and not (self.servers or self.server_file):
            raise ValueError("service mode needs servers (servers=... or server_file=...)")
        if self.chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, not {self.chunk_size}")


@dataclass(slots=True)
class JobResult:
    """Events done, wall time and the time of each stage (seconds), per job or summed."""

    events: int = 0
    wall_s: float = 0.0
    stages: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    outputs: list[str] = field(default_factory=list)

    @property
    def events_per_s(self) -> float:
        return self.events / self.wall_s if self.wall_s else 0.0

    def add(self, other: JobResult) -> None:
        self.events += other.events
        for k, v in other.stages.items():
            self.stages[k] += v
        self.outputs += other.outputs

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "events_per_s": self.events_per_s}


@dataclass(slots=True)
class _InFlight:
    """One chunk's inference: its result, and how long the client waited for it."""

    result: Callable[[], np.ndarray]
    seconds: Callable[[], float]


def _done(out: np.ndarray, seconds: float) -> _InFlight:
    return _InFlight(lambda: out, lambda: seconds)


class _Direct:
    def __init__(self, cfg: JobConfig) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        if cfg.threads:
            opts.intra_op_num_threads = cfg.threads
        self.session = ort.InferenceSession(str(cfg.model), opts,
                                            providers=["CPUExecutionProvider"])  # fmt: skip

    def submit(self, tensors: dict[str, np.ndarray]) -> _InFlight:
        t0 = time.perf_counter()
        out = self.session.run([OUTPUT_NAME], tensors)[0]
        return _done(out, time.perf_counter() - t0)

    def server_ns(self) -> int:
        return 0

    def close(self) -> None:
        pass


class _Service:
    def __init__(self, cfg: JobConfig) -> None:
        from sonic.client import Client

        self.client = Client(cfg.model_name, list(cfg.servers), server_file=cfg.server_file,
                             protocol=cfg.protocol, outputs=[OUTPUT_NAME],
                             fallback_repository=cfg.fallback_repository,
                             shared_memory=cfg.shared_memory,
                             wake_timeout=cfg.wake_timeout_s)  # fmt: skip
        self.asynchronous = cfg.client_mode == "async"

    def submit(self, tensors: dict[str, np.ndarray]) -> _InFlight:
        t0 = time.perf_counter()
        if not self.asynchronous:
            out = self.client.infer(tensors)[OUTPUT_NAME]
            return _done(out, time.perf_counter() - t0)
        fut: concurrent.futures.Future[dict[str, np.ndarray]] = self.client.infer_future(tensors)
        done: list[float] = []
        fut.add_done_callback(lambda _: done.append(time.perf_counter()))
        # Futures wake waiters before running callbacks: ``done`` may still be empty.
        return _InFlight(lambda: fut.result()[OUTPUT_NAME],
                         lambda: (done[0] if done else time.perf_counter()) - t0)  # fmt: skip

    def server_ns(self) -> int:
        return sum(q + c for q, c in self.client.server_times().values())

    def close(self) -> None:
        self.client.close()


def _chunks(path: Path, step: int, stop: int | None) -> Iterator[tuple[dict[str, Any], float]]:
    """(arrays, seconds spent reading) per chunk of the file's ``Events`` tree."""
    import uproot

    with uproot.open(path) as f:
        if "Events" not in f:
            raise KeyError(f"{path} has no 'Events' tree; it has {list(f.keys())}")
        tree = f["Events"]
        have = set(tree.keys())
        wanted = [f"PFCands_{b}" for b in PF_BRANCHES]
        missing = [b for b in wanted if b not in have]
        if missing:
            raise KeyError(f"{path}: the Events tree lacks {missing}")
        wanted += [b for b in (*EVENT_BRANCHES, *MET_BRANCHES) if b in have]
        t0 = time.perf_counter()
        for arrays in tree.iterate(wanted, step_size=step, entry_stop=stop, library="ak",
                                   how=dict):  # fmt: skip
            t1 = time.perf_counter()
            yield arrays, t1 - t0
            t0 = time.perf_counter()


def _rows(arrays: dict[str, Any], inputs: DeepMETInputs, output: np.ndarray,
          cfg: JobConfig) -> dict[str, np.ndarray]:  # fmt: skip
    import awkward as ak

    met = inputs.met(output, cfg.norm_factor)
    rows = {k: ak.to_numpy(arrays[k]) for k in (*EVENT_BRANCHES, *MET_BRANCHES) if k in arrays}
    rows["DeepMETResolutionTune_pt"] = np.hypot(met[:, 0], met[:, 1]).astype(np.float32)
    rows["DeepMETResolutionTune_phi"] = np.arctan2(met[:, 1], met[:, 0]).astype(np.float32)
    rows["nPFCands_used"] = inputs.n_candidates.astype(np.int32)
    return rows


def _write(rows: list[dict[str, np.ndarray]], out: Path, fmt: str) -> Path:
    merged = {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table(merged), out)
    else:
        import uproot

        with uproot.recreate(out) as f:
            f.mktree("Events", {k: v.dtype for k, v in merged.items()}).extend(merged)
    return out


def output_path(path: Path, out_dir: Path, fmt: str) -> Path:
    return out_dir / f"{path.stem}.deepmet.{'parquet' if fmt == 'parquet' else 'root'}"


def run_file(path: Path | str, cfg: JobConfig, out_dir: Path | None = None,
             progress: Callable[[int], None] | None = None) -> JobResult:  # fmt: skip
    """Run the job on one file; with ``out_dir``, write its per-event output there."""
    path = Path(path)
    engine = _Direct(cfg) if cfg.mode == "direct" else _Service(cfg)
    result = JobResult()
    st = result.stages
    rows: list[dict[str, np.ndarray]] = []
    pending: tuple[dict[str, Any], DeepMETInputs, _InFlight] | None = None

    def finish(item: tuple[dict[str, Any], DeepMETInputs, _InFlight]) -> None:
        arrays, inputs, inflight = item
        output = inflight.result()
        st["infer_client"] += inflight.seconds()
        t0 = time.perf_counter()
        rows.append(_rows(arrays, inputs, output, cfg))
        st["output"] += time.perf_counter() - t0
        result.events += len(inputs)
        if progress is not None:
            progress(len(inputs))

    if out_dir is not None:  # import the writer now, not inside the timed output stage
        __import__("pyarrow.parquet" if cfg.output_format == "parquet" else "uproot")
    try:
        server0 = engine.server_ns()
        t_start = time.perf_counter()
        for arrays, io_s in _chunks(path, cfg.chunk_size, cfg.max_events):
            st["io"] += io_s
            t0 = time.perf_counter()
            pf = {b: arrays[f"PFCands_{b}"] for b in PF_BRANCHES}
            inputs = build_inputs(pf, max_n_pf=cfg.max_n_pf, norm_factor=cfg.norm_factor,
                                  ignore_leptons=cfg.ignore_leptons)  # fmt: skip
            tensors = {k: inputs.tensors[k] for k in INPUT_NAMES}
            st["inputs"] += time.perf_counter() - t0
            item = (arrays, inputs, engine.submit(tensors))
            if pending is not None:  # async: the previous chunk was in flight meanwhile
                finish(pending)
            pending = item
        if pending is not None:
            finish(pending)
        if out_dir is not None and rows:
            t0 = time.perf_counter()
            result.outputs.append(str(_write(rows, output_path(path, out_dir, cfg.output_format),
                                             cfg.output_format)))  # fmt: skip
            st["output"] += time.perf_counter() - t0
        result.wall_s = time.perf_counter() - t_start
        st["infer_server"] = (engine.server_ns() - server0) / 1e9
    finally:
        engine.close()
    return result


def run_files(
    files: Sequence[Path | str],
    cfg: JobConfig,
    out_dir: Path,
    *,
    dask: str | None = None,
    workers: int = 2,
    progress: Callable[[int], None] | None = None,
) -> JobResult:
    """Run the job over files: in this process (``dask=None``), or on Dask.

    ``dask="local"`` starts a LocalCluster of ``workers`` single-threaded
    processes; any other value is a scheduler address (``tcp://host:8786``).
    """
    total = JobResult()
    t0 = time.perf_counter()
    if dask is None:
        for f in files:
            total.add(run_file(f, cfg, out_dir, progress))
    else:
        from distributed import Client as DaskClient
        from distributed import LocalCluster, as_completed

        cluster = None
        if dask == "local":
            cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                   dashboard_address=None)  # fmt: skip
        try:
            with DaskClient(cluster or dask) as client:
                futures = [client.submit(run_file, str(f), cfg, out_dir, pure=False)
                           for f in files]  # fmt: skip
                for fut in as_completed(futures):
                    res: JobResult = fut.result()
                    total.add(res)
                    if progress is not None:
                        progress(res.events)
        finally:
            if cluster is not None:
                cluster.close()
    total.wall_s = time.perf_counter() - t0
    total.outputs.sort()
    return total
