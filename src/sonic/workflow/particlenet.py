"""Train the ParticleNet taggers (AK4, AK8) on generated events and write them as CMS serves them.

The jets and their inputs are what the tagging job builds (:mod:`~sonic.workflow.jets`,
:mod:`~sonic.workflow.jet_inputs`); the labels are CMS's classes
(:mod:`~sonic.workflow.jet_labels`).  The network is the project's EdgeConv
tagger (:func:`sonic.zoo.particlenet.network`) with each interface: AK4 (20
particle and 11 vertex features, eight flavour classes) and AK8 (25 and 11,
CMS's twenty classes, of which top and QCD are trained here).
:func:`write_model` writes a Triton model directory with CMS's configuration
(``particlenet_AK4``: ``max_batch_size`` 500, preferred batch 200; the AK8
model: 160 and 80), a label file for the softmax and the checksum agent, so
CMSSW's producer config can point at it unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sonic.workflow import jet_labels as labels
from sonic.workflow.generate import GEN_FIELDS
from sonic.workflow.jet_inputs import (
    AK4_CHS,
    AK8_GENERAL,
    INPUT_NAMES,
    OUTPUT_NAME,
    PF_FIELDS,
    SV_FIELDS,
    TaggerSpec,
    chunk_inputs,
)
from sonic.workflow.jet_labels import JetTruth
from sonic.workflow.jets import AK4, AK8, JetSpec, cluster, flatten_events
from sonic.workflow.training import Progress, TrainResult, fit


@dataclass(frozen=True, slots=True)
class Tagger:
    """One tagger: its jets, its inputs and classes, its labels, its model's name and
    batching, and how its performance is quoted (a discriminant, signal and background
    classes, and a second background)."""

    name: str
    jets: JetSpec
    inputs: TaggerSpec
    truth: Callable[..., JetTruth]
    model_name: str
    max_batch_size: int
    preferred_batch_size: int
    discriminant: Callable[[np.ndarray], np.ndarray]
    signal: tuple[int, ...]
    background: tuple[int, ...]
    other: tuple[int, ...]
    #: How the plots and tables name them.
    names: tuple[str, str, str, str]  # signal, background, other, discriminant

    @property
    def label_file(self) -> str:
        return f"{self.model_name}_labels.txt"


_AK8 = labels.AK8
TAGGERS = {
    "ak4": Tagger("ak4", AK4, AK4_CHS, labels.event_truth, "particlenet_AK4", 500, 200,
                  labels.b_vs_light, (labels.B, labels.BB), (labels.UDS, labels.G),
                  (labels.C, labels.CC), ("b", "udsg", "c", "b vs udsg")),
    "ak8": Tagger("ak8", AK8, AK8_GENERAL, labels.event_truth_ak8, "particlenet_AK8", 160, 80,
                  labels.top_vs_qcd, (_AK8["Top_bcq"], _AK8["Top_bqq"]),
                  tuple(_AK8[k] for k in labels.QCD), (), ("top", "QCD", "",
                                                           "top vs QCD")),
}  # fmt: skip


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


def load_jets(files: list[Path], max_events: int | None = None,
              tagger: Tagger = TAGGERS["ak4"]) -> JetSample:  # fmt: skip
    """Every jet of the tagger's collection in the files, with its inputs as the job builds
    them (:func:`~sonic.workflow.jet_inputs.chunk_inputs`) and its labels."""
    import awkward as ak
    import uproot

    branches = ([f"PFCands_{k}" for k in (*PF_FIELDS, "puppiWeight", "isPU")]
                + [f"SV_{k}" for k in SV_FIELDS] + [f"GenPart_{k}" for k in GEN_FIELDS]
                + ["GenProcess_id"])  # fmt: skip
    spec = tagger.inputs
    rows: dict[str, list[np.ndarray]] = {k: [] for k in INPUT_NAMES}
    truths, pts, etas, procs = [], [], [], []
    for f in files:
        with uproot.open(f) as file:
            a = file["Events"].arrays(branches, entry_stop=max_events, library="ak", how=dict)
        pf = {k[len("PFCands_"):]: v for k, v in a.items() if k.startswith("PFCands_")}
        jets = cluster(pf, tagger.jets)
        inputs = chunk_inputs({k: pf[k] for k in PF_FIELDS}, jets,
                              {k: a[f"SV_{k}"] for k in SV_FIELDS}, spec)  # fmt: skip
        pf_flat, pf_starts = flatten_events(pf, ("pt", "isPU"))
        gen_flat, gen_starts = flatten_events({k: a[f"GenPart_{k}"] for k in GEN_FIELDS},
                                              GEN_FIELDS)  # fmt: skip
        process = ak.to_numpy(a["GenProcess_id"])
        for ev, (event, event_jets) in enumerate(zip(inputs, jets.per_event(), strict=True)):
            if event is None:
                continue
            for k in INPUT_NAMES:
                rows[k].append(_pad(event[k], spec.group(k).max_length))
            axes = [axis for axis, _ in event_jets]
            lo, hi = pf_starts[ev], pf_starts[ev + 1]
            gen = {k: v[gen_starts[ev]:gen_starts[ev + 1]] for k, v in gen_flat.items()}
            truths.append(tagger.truth(axes, [m for _, m in event_jets], gen,
                                       pf_flat["pt"][lo:hi], pf_flat["isPU"][lo:hi],
                                       tagger.jets.radius))  # fmt: skip
            pts.append([axis[0] for axis in axes])
            etas.append([axis[1] for axis in axes])
            procs.append(np.full(len(axes), int(process[ev])))
    if not truths:
        raise ValueError(f"no {tagger.name} jets in {[str(f) for f in files]}")
    truth = JetTruth(*(np.concatenate([getattr(t, f) for t in truths])
                       for f in JetTruth.__slots__))  # fmt: skip
    return JetSample({k: np.concatenate(v) for k, v in rows.items()}, truth,
                     np.concatenate(pts), np.concatenate(etas), np.concatenate(procs))  # fmt: skip


def train(sample: JetSample, tagger: Tagger = TAGGERS["ak4"], *, epochs: int = 20,
          batch_size: int = 128, lr: float = 3e-3, val_fraction: float = 0.2, seed: int = 0,
          progress: Progress | None = None) -> tuple[Any, TrainResult]:  # fmt: skip
    """Cross-entropy over the tagger's classes, each class weighted by its inverse frequency
    (as CMS flattens its training sample; a class with no jets gets none), Adam with a
    cosine schedule."""
    import torch

    from sonic.zoo.particlenet import network

    spec = tagger.inputs
    n_classes = len(spec.labels)
    net = network(len(spec.group("pf_features").variables),
                  len(spec.group("sv_features").variables), n_classes, seed)  # fmt: skip
    tensors = [torch.from_numpy(sample.tensors[k]) for k in INPUT_NAMES]
    y = torch.from_numpy(sample.truth.label.astype(np.int64))
    counts = np.bincount(sample.truth.label, minlength=n_classes).astype(np.float64)
    weight = torch.tensor(len(y) / (n_classes * np.maximum(counts, 1.0)), dtype=torch.float32)
    loss_fn = torch.nn.CrossEntropyLoss(weight=weight)

    def loss_of(idx: np.ndarray) -> Any:
        ix = torch.from_numpy(idx)
        return loss_fn(net.logits(*(t[ix] for t in tensors)), y[ix])

    result = fit(net, loss_of, len(y), epochs=epochs, batch_size=batch_size, lr=lr,
                 val_fraction=val_fraction, seed=seed, val_batch=512,
                 progress=progress)  # fmt: skip
    return net, result


def write_model(net: Any, repository: Path, tagger: Tagger = TAGGERS["ak4"]) -> Path:
    """``repository/<model>``: the ONNX file, CMS's config, labels and checksums."""
    from sonic.repository.checksums import update_checksums
    from sonic.zoo.particlenet import export_onnx

    spec = tagger.inputs
    model_dir = repository / tagger.model_name
    export_onnx(net, model_dir / "1" / "model.onnx")
    (model_dir / tagger.label_file).write_text("".join(f"prob{x}\n" for x in spec.labels))
    dims = {g.name: len(g.variables) for g in spec.groups}
    inputs = ",\n".join(f'  {{ name: "{k}", data_type: TYPE_FP32, dims: [ {dims[k]}, -1 ] }}'
                        for k in INPUT_NAMES)  # fmt: skip
    (model_dir / "config.pbtxt").write_text(
        f'name: "{tagger.model_name}"\nplatform: "onnxruntime_onnx"\n'
        f"max_batch_size: {tagger.max_batch_size}\ninput [\n{inputs}\n]\n"
        f'output [ {{ name: "{OUTPUT_NAME}", data_type: TYPE_FP32, dims: [ {len(spec.labels)} ], '
        f'label_filename: "{tagger.label_file}" }} ]\n'
        f"dynamic_batching {{ preferred_batch_size: [ {tagger.preferred_batch_size} ] }}\n"
        "instance_group [ { count: 1, kind: KIND_CPU } ]\n"
    )
    update_checksums(model_dir)
    return model_dir


