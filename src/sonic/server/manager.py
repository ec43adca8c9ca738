"""Model lifecycle: which versions serve, their states, and model control.

Modes follow ``--model-control-mode``: ``none`` loads everything at start,
``poll`` also rescans the repositories every ``--repository-poll-secs``, and
``explicit`` loads only ``--load-model`` names and whatever clients ask for.

A (re)load builds the new versions completely before swapping them in, and
the versions they replace are drained before they are closed, so requests in
flight during a reload or unload always complete.  A failed load leaves the
model UNAVAILABLE with the reason, and a model that was serving keeps serving.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from dataclasses import dataclass, field
from pathlib import Path

from tritonclient.grpc import model_config_pb2 as mc

from sonic.errors import ModelNotFound, SonicError, Unavailable
from sonic.protocol.tensors import checked_name
from sonic.repository.layout import ModelRepository, check_model_name
from sonic.server.loader import LoadOptions, load_model, materialize_files, remove_materialized
from sonic.server.model import LoadedModel
from sonic.server.settings import ControlMode

__all__ = ["ControlMode", "ModelManager", "State"]

log = logging.getLogger("sonic.server")


class State(enum.Enum):
    READY = "READY"
    UNAVAILABLE = "UNAVAILABLE"
    LOADING = "LOADING"
    UNLOADING = "UNLOADING"


@dataclass(slots=True)
class ModelEntry:
    name: str
    state: State = State.LOADING
    reason: str = ""
    config: mc.ModelConfig | None = None
    versions: dict[int, LoadedModel] = field(default_factory=dict)
    fingerprint: tuple[tuple[str, int, int], ...] = ()
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


def _fingerprint(path: Path) -> tuple[tuple[str, int, int], ...]:
    """Names, sizes and mtimes of a model directory: a change means reload."""
    out = []
    for p in sorted(path.rglob("*")):
        try:
            st = p.stat()
        except OSError:
            continue
        out.append((str(p.relative_to(path)), st.st_size, st.st_mtime_ns))
    return tuple(out)


class ModelManager:
    def __init__(
        self,
        repository: ModelRepository,
        mode: ControlMode,
        options: LoadOptions,
        startup_models: list[str] | None = None,
    ) -> None:
        self.repository = repository
        self.mode = mode
        self.options = options
        self.startup_models = startup_models or []
        self.models: dict[str, ModelEntry] = {}

    # -- lookup --------------------------------------------------------------
    def get(self, name: str, version: str = "") -> LoadedModel:
        """The serving version (latest when ``version`` is empty), or NOT_FOUND/UNAVAILABLE."""
        entry = self.models.get(checked_name(name, "model"))
        if entry is None:
            raise ModelNotFound(name, version, known=self.models)
        if not entry.versions:
            why = entry.reason if entry.state is State.UNAVAILABLE else entry.state.value.lower()
            raise Unavailable(
                f"Request for unknown model: '{name}' has no available versions ({why})"
            )
        if not version or version == "-1":
            return entry.versions[max(entry.versions)]
        try:
            return entry.versions[int(version)]
        except (ValueError, KeyError):
            raise ModelNotFound(name, version, known=self.models) from None

    def ready(self, name: str, version: str = "") -> bool:
        try:
            self.get(name, version)
        except SonicError:
            return False
        return True

    def serving(self) -> list[LoadedModel]:
        return [m for e in self.models.values() for m in e.versions.values()]

    # -- control -------------------------------------------------------------
    async def startup(self) -> None:
        found, clashes = self.repository.scan()
        for name, err in clashes.items():
            self.models[name] = ModelEntry(name, State.UNAVAILABLE, str(err))
            log.error("%s", err)
        if self.mode is ControlMode.EXPLICIT:
            names = list(found) if "*" in self.startup_models else self.startup_models
        else:
            names = list(found)
        await asyncio.gather(*(self._load_logged(n) for n in names))

    async def _load_logged(self, name: str) -> None:
        try:
            await self.load(name)
        except SonicError as err:
            log.error("failed to load model '%s': %s", name, err)

    async def load(
        self, name: str, config_json: str | None = None, files: dict[str, bytes] | None = None
    ) -> None:
        """Load or reload ``name``; raises on failure after recording the reason."""
        check_model_name(name)
        if not files:
            self.repository.find(name)  # NOT_FOUND before any state exists for the name
        entry = self.models.get(name)
        created = entry is None
        if entry is None:
            entry = self.models[name] = ModelEntry(name)
        try:
            await self._load_entry(entry, config_json, files)
        except BaseException:
            # A name the repository does not hold (a load from file parameters that failed)
            # leaves no entry behind: only repository models are listed UNAVAILABLE.
            if created and not entry.versions and name not in self.repository.scan()[0]:
                self.models.pop(name, None)
            raise

    async def _load_entry(
        self, entry: ModelEntry, config_json: str | None, files: dict[str, bytes] | None
    ) -> None:
        name = entry.name
        async with entry.lock:
            temp_dir: Path | None = None
            try:
                if files:
                    if config_json is None:
                        raise Unavailable(
                            f"load of model '{name}' with file parameters needs a 'config' "
                            "parameter too, as in Triton"
                        )
                    model_dir = temp_dir = materialize_files(name, files)
                else:
                    model_dir = self.repository.find(name).path
                if not entry.versions:
                    entry.state = State.LOADING
                fingerprint = _fingerprint(model_dir) if temp_dir is None else ()
                config, versions = await asyncio.to_thread(
                    load_model, name, model_dir, self.options, config_json, self.get
                )
            except SonicError as err:
                if not entry.versions:
                    entry.state, entry.reason = State.UNAVAILABLE, str(err)
                raise
            except Exception as err:  # a backend's own error type: keep serving, report it
                if not entry.versions:
                    entry.state, entry.reason = State.UNAVAILABLE, f"{type(err).__name__}: {err}"
                raise Unavailable(f"failed to load '{name}': {type(err).__name__}: {err}") from err
            finally:
                if temp_dir is not None:
                    remove_materialized(temp_dir)
            old = entry.versions
            entry.versions = versions
            entry.config = config
            entry.state, entry.reason = State.READY, ""
            entry.fingerprint = fingerprint
            log.info("loaded model '%s' version(s) %s", name, sorted(versions))
        await self._retire(list(old.values()))
        if self.mode is ControlMode.EXPLICIT and config.platform == "ensemble":
            # Loading an ensemble loads the models its steps use, as Triton does.
            for step in config.ensemble_scheduling.step:
                if step.model_name != name and not self.ready(step.model_name):
                    await self.load(step.model_name)

    async def unload(self, name: str) -> None:
        entry = self.models.get(name)
        if entry is None:
            self.repository.find(name)  # NOT_FOUND for a name that is nowhere
            return
        async with entry.lock:
            old = list(entry.versions.values())
            entry.versions = {}
            entry.state, entry.reason = State.UNLOADING, ""
            await self._retire(old)
            entry.state, entry.reason = State.UNAVAILABLE, "unloaded"
            log.info("unloaded model '%s'", name)

    async def _retire(self, versions: list[LoadedModel]) -> None:
        for m in versions:
            await m.drain()
            await asyncio.to_thread(m.close)

    async def poll_once(self) -> None:
        """Load new or changed models, unload removed ones (poll mode)."""
        found, _ = self.repository.scan()
        for name, loc in found.items():
            entry = self.models.get(name)
            if entry is None or _fingerprint(loc.path) != entry.fingerprint:
                await self._load_logged(name)
        for name, entry in list(self.models.items()):
            if name not in found and entry.versions:
                await self.unload(name)

    async def poll_forever(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.poll_once()
            except Exception:  # keep polling whatever one scan hits
                log.exception("repository poll failed")

    # -- reporting -----------------------------------------------------------
    def index(self, ready_only: bool) -> list[dict[str, str]]:
        """RepositoryIndex rows: one per version, or one per model without versions."""
        try:
            found, _ = self.repository.scan()
        except OSError:
            found = {}
        rows: list[dict[str, str]] = []
        for name in sorted(set(found) | set(self.models)):
            entry = self.models.get(name)
            if entry is None:
                if not ready_only:
                    rows.append({"name": name, "version": "", "state": "", "reason": ""})
                continue
            if entry.versions:
                rows.extend(
                    {"name": name, "version": str(v), "state": "READY", "reason": ""}
                    for v in sorted(entry.versions)
                )
            elif not ready_only:
                rows.append(
                    {
                        "name": name,
                        "version": "",
                        "state": entry.state.value,
                        "reason": entry.reason,
                    }
                )
        return rows

    async def close(self) -> None:
        for entry in self.models.values():
            old = list(entry.versions.values())
            entry.versions = {}
            await self._retire(old)
