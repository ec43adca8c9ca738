"""Train the AK4 ParticleNet tagger on generated events and write it as CMS serves it.

The jets and their inputs are what the tagging job builds (:mod:`~sonic.workflow.jets`,
:mod:`~sonic.workflow.jet_inputs`); the labels are CMS's flavour classes
(:mod:`~sonic.workflow.jet_labels`).  The network is the project's EdgeConv
tagger (:func:`sonic.zoo.particlenet.network`) with the AK4 interface: 20
particle and 11 vertex features, eight classes.  :func:`write_model` writes a
Triton model directory with the configuration of CMS's ``particlenet_AK4``
(``max_batch_size`` 500, preferred batch 200, a label file for the softmax and
the checksum agent), so CMSSW's producer config can point at it unchanged.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sonic.workflow.jet_inputs import AK4_CHS, INPUT_NAMES, PF_FIELDS, SV_FIELDS, event_inputs
from sonic.workflow.jet_labels import BB, CC, UDS, B, C, G, JetTruth, b_vs_light, event_truth
from sonic.workflow.jets import AK4, cluster

MODEL_NAME = "particlenet_AK4"
LABEL_FILE = "particlenet_AK4_labels.txt"


@dataclass(slots=True)
class JetSample:
    """Jets of many events, padded to the groups' longest lengths, with their truth."""

    tensors: dict[str, np.ndarray]  # INPUT_NAMES -> [jets, vars, max_length]
    truth: JetTruth
    pt: np.ndarray
    eta: np.ndarray
    process: np.ndarray  # the event's GenProcess_id

    def __len__(self) -> int:
        return len(self.pt)


def _pad(x: np.ndarray, length: int) -> np.ndarray:
    return np.pad(x, ((0, 0), (0, 0), (0, length - x.shape[2])))


def load_jets(files: list[Path], max_events: int | None = None) -> JetSample:
    """Every AK4 jet of the files, with its inputs as the job builds them and its labels."""
    import awkward as ak
    import uproot

    branches = ([f"PFCands_{k}" for k in (*PF_FIELDS, "puppiWeight", "isPU")]
                + [f"SV_{k}" for k in SV_FIELDS]
                + [f"GenPart_{k}" for k in ("pdgId", "kind", "pt", "eta", "phi")]
                + ["GenProcess_id"])  # fmt: skip
    rows: dict[str, list[np.ndarray]] = {k: [] for k in INPUT_NAMES}
    truths, pts, etas, procs = [], [], [], []
    for f in files:
        with uproot.open(f) as file:
            a = file["Events"].arrays(branches, entry_stop=max_events, library="ak", how=dict)
        pf = {k[len("PFCands_"):]: v for k, v in a.items() if k.startswith("PFCands_")}
        jets = cluster(pf, AK4)
        members, pt = ak.to_list(jets.constituents), ak.to_list(jets.pt)
        eta, phi = ak.to_list(jets.eta), ak.to_list(jets.phi)
        for ev in range(len(pt)):
            if not pt[ev]:
                continue
            axes = list(zip(pt[ev], eta[ev], phi[ev], strict=True))
            idx = [np.asarray(m, dtype=int) for m in members[ev]]
            event_pf = {k: ak.to_numpy(pf[k][ev]) for k in (*PF_FIELDS, "isPU")}
            sv = {k: ak.to_numpy(a[f"SV_{k}"][ev]) for k in SV_FIELDS}
            inputs = event_inputs(event_pf, list(zip(axes, idx, strict=True)), sv)
            if inputs is None:
                continue
            for k in INPUT_NAMES:
                rows[k].append(_pad(inputs[k], AK4_CHS.group(k).max_length))
            gen = {k: ak.to_numpy(a[f"GenPart_{k}"][ev]) for k in ("pdgId", "kind", "pt", "eta",
                                                                    "phi")}  # fmt: skip
            truths.append(event_truth(axes, idx, gen, event_pf["pt"], event_pf["isPU"],
                                      AK4.radius))  # fmt: skip
            pts.append(pt[ev])
            etas.append(eta[ev])
            procs.append(np.full(len(pt[ev]), int(a["GenProcess_id"][ev])))
    truth = JetTruth(*(np.concatenate([getattr(t, f) for t in truths])
                       for f in JetTruth.__slots__))  # fmt: skip
    return JetSample({k: np.concatenate(v) for k, v in rows.items()}, truth,
                     np.concatenate(pts), np.concatenate(etas), np.concatenate(procs))  # fmt: skip


