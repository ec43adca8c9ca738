"""Model versions on disk and Triton's version policies.

A version is a numeric sub-directory of the model directory.  The policy is
``latest { num_versions }`` (the default, one version), ``all`` or
``specific { versions }``, exactly as in ``model_config.proto``.
"""

from __future__ import annotations

from pathlib import Path

from tritonclient.grpc import model_config_pb2 as mc

from sonic.errors import ModelConfigError


def available_versions(model_dir: Path) -> list[int]:
    """Numeric sub-directories, ascending; other entries are ignored as Triton does."""
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())


def select_versions(config: mc.ModelConfig, available: list[int], model: str) -> list[int]:
    """Versions the policy serves; an empty selection is an error naming the policy."""
    policy = config.version_policy
    kind = policy.WhichOneof("policy_choice") or "latest"
    if kind == "all":
        chosen = list(available)
    elif kind == "specific":
        missing = [v for v in policy.specific.versions if v not in available]
        if missing:
            raise ModelConfigError(
                model,
                "version_policy.specific.versions",
                f"version(s) {missing} have no directory (available: {available})",
            )
        chosen = sorted(policy.specific.versions)
    else:
        n = policy.latest.num_versions or 1
        chosen = available[-n:]
    if not chosen:
        raise ModelConfigError(
            model,
            "version_policy",
            f"at least one version must be available under the version policy ({kind}); "
            f"found no numeric version directory such as '{model}/1/'",
        )
    return chosen
