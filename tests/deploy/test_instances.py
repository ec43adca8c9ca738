"""Instances and shared settings (components/instance): one setting renames everything, and
KEDA and the gateway read one load metric, threshold source and Prometheus."""

from __future__ import annotations

from typing import Any

import yaml

from tests.fixtures.kustomize import by_kind, render, validate

INSTANCE = "app.kubernetes.io/instance"


def env(deployment: dict[str, Any]) -> dict[str, Any]:
    (c,) = [c for c in deployment["spec"]["template"]["spec"]["containers"]]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c["env"]}


def selectors(docs: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Every label selector: of Services, Deployments, PDBs and the monitors."""
    out = []
    for d in docs:
        sel = (d.get("spec") or {}).get("selector")
        if isinstance(sel, dict):
            out.append(sel.get("matchLabels", sel))
    return out


def pod_labels(docs: list[dict[str, Any]]) -> list[dict[str, str]]:
    return [d["spec"]["template"]["metadata"]["labels"] for d in by_kind(docs, "Deployment")]


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def test_two_instances_render_side_by_side_with_disjoint_names() -> None:
    first, second = render("overlays/cpu"), render("overlays/second-instance")
    validate(second)
    names = lambda docs: {(d["kind"], d["metadata"]["name"]) for d in docs}  # noqa: E731
    assert not names(first) & names(second), names(first) & names(second)
    assert by_kind(second, "Namespace") == []  # the first instance's: shared, not owned
    assert {d["metadata"]["namespace"] for d in second} == {"sonic"}
    # No selector of one instance matches a pod of the other: Services, PDBs, monitors and
    # Deployments each see only their own instance's pods.
    for ours, theirs in ((first, second), (second, first)):
        for sel in selectors(ours):
            assert INSTANCE in sel
            assert not any(matches(sel, labels) for labels in pod_labels(theirs)), sel
            assert any(matches(sel, labels) for labels in pod_labels(ours)), sel  # its own


def test_one_setting_renames_every_reference() -> None:
    docs = render("overlays/second-instance")
    names = {d["metadata"]["name"] for d in docs}
    assert all(n.startswith("sonic-b") for n in names), names
    gateway = next(d for d in by_kind(docs, "Deployment") if "gateway" in d["metadata"]["name"])
    spec = gateway["spec"]["template"]["spec"]
    assert spec["volumes"][0]["configMap"]["name"] in names
    assert env(gateway)["SONIC_JWT_KEY"]["secretKeyRef"]["name"] in names
    assert env(gateway)["SONIC_INSTANCE"] == "sonic-b"  # the SRV lookup: sonic-b-headless
    assert "sonic-b-headless" in names
    server = next(d for d in by_kind(docs, "Deployment") if "server" in d["metadata"]["name"])
    claim = server["spec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"]
    assert claim["claimName"] in names
    (so,) = by_kind(docs, "ScaledObject")
    assert so["spec"]["scaleTargetRef"]["name"] == server["metadata"]["name"]
    query = so["spec"]["triggers"][0]["metadata"]["query"]
    assert query.count('app_kubernetes_io_instance="sonic-b"') == 2
    # The monitors put the instance label on every series, which is what the query selects by.
    (sm,) = by_kind(docs, "ServiceMonitor")
    assert sm["spec"]["targetLabels"] == [INSTANCE]


def test_keda_and_the_gateway_share_one_metric_threshold_source_and_prometheus() -> None:
    for overlay in ("base", "overlays/site-example", "overlays/second-instance"):
        docs = render(overlay)
        (settings,) = [d["data"] for d in by_kind(docs, "ConfigMap")
                       if d["metadata"]["name"].endswith("-settings")]  # fmt: skip
        (so,) = by_kind(docs, "ScaledObject")
        trigger = so["spec"]["triggers"][0]["metadata"]
        gateway = env(next(d for d in by_kind(docs, "Deployment")
                           if "gateway" in d["metadata"]["name"]))  # fmt: skip
        assert trigger["query"] == gateway["ADMISSION_QUERY"] == settings["load-query"], overlay
        assert trigger["serverAddress"] == gateway["PROMETHEUS_URL"] == settings["prometheus-url"]
        assert trigger["threshold"] == settings["scale-threshold"]
        assert gateway["ADMISSION_THRESHOLD"] == settings["admission-threshold"]
    site = render("overlays/site-example")
    (so,) = by_kind(site, "ScaledObject")
    assert so["spec"]["triggers"][0]["metadata"]["serverAddress"].startswith("https://")


def test_the_hpa_path_reads_the_same_settings() -> None:
    docs = render("overlays/cpu-hpa")
    (hpa,) = by_kind(docs, "HorizontalPodAutoscaler")
    (settings,) = [d["data"] for d in by_kind(docs, "ConfigMap")
                   if d["metadata"]["name"] == "sonic-settings"]  # fmt: skip
    assert hpa["spec"]["metrics"][0]["external"]["target"]["value"] == settings["scale-threshold"]
    rules = next(d for d in by_kind(docs, "ConfigMap")
                 if "adapter" in d["metadata"]["name"])["data"]["rules.yaml"]  # fmt: skip
    (rule,) = yaml.safe_load(rules)["externalRules"]
    assert rule["metricsQuery"] == settings["load-query"]