@dataclass(slots=True)
class TrainResult:
    epochs: int
    train_loss: list[float]
    val_loss: list[float]
    seconds: float


Progress = Callable[[int, float, float], None]


def train(sample: JetSample, *, epochs: int = 20, batch_size: int = 128, lr: float = 3e-3,
          val_fraction: float = 0.2, seed: int = 0,
          progress: Progress | None = None) -> tuple[Any, TrainResult]:  # fmt: skip
    """Cross-entropy over the eight classes, each class weighted by its inverse frequency
    (as CMS flattens its training sample), Adam with a cosine schedule."""
    import torch

    from sonic.zoo.particlenet import network

    n_classes = len(AK4_CHS.labels)
    net = network(len(AK4_CHS.group("pf_features").variables),
                  len(AK4_CHS.group("sv_features").variables), n_classes, seed)  # fmt: skip
    tensors = [torch.from_numpy(sample.tensors[k]) for k in INPUT_NAMES]
    y = torch.from_numpy(sample.truth.label.astype(np.int64))
    counts = np.bincount(sample.truth.label, minlength=n_classes).astype(np.float64)
    weight = torch.tensor(len(y) / (n_classes * np.maximum(counts, 1.0)), dtype=torch.float32)
    order = np.random.default_rng(seed).permutation(len(y))
    n_val = max(1, int(len(y) * val_fraction))
    val_idx, train_idx = order[:n_val], order[n_val:]
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    loss_fn = torch.nn.CrossEntropyLoss(weight=weight)

    def loss_of(idx: np.ndarray) -> Any:
        ix = torch.from_numpy(idx)
        return loss_fn(net.logits(*(t[ix] for t in tensors)), y[ix])

    history: tuple[list[float], list[float]] = ([], [])
    start = time.perf_counter()
    rng = np.random.default_rng(seed + 1)
    for epoch in range(epochs):
        net.train()
        total = 0.0
        perm = rng.permutation(train_idx)
        for b in range(0, len(perm), batch_size):
            opt.zero_grad()
            loss = loss_of(perm[b:b + batch_size])
            loss.backward()
            opt.step()
            total += loss.item() * len(perm[b:b + batch_size])
        sched.step()
        net.eval()
        with torch.no_grad():
            val = sum(loss_of(val_idx[b:b + 512]).item() * len(val_idx[b:b + 512])
                      for b in range(0, n_val, 512)) / n_val  # fmt: skip
        history[0].append(total / len(train_idx))
        history[1].append(val)
        if progress is not None:
            progress(epoch + 1, history[0][-1], val)
    return net.eval(), TrainResult(epochs, *history, time.perf_counter() - start)