def scores(model: Path, sample: JetSample, batch: int = 500) -> np.ndarray:
    """The softmax of the ONNX ``model`` for every jet of ``sample`` (onnxruntime)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    parts = [session.run([OUTPUT_NAME], {k: v[i:i + batch] for k, v in sample.tensors.items()})[0]
             for i in range(0, len(sample), batch)]  # fmt: skip
    n_classes = session.get_outputs()[0].shape[-1]
    return np.concatenate(parts) if parts else np.zeros((0, n_classes), np.float32)


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
    """How well a tagger separates its signal from its background, as CMS quotes it."""

    tagger: str
    n_jets: dict[str, int]
    #: Area under the signal-against-background ROC.
    auc: float
    #: Signal efficiency at a background mistag rate of 10%, 1% and 0.1%.
    efficiency: dict[str, float]
    roc: tuple[np.ndarray, np.ndarray]  # signal efficiency, background mistag rate
    #: The same discriminant against the second background (AK4: c jets), if any.
    roc_other: tuple[np.ndarray, np.ndarray] | None

    def as_dict(self) -> dict[str, Any]:
        return {"tagger": self.tagger, "n_jets": self.n_jets, "auc": self.auc,
                "efficiency": self.efficiency}  # fmt: skip


def performance(softmax: np.ndarray, truth: JetTruth,
                tagger: Tagger = TAGGERS["ak4"]) -> Performance:  # fmt: skip
    disc = tagger.discriminant(softmax)
    sig = disc[np.isin(truth.label, tagger.signal)]
    bkg = disc[np.isin(truth.label, tagger.background)]
    eff, mistag = roc_curve(sig, bkg)
    at = {f"{rate:g}": float(np.interp(rate, mistag, eff)) for rate in (0.1, 0.01, 0.001)}
    other = (roc_curve(sig, disc[np.isin(truth.label, tagger.other)]) if tagger.other
             else None)  # fmt: skip
    counts = np.bincount(truth.label, minlength=len(tagger.inputs.labels))
    n_jets = {k: int(n) for k, n in zip(tagger.inputs.labels, counts, strict=True) if n}
    return Performance(tagger.name, n_jets, auc(sig, bkg), at, (eff, mistag), other)
