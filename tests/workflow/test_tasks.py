"""The jet-tagging and clustering tasks and chained tasks, direct and through a real
``sonic serve``."""

from __future__ import annotations

import json
import shutil
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import uproot

from sonic.launcher import LocalServer
from sonic.workflow.generate import events_tree
from sonic.workflow.jet_inputs import AK4_LABELS, AK8_LABELS, PF_FIELDS
from sonic.workflow.report import read_outputs
from sonic.workflow.runner import JobConfig, run_files
from tests.workflow.conftest import EXAMPLES

PNET = [f"pnet_{label}" for label in AK4_LABELS]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    repo = tmp_path_factory.mktemp("repo")
    for model in ("deepmet", "particlenet_AK4", "particlenet_AK8", "ak4_clustering"):
        shutil.copytree(EXAMPLES / model, repo / model)
    with LocalServer(repo) as srv:
        yield srv


def _direct(samples: list[Path], out: Path, *tasks: str) -> dict:
    cfg = JobConfig(mode="direct", tasks=tasks, model_repository=EXAMPLES, chunk_size=10)
    return read_outputs(run_files(samples, cfg, out).outputs)


def _served(samples: list[Path], out: Path, server: LocalServer, *tasks: str,
            client_mode: str = "async") -> tuple[dict, dict[str, int]]:  # fmt: skip
    cfg = JobConfig(mode="service", tasks=tasks, servers=(server.grpc_url,),
                    client_mode=client_mode, chunk_size=10)  # fmt: skip
    result = run_files(samples, cfg, out)
    return read_outputs(result.outputs), result.requests


def _same_jets(a: ak.Array, b: ak.Array, labels: tuple[str, ...] = AK4_LABELS) -> None:
    assert ak.to_list(ak.num(a)) == ak.to_list(ak.num(b))
    for field in ("pt", "eta", "phi", "mass"):
        assert ak.all(a[field] == b[field])
    for field in (f"pnet_{k}" for k in labels):
        np.testing.assert_allclose(ak.to_numpy(ak.flatten(a[field])),
                                   ak.to_numpy(ak.flatten(b[field])), atol=2e-6)  # fmt: skip


@pytest.mark.parametrize(("task", "collection", "client_mode"),
                         [("particlenet", "Jet", "async"), ("particlenet", "Jet", "sync"),
                          ("particlenet_ak8", "FatJet", "async")])  # fmt: skip
def test_tagging_served_equals_direct(samples: list[Path], server: LocalServer,
                                      tmp_path: Path, task: str, collection: str,
                                      client_mode: str) -> None:  # fmt: skip
    direct = _direct(samples, tmp_path / "direct", task)
    served, requests = _served(samples, tmp_path / "served", server, task,
                               client_mode=client_mode)  # fmt: skip
    jets = direct[collection]
    labels = AK4_LABELS if task == "particlenet" else AK8_LABELS
    assert ak.sum(ak.num(jets)) > 0, "the samples must have jets to tag"
    _same_jets(jets, served[collection], labels)
    assert requests == {task: int(ak.sum(ak.num(jets) > 0))}  # one per event with jets
    probs = np.stack([ak.to_numpy(ak.flatten(jets[f"pnet_{k}"])) for k in labels], axis=1)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert list(direct["event"]) == list(served["event"])


def test_chained_tasks_give_each_task_its_own_answers(samples: list[Path], server: LocalServer,
                                                      tmp_path: Path) -> None:  # fmt: skip
    """DeepMET and jet tagging on the same events in one job, each through its own model."""
    chained, requests = _served(samples, tmp_path / "chained", server, "deepmet", "particlenet")
    met_only = _direct(samples, tmp_path / "met", "deepmet")
    jets_only = _direct(samples, tmp_path / "jets", "particlenet")
    np.testing.assert_allclose(chained["DeepMETResolutionTune_pt"],
                               met_only["DeepMETResolutionTune_pt"], rtol=1e-5)  # fmt: skip
    _same_jets(chained["Jet"], jets_only["Jet"])
    assert requests["deepmet"] == 6  # two files of 24 events in chunks of 10
    assert {"GenMET_pt", "event", "Jet"} <= set(chained)


