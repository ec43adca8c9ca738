"""The Kubernetes manifests: every overlay renders with kubectl kustomize and validates."""

from __future__ import annotations

import re

import pytest

from tests.fixtures.kustomize import K8S, OVERLAYS, QUEUE_PER_EXEC, by_kind, one, render, validate


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_and_validates(overlay: str) -> None:
    docs = render(overlay)
    validate(docs)
    deployment = one(docs, "Deployment", "sonic-server")["spec"]
    assert deployment["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    server = deployment["template"]["spec"]
    c = server["containers"][0]
    assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert c["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert c["startupProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert c["lifecycle"]["preStop"]["exec"]["command"]
    assert server["securityContext"]["runAsNonRoot"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    pdb = one(docs, "PodDisruptionBudget", "sonic-server")["spec"]
    assert pdb["maxUnavailable"] == 1 and "minAvailable" not in pdb  # one replica can drain
    services = {s["metadata"]["name"]: s for s in by_kind(docs, "Service")}
    assert "stats" not in {p["name"] for p in services["sonic-gateway"]["spec"]["ports"]}
    assert services["sonic-headless"]["spec"]["clusterIP"] == "None"
    assert {p["port"] for p in services["sonic"]["spec"]["ports"]} == {8000, 8001, 8002}
    gw = one(docs, "ConfigMap", "sonic-gateway")["data"]
    local = K8S / "base" / "gateway"
    assert gw["haproxy.cfg"] == (local / "haproxy.cfg").read_text()  # the file the tests run
    assert gw["admission.lua"] == (local / "admission.lua").read_text()
    assert "leastconn" in gw["backends-k8s.cfg"]
    assert one(docs, "ConfigMap", "sonic-grafana-dashboard")["metadata"]["labels"][
        "grafana_dashboard"] == "1"
    scalers = by_kind(docs, "ScaledObject") + by_kind(docs, "HorizontalPodAutoscaler")
    # KEDA, or the plain HPA component instead; none where the site sizes the servers itself
    assert len(scalers) == (0 if overlay == "overlays/plain" else 1)


def test_a_cluster_without_keda_or_the_prometheus_operator() -> None:
    """No object of a CRD such a cluster lacks; the pods keep their scrape annotations."""
    docs = render("overlays/plain")
    assert not [d for d in docs if d["apiVersion"].startswith(("keda.sh/",
                                                               "monitoring.coreos.com/"))]
    server = one(docs, "Deployment", "sonic-server")["spec"]["template"]
    assert server["metadata"]["annotations"]["prometheus.io/scrape"] == "true"


def test_server_args_are_sonic_serve_flags() -> None:
    """A misspelt or retired flag would crash-loop every pod; click parses them here."""
    from sonic.cli.serve import serve

    for overlay in OVERLAYS:
        spec = one(render(overlay), "Deployment", "sonic-server")["spec"]["template"]["spec"]
        c = spec["containers"][0]
        if c["command"][:2] != ["sonic", "serve"]:
            continue  # an overlay that runs Triton instead
        ctx = serve.make_context("serve", list(c["args"]))
        assert ctx.params["grpc_transport"] == "native" and ctx.params["grpc_port"] == 8001


def test_autoscaling_query_is_queue_time_per_execution() -> None:
    for overlay in OVERLAYS:
        for so in by_kind(render(overlay), "ScaledObject"):
            # Was: no metricType, so KEDA's AverageValue (see test_autoscaling_rule.py).
            assert {t["metricType"] for t in so["spec"]["triggers"]} == {"Value"}, overlay
    (so,) = by_kind(render("base"), "ScaledObject")
    query = so["spec"]["triggers"][0]["metadata"]["query"]
    assert re.sub(r"\{[^}]*\}", "", query) == QUEUE_PER_EXEC
    # ... of this instance's series only: its namespace and instance label, both times.
    assert re.findall(r"\{[^}]*\}", query) == [
        '{namespace="sonic", app_kubernetes_io_instance="sonic"}'] * 2
    (hpa,) = by_kind(render("overlays/cpu-hpa"), "HorizontalPodAutoscaler")
    assert hpa["spec"]["metrics"][0]["external"]["metric"]["name"] == "sonic_queue_ms_per_execution"


def test_overlays_change_what_they_say() -> None:
    gpu = one(render("overlays/gpu"), "Deployment", "sonic-server")["spec"]["template"]["spec"]
    assert gpu["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert gpu["containers"][0]["image"].endswith("0.1.0-cuda")
    cpu = one(render("overlays/cpu"), "Deployment", "sonic-server")["spec"]["template"]["spec"]
    assert "nvidia.com/gpu" not in cpu["containers"][0]["resources"]["limits"]
    site = render("overlays/site-example")
    assert by_kind(site, "PersistentVolumeClaim") == []  # models from CVMFS instead
    server = one(site, "Deployment", "sonic-server")["spec"]["template"]["spec"]
    assert server["volumes"][0]["hostPath"]["path"].startswith("/cvmfs/")
    env = {e["name"]: e for e in one(site, "Deployment", "sonic-gateway")["spec"]["template"][
        "spec"]["containers"][0]["env"]}
    assert env["ADMISSION_THRESHOLD"]["value"] == "30"
    assert "secretKeyRef" in env["SONIC_JWT_KEY"]["valueFrom"]
    (so,) = by_kind(site, "ScaledObject")
    assert (so["spec"]["maxReplicaCount"], so["spec"]["triggers"][0]["metadata"]["threshold"]) == (
        8, "10")


def test_the_cvmfs_site_with_an_ingress() -> None:
    docs = render("overlays/site-cvmfs")
    spec = one(docs, "Deployment", "sonic-server")["spec"]["template"]["spec"]
    (mount,) = [m for m in spec["containers"][0]["volumeMounts"] if m["name"] == "models"]
    assert mount["mountPropagation"] == "HostToContainer" and mount["readOnly"] is True
    assert spec["volumes"][0]["hostPath"]["path"] == "/cvmfs"
    assert "--model-repository=/cvmfs/cms.cern.ch/sonic/models" in spec["containers"][0]["args"]
    assert spec["nodeSelector"]["nvidia.com/gpu.product"]
    assert {t["key"] for t in spec["tolerations"]} == {"nvidia.com/gpu", "dedicated"}
    (ingress,) = by_kind(docs, "Ingress")
    assert ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/backend-protocol"] == (
        "GRPC")
    assert ingress["spec"]["tls"][0]["secretName"] == "sonic-tls"
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert (backend["name"], backend["port"]["name"]) == ("sonic-gateway", "grpc")
    gateway = {d["metadata"]["name"]: d for d in by_kind(docs, "Service")}["sonic-gateway"]
    assert gateway["spec"]["type"] == "ClusterIP"  # in through the ingress only

