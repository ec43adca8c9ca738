"""deploy/supersonic/values-sonic-serve.yaml against SuperSONIC 0.3.1's documented values.

Helm cannot be installed on the development machine, so the file is not rendered here: its keys
are checked against the chart's values as its documentation gives them (helm/supersonic
values.yaml keys, ../shared/reference/sonic-cmssw-and-supersonic.md, section B.2), its choices
against the allowed ones, and the command it gives the chart is parsed as `sonic serve` flags.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import yaml

VALUES = Path(__file__).resolve().parents[2] / "deploy" / "supersonic" / "values-sonic-serve.yaml"

#: Dotted keys of supersonic 0.3.1's values.yaml (leaves and the objects a site replaces whole).
CHART_KEYS = {
    "serverLoadMetric", "serverLoadThreshold",
    "triton.replicas", "triton.image", "triton.command", "triton.args", "triton.resources",
    "triton.nodeSelector", "triton.tolerations", "triton.affinity",
    "triton.modelRepository.enabled", "triton.modelRepository.mountPath",
    "triton.modelRepository.storageType", "triton.service.ports",
    "envoy.enabled", "envoy.replicas", "envoy.image", "envoy.resources", "envoy.service.type",
    "envoy.ingress.enabled", "envoy.ingress.hostName", "envoy.ingress.ingressClassName",
    "envoy.ingress.annotations", "envoy.grpc_route_timeout", "envoy.loadBalancerPolicy",
    "envoy.auth.enabled", "envoy.auth.jwt_issuer", "envoy.auth.jwt_remote_jwks_uri",
    "envoy.auth.audiences", "envoy.auth.url", "envoy.auth.port",
    "keda.enabled", "keda.minReplicaCount", "keda.maxReplicaCount", "keda.zeroIdleReplicas",
    "keda.scaleUp", "keda.scaleDown",
    "prometheus.external.enabled", "prometheus.external.url", "prometheus.external.port",
    "prometheus.external.scheme",
}  # fmt: skip
WHOLE = {"triton.resources", "triton.service.ports", "triton.nodeSelector", "triton.tolerations",
         "triton.affinity", "triton.command", "triton.args", "envoy.resources"}  # fmt: skip


def _keys(tree: dict[str, Any], prefix: str = "") -> set[str]:
    out = set()
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and key not in WHOLE:
            out |= _keys(v, key + ".")
        else:
            out.add(key)
    return out


def test_every_key_is_one_of_the_charts() -> None:
    values = yaml.safe_load(VALUES.read_text())
    unknown = _keys(values) - CHART_KEYS
    assert not unknown, f"not keys of supersonic 0.3.1's values.yaml: {sorted(unknown)}"
    assert values["triton"]["modelRepository"]["storageType"] in ("pvc", "cvmfs-pvc", "cvmfs",
                                                                  "nfs")  # fmt: skip
    assert values["envoy"]["loadBalancerPolicy"] in ("ROUND_ROBIN", "LEAST_REQUEST", "RING_HASH",
                                                     "RANDOM", "MAGLEV")  # fmt: skip
    ports = {p["name"]: p["port"] for p in values["triton"]["service"]["ports"]}
    assert ports == {"http": 8000, "grpc": 8001, "metrics": 8002}  # what the chart's probes use


def test_the_command_is_sonic_serve_with_real_flags() -> None:
    """A flag sonic serve does not have would crash-loop every pod of the site."""
    from sonic.cli.serve import serve

    triton = yaml.safe_load(VALUES.read_text())["triton"]
    assert triton["command"] == ["/bin/sh", "-c"]
    (line,) = triton["args"]
    words = shlex.split(line)
    assert words[:2] == ["sonic", "serve"]
    ctx = serve.make_context("serve", words[2:])
    assert ctx.params["grpc_port"] == 8001 and ctx.params["metrics_port"] == 8002
    assert ctx.params["grpc_transport"] == "native"


def test_the_images_have_the_charts_probe_tool() -> None:
    containers = VALUES.parents[1] / "containers"
    for name in ("Dockerfile.cpu", "Dockerfile.cuda"):
        assert " curl " in (containers / name).read_text().replace("\\\n", " ")