def write_model(net: Any, repository: Path) -> Path:
    """``repository/particlenet_AK4``: the ONNX file, CMS's config, labels and checksums."""
    from sonic.repository.checksums import update_checksums
    from sonic.zoo.particlenet import export_onnx

    model_dir = repository / MODEL_NAME
    export_onnx(net, model_dir / "1" / "model.onnx")
    (model_dir / LABEL_FILE).write_text("\n".join(f"prob{x}" for x in AK4_CHS.labels) + "\n")
    dims = {g.name: len(g.variables) for g in AK4_CHS.groups}
    inputs = ",\n".join(f'  {{ name: "{k}", data_type: TYPE_FP32, dims: [ {dims[k]}, -1 ] }}'
                        for k in INPUT_NAMES)  # fmt: skip
    (model_dir / "config.pbtxt").write_text(
        "# The AK4 ParticleNet of sonic.workflow.particlenet, with CMS's particlenet_AK4 config.\n"
        f'name: "{MODEL_NAME}"\nplatform: "onnxruntime_onnx"\nmax_batch_size: 500\n'
        f"input [\n{inputs}\n]\n"
        f'output [ {{ name: "softmax", data_type: TYPE_FP32, dims: [ {len(AK4_CHS.labels)} ], '
        f'label_filename: "{LABEL_FILE}" }} ]\n'
        "dynamic_batching { preferred_batch_size: [ 200 ] }\n"
        "instance_group [ { count: 1, kind: KIND_CPU } ]\n"
    )
    update_checksums(model_dir)
    return model_dir


def scores(model: Path, sample: JetSample, batch: int = 500) -> np.ndarray:
    """The softmax of the ONNX ``model`` for every jet of ``sample`` (onnxruntime)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    parts = [session.run(["softmax"], {k: v[i:i + batch] for k, v in sample.tensors.items()})[0]
             for i in range(0, len(sample), batch)]  # fmt: skip
    return np.concatenate(parts) if parts else np.zeros((0, len(AK4_CHS.labels)), np.float32)


def roc_curve(signal: np.ndarray, background: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(signal efficiency, background efficiency) for every threshold on a discriminant."""
    order = np.argsort(-np.concatenate([signal, background]), kind="stable")
    is_signal = np.concatenate([np.ones(len(signal)), np.zeros(len(background))])[order]
    sig = np.concatenate([[0.0], np.cumsum(is_signal) / max(len(signal), 1)])
    bkg = np.concatenate([[0.0], np.cumsum(1 - is_signal) / max(len(background), 1)])
    return sig, bkg


def auc(signal: np.ndarray, background: np.ndarray) -> float:
    """Area under the ROC curve: the probability that a signal jet scores above a background
    one (ties count a half), from the ranks."""
    from scipy.stats import rankdata

    ranks = rankdata(np.concatenate([signal, background]))
    n_s, n_b = len(signal), len(background)
    return float((ranks[:n_s].sum() - n_s * (n_s + 1) / 2) / max(n_s * n_b, 1))


@dataclass(slots=True)
class Performance:
    """How well the tagger separates b from light jets (uds and g), as CMS quotes it."""

    n_jets: dict[str, int]
    auc_b_vs_light: float
    #: b-jet efficiency at a light-jet mistag rate of 10%, 1% and 0.1%.
    b_efficiency: dict[str, float]
    roc: tuple[np.ndarray, np.ndarray]  # b efficiency, light mistag rate
    #: b efficiency and c-jet mistag rate, for the same discriminant.
    roc_c: tuple[np.ndarray, np.ndarray]

    def as_dict(self) -> dict[str, Any]:
        return {"n_jets": self.n_jets, "auc_b_vs_light": self.auc_b_vs_light,
                "b_efficiency": self.b_efficiency}  # fmt: skip


def performance(softmax: np.ndarray, truth: JetTruth) -> Performance:
    disc = b_vs_light(softmax)
    is_b = np.isin(truth.label, (B, BB))
    is_light = np.isin(truth.label, (UDS, G))
    is_c = np.isin(truth.label, (C, CC))
    sig, bkg = disc[is_b], disc[is_light]
    eff, mistag = roc_curve(sig, bkg)
    at = {f"{rate:g}": float(np.interp(rate, mistag, eff)) for rate in (0.1, 0.01, 0.001)}
    counts = np.bincount(truth.label, minlength=len(AK4_CHS.labels))
    return Performance(dict(zip(AK4_CHS.labels, map(int, counts), strict=True)), auc(sig, bkg),
                       at, (eff, mistag), roc_curve(sig, disc[is_c]))  # fmt: skip
