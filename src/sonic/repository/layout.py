"""Triton's repository layout: ``<repo>/<model>/config.pbtxt`` and ``<repo>/<model>/<version>/``.

Several repositories may be given; a model name must be unique across them.
Names never reach the file system unchecked: a name is only ever matched
against directory entries that a scan found.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sonic.errors import InvalidArgument, ModelConfigError, ModelNotFound, shown
from sonic.protocol.tensors import MAX_NAME_LENGTH


def check_model_name(name: str) -> str:
    """A model name is one directory name: never a path, so it cannot leave a repository."""
    if (not name or len(name) > MAX_NAME_LENGTH or name in (".", "..") or name.startswith(".")
            or any(c in name for c in "/\\\0")):  # fmt: skip
        raise InvalidArgument(
            f"invalid model name {shown(name)!r}: a model name is a single directory name (no '/', "
            f"'\\', NUL or leading '.', at most {MAX_NAME_LENGTH} characters)"
        )
    return name


def file_inside(
    model_dir: Path, name: str, model: str, field: str, base: Path | None = None
) -> Path:
    """``(base or model_dir) / name`` for a file a config names, refused unless it stays inside
    the model directory: no absolute path, no '..', no symbolic link that leads out.  A config
    can be set by an admin over the network (a load with a config override), and a file it
    names is read, and for labels returned to callers."""
    rel = Path(name)
    if rel.is_absolute() or ".." in rel.parts:
        raise ModelConfigError(model, field, f"'{shown(name)}' must be a relative path inside "
                               "the model directory (no leading '/', no '..')")  # fmt: skip
    path = (base or model_dir) / rel
    if path.exists() and not path.resolve().is_relative_to(model_dir.resolve()):
        raise ModelConfigError(model, field, f"'{shown(name)}' leads outside the model "
                               "directory through a symbolic link")  # fmt: skip
    return path


@dataclass(frozen=True, slots=True)
class ModelLocation:
    name: str
    path: Path


class ModelRepository:
    """The set of model directories under one or more repository roots."""

    def __init__(self, roots: list[Path]) -> None:
        self.roots = [Path(r).resolve() for r in roots]
        for root in self.roots:
            if not root.is_dir():
                raise FileNotFoundError(f"model repository '{root}' is not a directory")

    def scan(self) -> tuple[dict[str, ModelLocation], dict[str, ModelConfigError]]:
        """Every model directory, and the names that appear in several roots."""
        found: dict[str, ModelLocation] = {}
        clashes: dict[str, ModelConfigError] = {}
        for root in self.roots:
            for entry in sorted(root.iterdir()):
                if not entry.is_dir() or entry.name.startswith("."):
                    continue
                if entry.name in found:
                    clashes[entry.name] = ModelConfigError(
                        entry.name,
                        "name",
                        f"found in two repositories: {found[entry.name].path} and {entry}",
                    )
                    continue
                found[entry.name] = ModelLocation(entry.name, entry)
        for name in clashes:
            found.pop(name, None)
        return found, clashes

    def find(self, name: str) -> ModelLocation:
        found, clashes = self.scan()
        if name in clashes:
            raise clashes[name]
        try:
            return found[name]
        except KeyError:
            raise ModelNotFound(name, known=found) from None