def test_an_event_without_jets_sends_no_request(server: LocalServer, tmp_path: Path) -> None:
    """Three events; the middle one has only soft candidates, so no jet: two requests reach
    the server, and the event's Jet list is empty."""
    events = [[(60.0, 0.3, 0.1), (40.0, 0.35, 0.2)], [(2.0, 1.0, 1.0)], [(50.0, -1.0, 2.0)]]
    columns = {f: [] for f in (*PF_FIELDS, "puppiWeight")}
    for ev in events:
        n = len(ev)
        values = {"pt": [c[0] for c in ev], "eta": [c[1] for c in ev], "phi": [c[2] for c in ev],
                  "mass": [0.14] * n, "charge": [1] * n, "pdgId": [211] * n, "d0": [0.001] * n,
                  "dz": [0.002] * n, "fromPV": [3] * n, "puppiWeight": [1.0] * n}  # fmt: skip
        for f in columns:
            columns[f].append(values[f])
    path = tmp_path / "three.root"
    tree = {"PFCands": ak.zip({k: ak.Array(v) for k, v in columns.items()}),
            "event": np.arange(1, 4, dtype=np.uint64)}
    with uproot.recreate(path) as f:
        events_tree(f, tree).extend(tree)

    def inferences() -> int:
        url = f"{server.http_url}/v2/models/particlenet_AK4/stats"
        with urllib.request.urlopen(url if "://" in url else f"http://{url}") as r:
            stats = json.loads(r.read())["model_stats"][0]
        return int(stats["inference_stats"]["success"]["count"])

    before = inferences()
    out, requests = _served([path], tmp_path / "out", server, "particlenet")
    assert requests == {"particlenet": 2}
    assert inferences() - before == 2
    assert ak.to_list(ak.num(out["Jet"])) == [1, 0, 1]


def test_root_output_has_nanoaod_jet_branches(samples: list[Path], tmp_path: Path) -> None:
    cfg = JobConfig(mode="direct", tasks=("particlenet",), model_repository=EXAMPLES,
                    output_format="root", max_events=12)  # fmt: skip
    out = run_files(samples[:1], cfg, tmp_path).outputs
    assert out[0].endswith(".particlenet.root")
    keys = set(uproot.open(out[0])["Events"].keys())
    assert {"event", "nJet", "Jet_pt", "Jet_eta", "Jet_phi", *(f"Jet_{f}" for f in PNET)} <= keys
    parquet = _direct(samples[:1], tmp_path / "pq", "particlenet")["Jet"][:12]
    _same_jets(read_outputs(out)["Jet"], parquet)


def test_clustering_served_like_a_model_equals_the_job_s_own(samples: list[Path],
                                                             server: LocalServer,
                                                             tmp_path: Path) -> None:  # fmt: skip
    """The step with no network: one request per event to the python-backend model gives the
    jets the job clusters itself, and the jets the tagging task clustered for the chunk."""
    cfg = JobConfig(tasks=("clustering",), chunk_size=10)
    direct = read_outputs(run_files(samples, cfg, tmp_path / "direct").outputs)["AK4Jet"]
    served, requests = _served(samples, tmp_path / "served", server, "clustering")
    assert requests == {"clustering": 48}
    assert ak.to_list(direct) == ak.to_list(served["AK4Jet"])
    tagged = _direct(samples, tmp_path / "tagged", "particlenet")["Jet"]
    assert ak.to_list(ak.num(direct)) == ak.to_list(ak.num(tagged))
    np.testing.assert_allclose(ak.to_numpy(ak.flatten(direct.pt)),
                               ak.to_numpy(ak.flatten(tagged.pt)), rtol=1e-6)  # fmt: skip
    assert ak.all(direct.nConstituents >= 1)


def test_clustering_model_names_bad_input(server: LocalServer) -> None:
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    client = grpcclient.InferenceServerClient(server.grpc_url)
    inputs = []
    for name, dtype, n in (("pf_pt", "FP32", 3), ("pf_eta", "FP32", 3), ("pf_phi", "FP32", 3),
                           ("pf_mass", "FP32", 2), ("pf_charge", "INT32", 3),
                           ("pf_fromPV", "INT32", 3)):  # fmt: skip
        t = grpcclient.InferInput(name, [n], dtype)
        t.set_data_from_numpy(np.ones(n, np.float32 if dtype == "FP32" else np.int32))
        inputs.append(t)
    with pytest.raises(InferenceServerException, match=r"one value per candidate.*'mass': 2"):
        client.infer("ak4_clustering", inputs)
