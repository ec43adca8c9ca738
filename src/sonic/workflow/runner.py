"""``sonic workflow run``: the physics tasks, direct or as a service, on one process or Dask.

Per file, chunk by chunk: read the branches the tasks need with uproot (I/O),
build each task's requests (:mod:`sonic.workflow.tasks`: DeepMET sends one per
chunk, the taggers and the clustering one per event), infer, and write the
tasks' columns (one row per event: ids, DeepMET's MET beside the file's MET
columns, the ``Jet``, ``FatJet`` and ``AK4Jet`` collections) to Parquet or
ROOT.  Several tasks chain in one job, each
with its own model, on the same chunks.  Inference runs either

- ``direct``: in-process onnxruntime on each model's file (a step with no
  network, the ``clustering`` task, runs its own code); or
- ``service``: through one :class:`sonic.client.Client` per model (any servers,
  gRPC or HTTP, retries, local fallback, shared memory with a server on the
  same node), ``sync`` or ``async``; in ``async`` mode every request of a
  chunk is in flight at once and the next chunk is read and built while the
  server works on this one, as CMSSW's ExternalWork lets other modules run
  while a request is in flight.

Every stage is timed, summed over the tasks: I/O, building the requests,
inference as the client saw it (first request sent to last answer, per chunk
and task), inference as the server reported it (queue + compute, from the
statistics extension) and output.  :func:`run_files` spreads files over a Dask
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

from sonic.workflow.inputs import MAX_N_PF, NORM_FACTOR
from sonic.workflow.tasks import EVENT_BRANCHES, TASKS, Prepared, Task, make_task

STAGES = ("io", "inputs", "infer_client", "infer_server", "output")
#: Where direct mode finds each task's model when no file is named:
#: ``<repository>/<model>/<the task's version, or 1>``.
DEFAULT_REPOSITORY = Path("examples/model_repository")


@dataclass(slots=True)
class JobConfig:
    """What one job does; picklable, so Dask can send it to workers."""

    mode: str = "direct"  # direct | service
    #: The tasks, run in this order on every chunk (see sonic.workflow.tasks).
    tasks: tuple[str, ...] = ("deepmet",)
    #: The ONNX file for direct mode, for a single task (else taken from model_repository).
    model: Path | None = None
    #: The model's name on the servers, for a single task ("" = the task's own).
    model_name: str = ""
    model_repository: Path = DEFAULT_REPOSITORY
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
        unknown = [t for t in self.tasks if t not in TASKS]
        if unknown or not self.tasks or len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"tasks must be distinct names from {sorted(TASKS)}, "
                             f"not {list(self.tasks)}")  # fmt: skip
        if (self.model is not None or self.model_name) and len(self.tasks) > 1:
            raise ValueError("model and model_name name one task's model: with several tasks, "
                             "serve or write each under its own name")  # fmt: skip
        if self.mode == "service" and not (self.servers or self.server_file):
            raise ValueError("service mode needs servers (servers=... or server_file=...)")
        if self.chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, not {self.chunk_size}")

    def make_tasks(self) -> list[Task]:
        options = {"max_n_pf": self.max_n_pf, "norm_factor": self.norm_factor,
                   "ignore_leptons": self.ignore_leptons}  # fmt: skip
        return [make_task(t, **options) for t in self.tasks]

    def model_name_of(self, task: Task) -> str:
        return self.model_name or task.model_name

    def model_file(self, task: Task) -> Path:
        """The ONNX file direct mode runs for ``task``."""
        path = self.model or (self.model_repository / self.model_name_of(task)
                              / (task.model_version or "1") / "model.onnx")  # fmt: skip
        if not Path(path).is_file():
            raise FileNotFoundError(
                f"direct mode needs the {task.name} model: {path} does not exist (give the "
                "file, or a repository holding it)"
            )
        return Path(path)


@dataclass(slots=True)
class JobResult:
    """Events done, wall time and the time of each stage (seconds), per job or summed."""

    events: int = 0
    wall_s: float = 0.0
    stages: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    outputs: list[str] = field(default_factory=list)
    #: Requests sent per task (DeepMET: one per chunk; ParticleNet: one per event with jets).
    requests: dict[str, int] = field(default_factory=dict)

    @property
    def events_per_s(self) -> float:
        return self.events / self.wall_s if self.wall_s else 0.0

    def add(self, other: JobResult) -> None:
        self.events += other.events
        for k, v in other.stages.items():
            self.stages[k] += v
        for k, n in other.requests.items():
            self.requests[k] = self.requests.get(k, 0) + n
        self.outputs += other.outputs

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "events_per_s": self.events_per_s}


@dataclass(slots=True)
class _InFlight:
    """One request's answer (a callable that waits for it), when it was sent, and when it
    was answered (a callable: an asynchronous answer is timed as it arrives)."""

    result: Callable[[], np.ndarray]
    sent: float
    answered: Callable[[], float]


def _done(out: np.ndarray, sent: float) -> _InFlight:
    end = time.perf_counter()
    return _InFlight(lambda: out, sent, lambda: end)


class _Direct:
    def __init__(self, path: Path, output: str, threads: int) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        self.output = output
        self.session = ort.InferenceSession(str(path), opts,
                                            providers=["CPUExecutionProvider"])  # fmt: skip

    def submit(self, tensors: dict[str, np.ndarray]) -> _InFlight:
        t0 = time.perf_counter()
        return _done(self.session.run([self.output], tensors)[0], t0)

    def server_ns(self) -> int:
        return 0

    def close(self) -> None:
        pass


class _Local:
    """Direct mode for a step with no model file: the task computes it in the job."""

    def __init__(self, task: Task) -> None:
        self.task = task

    def submit(self, tensors: dict[str, np.ndarray]) -> _InFlight:
        t0 = time.perf_counter()
        return _done(self.task.compute(tensors), t0)

    def server_ns(self) -> int:
        return 0

    def close(self) -> None:
        pass


class _Service:
    def __init__(self, cfg: JobConfig, model_name: str, version: str, output: str) -> None:
        from sonic.client import Client

        self.output = output
        self.client = Client(model_name, list(cfg.servers), version=version,
                             server_file=cfg.server_file,
                             protocol=cfg.protocol, outputs=[output],
                             fallback_repository=cfg.fallback_repository,
                             shared_memory=cfg.shared_memory,
                             wake_timeout=cfg.wake_timeout_s)  # fmt: skip
        self.asynchronous = cfg.client_mode == "async"

    def submit(self, tensors: dict[str, np.ndarray]) -> _InFlight:
        t0 = time.perf_counter()
        if not self.asynchronous:
            return _done(self.client.infer(tensors)[self.output], t0)
        fut: concurrent.futures.Future[dict[str, np.ndarray]] = self.client.infer_future(tensors)
        done: list[float] = []
        fut.add_done_callback(lambda _: done.append(time.perf_counter()))
        # Futures wake waiters before running callbacks: ``done`` may still be empty.
        return _InFlight(lambda: fut.result()[self.output], t0,
                         lambda: done[0] if done else time.perf_counter())  # fmt: skip

    def server_ns(self) -> int:
        return sum(q + c for q, c in self.client.server_times().values())

    def close(self) -> None:
        self.client.close()


Engine = _Direct | _Local | _Service


def _engine(cfg: JobConfig, task: Task) -> Engine:
    if cfg.mode == "direct":
        if task.local:
            return _Local(task)
        return _Direct(cfg.model_file(task), task.output, cfg.threads)
    return _Service(cfg, cfg.model_name_of(task), task.model_version, task.output)


def _chunks(path: Path, tasks: list[Task], step: int,
            stop: int | None) -> Iterator[tuple[dict[str, Any], float]]:  # fmt: skip
    """(arrays, seconds spent reading) per chunk of the file's ``Events`` tree."""
    import uproot

    with uproot.open(path) as f:
        if "Events" not in f:
            raise KeyError(f"{path} has no 'Events' tree; it has {list(f.keys())}")
        tree = f["Events"]
        have = set(tree.keys())
        wanted = list(dict.fromkeys(b for t in tasks for b in t.required))
        missing = [b for b in wanted if b not in have]
        if missing:
            raise KeyError(f"{path}: the Events tree lacks {missing}")
        extra = (*EVENT_BRANCHES, *(b for t in tasks for b in t.optional))
        wanted += [b for b in dict.fromkeys(extra) if b in have and b not in wanted]
        t0 = time.perf_counter()
        for arrays in tree.iterate(wanted, step_size=step, entry_stop=stop, library="ak",
                                   how=dict):  # fmt: skip
            t1 = time.perf_counter()
            yield arrays, t1 - t0
            t0 = time.perf_counter()


