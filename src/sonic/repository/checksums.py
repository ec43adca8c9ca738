"""MD5 checksums of a model's files, as Triton's checksum agent and CMSSW's config tool keep them.

- :func:`checksums` / :func:`update_checksums`: the MD5 checksum convention,
  a ``model_repository_agents`` entry named ``checksum`` with parameters
  ``MD5:<version>/<file>`` -> hex digest, as Triton's checksum agent and the
  CMSSW client read it.
- :func:`verify_checksums`: refuse a model whose files do not match.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from tritonclient.grpc import model_config_pb2 as mc

from sonic.errors import ModelConfigError
from sonic.repository.config import CONFIG_FILE, load_config, save_config
from sonic.repository.layout import file_inside
from sonic.repository.versions import available_versions

CHECKSUM_AGENT = "checksum"


def md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def model_files(model_dir: Path) -> list[str]:
    """Files under the numeric version directories, relative to the model directory."""
    out: list[str] = []
    for v in available_versions(model_dir):
        out += sorted(
            str(p.relative_to(model_dir)) for p in (model_dir / str(v)).rglob("*") if p.is_file()
        )
    return out


def checksums(model_dir: Path) -> dict[str, str]:
    """``MD5:<relative file>`` -> digest for every versioned file of the model."""
    return {f"MD5:{rel}": md5(model_dir / rel) for rel in model_files(model_dir)}


def _agent(config: mc.ModelConfig) -> mc.ModelRepositoryAgents.Agent | None:
    return next(
        (a for a in config.model_repository_agents.agents if a.name == CHECKSUM_AGENT), None
    )


def verify_checksums(config: mc.ModelConfig, model_dir: Path, model: str) -> None:
    """Every checksum the config lists must match its file (no-op without the agent)."""
    agent = _agent(config)
    if agent is None:
        return
    for key, expected in agent.parameters.items():
        algorithm, _, rel = key.partition(":")
        field = f"model_repository_agents.checksum[{key}]"
        if algorithm != "MD5" or not rel:
            raise ModelConfigError(model, field, "keys must look like 'MD5:<version>/<file>'")
        path = file_inside(model_dir, rel, model, field)
        if not path.is_file():
            raise ModelConfigError(model, field, f"names no file of the model ({rel})")
        actual = md5(path)
        if actual != expected:
            raise ModelConfigError(
                model, field,
                f"MD5 of {rel} is {actual}, config.pbtxt says {expected}: the model file changed "
                "since its checksum was recorded (update it with 'sonic repo checksum --update')",
            )  # fmt: skip


def checksum_mismatches(model_dir: Path) -> list[str]:
    """Human-readable problems of a model's recorded checksums (empty when all match)."""
    config = load_config(model_dir, required=True)
    agent = _agent(config)
    if agent is None:
        return [f"{model_dir.name}: no checksum agent in {CONFIG_FILE}"]
    want = checksums(model_dir)
    have = dict(agent.parameters)
    problems = [f"{model_dir.name}: {k} is {want[k]}, recorded {have.get(k, 'nothing')}"
                for k in want if have.get(k) != want[k]]  # fmt: skip
    problems += [f"{model_dir.name}: {k} is recorded but no such file exists"
                 for k in have if k not in want]  # fmt: skip
    return problems


def update_checksums(model_dir: Path) -> dict[str, str]:
    """Record the current checksums in ``config.pbtxt``; returns them."""
    config = load_config(model_dir, required=True)
    agent = _agent(config) or config.model_repository_agents.agents.add(name=CHECKSUM_AGENT)
    agent.parameters.clear()
    sums = checksums(model_dir)
    agent.parameters.update(sums)
    save_config(config, model_dir)
    return sums