def _write(rows: list[dict[str, Any]], out: Path, fmt: str) -> Path:
    import awkward as ak

    merged = {k: ak.concatenate([r[k] for r in rows]) for k in rows[0]}
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        ak.to_parquet(ak.zip(merged, depth_limit=1), out)
    else:
        import uproot

        from sonic.workflow.generate import events_tree

        with uproot.recreate(out) as f:
            events_tree(f, merged).extend(merged)
    return out


def output_path(path: Path, out_dir: Path, fmt: str, tasks: Sequence[str] = ("deepmet",)) -> Path:
    return out_dir / f"{path.stem}.{'-'.join(tasks)}.{'parquet' if fmt == 'parquet' else 'root'}"


#: One chunk's work in flight: its arrays, and per task what was prepared and sent.
_Pending = tuple[dict[str, Any], list[tuple[Prepared, list[_InFlight]]]]


def run_file(path: Path | str, cfg: JobConfig, out_dir: Path | None = None,
             progress: Callable[[int], None] | None = None) -> JobResult:  # fmt: skip
    """Run the job's tasks on one file; with ``out_dir``, write its per-event output there."""
    path = Path(path)
    tasks = cfg.make_tasks()
    engines = [_engine(cfg, t) for t in tasks]
    result = JobResult(requests={t.name: 0 for t in tasks})
    st = result.stages
    rows: list[dict[str, Any]] = []
    pending: _Pending | None = None

    def finish(item: _Pending) -> None:
        arrays, sent = item
        columns: dict[str, Any] = {k: arrays[k] for k in EVENT_BRANCHES if k in arrays}
        for task, (prepared, inflight) in zip(tasks, sent, strict=True):
            outputs = [f.result() for f in inflight]
            if inflight:
                st["infer_client"] += (max(f.answered() for f in inflight)
                                       - min(f.sent for f in inflight))  # fmt: skip
            t0 = time.perf_counter()
            columns.update(task.columns(arrays, prepared, outputs))
            st["output"] += time.perf_counter() - t0
        rows.append(columns)
        n = len(arrays[tasks[0].required[0]])
        result.events += n
        if progress is not None:
            progress(n)

    if out_dir is not None:  # import the writer now, not inside the timed output stage
        __import__("pyarrow.parquet" if cfg.output_format == "parquet" else "uproot")
    try:
        server0 = sum(e.server_ns() for e in engines)
        t_start = time.perf_counter()
        for arrays, io_s in _chunks(path, tasks, cfg.chunk_size, cfg.max_events):
            st["io"] += io_s
            sent = []
            for task, engine in zip(tasks, engines, strict=True):
                t0 = time.perf_counter()
                prepared = task.prepare(arrays)
                st["inputs"] += time.perf_counter() - t0
                result.requests[task.name] += len(prepared.requests)
                sent.append((prepared, [engine.submit(r) for r in prepared.requests]))
            if pending is not None:  # async: the previous chunk was in flight meanwhile
                finish(pending)
            pending = (arrays, sent)
        if pending is not None:
            finish(pending)
        if out_dir is not None and rows:
            t0 = time.perf_counter()
            out = output_path(path, out_dir, cfg.output_format, cfg.tasks)
            result.outputs.append(str(_write(rows, out, cfg.output_format)))
            st["output"] += time.perf_counter() - t0
        result.wall_s = time.perf_counter() - t_start
        st["infer_server"] = (sum(e.server_ns() for e in engines) - server0) / 1e9
    finally:
        for e in engines:
            e.close()
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
