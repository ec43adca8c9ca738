"""DeepMET: a weight per PF candidate from embeddings and dense layers; MET = -sum w * pT.

The CMS DeepMET idea (``RecoMET/METPUSubtraction``) in PyTorch, with the exact
CMSSW tensor interface (:mod:`sonic.workflow.inputs`).  Per candidate the
three categorical inputs (charge, pdgId class, fromPV) are embedded in 8
dimensions each and joined to the 8 continuous features (standardised with
constants fixed from the training sample, stored in the graph); tanh layers of
64, 32 and 16 give one number, and ``w = 2 sigmoid(.)`` is the candidate's
weight in [0, 2] (1 at initialisation, so an untrained network is PF MET).
The output ``output/BiasAdd`` is ``-sum w (px, py) / 50``.  Padding rows carry
px = py = 0, so they add nothing, whatever their weight.

Training minimises the mean squared difference from GenMET (px, py) / 50
with Adam.  Needs the ``torch`` extra (``torch==2.13.0``).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from sonic.workflow.inputs import (
    CHARGE_INDEX,
    FEATURES,
    INPUT_NAMES,
    MAX_N_PF,
    NORM_FACTOR,
    OUTPUT_NAME,
    PDGID_INDEX,
    DeepMETInputs,
)
from sonic.workflow.training import Progress, TrainResult, fit

EMBEDDING_DIM = 8
HIDDEN = (64, 32, 16)
N_FROM_PV = 4


def _torch() -> object:
    try:
        import torch
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError(
            "training DeepMET needs PyTorch: pip install 'sonic-inference[torch]' (torch==2.13.0)"
        ) from err
    return torch


def build_network(mean: np.ndarray | None = None, std: np.ndarray | None = None) -> object:
    """A fresh DeepMET ``torch.nn.Module``; ``mean``/``std`` standardise the 8 features."""
    torch = _torch()
    nn = torch.nn  # type: ignore[attr-defined]

    class DeepMET(nn.Module):  # type: ignore[name-defined,misc]
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.ModuleList([nn.Embedding(len(CHARGE_INDEX), EMBEDDING_DIM),
                                      nn.Embedding(len(PDGID_INDEX), EMBEDDING_DIM),
                                      nn.Embedding(N_FROM_PV, EMBEDDING_DIM)])  # fmt: skip
            layers: list[object] = []
            width = len(FEATURES) + 3 * EMBEDDING_DIM
            for h in HIDDEN:
                layers += [nn.Linear(width, h), nn.Tanh()]
                width = h
            layers.append(nn.Linear(width, 1))
            self.mlp = nn.Sequential(*layers)
            nn.init.zeros_(self.mlp[-1].weight)  # start from w = 1: PF MET
            nn.init.zeros_(self.mlp[-1].bias)
            m = np.zeros(len(FEATURES)) if mean is None else mean
            s = np.ones(len(FEATURES)) if std is None else std
            self.register_buffer("mean", torch.tensor(m, dtype=torch.float32))
            self.register_buffer("inv_std", torch.tensor(1 / s, dtype=torch.float32))

        def forward(self, x, cat0, cat1, cat2):  # type: ignore[no-untyped-def]
            # Clamped: a value outside a table (no CMSSW producer sends one) must not fail.
            cats = [e(c[..., 0].long().clamp(0, e.num_embeddings - 1))
                    for e, c in zip(self.emb, (cat0, cat1, cat2), strict=True)]  # fmt: skip
            h = torch.cat([(x - self.mean) * self.inv_std, *cats], dim=-1)
            w = 2 * torch.sigmoid(self.mlp(h))
            return -(w * x[..., 6:8]).sum(dim=1)  # features 6, 7: px/50, py/50

    return DeepMET()


def train(
    inputs: DeepMETInputs,
    target: np.ndarray,
    *,
    epochs: int = 12,
    batch_size: int = 32,
    lr: float = 2e-3,
    val_fraction: float = 0.2,
    seed: int = 0,
    progress: Progress | None = None,
) -> tuple[object, TrainResult]:
    """Train on a chunk of events; ``target`` is GenMET (px, py) in GeV, shape [n, 2]."""
    torch = _torch()
    torch.manual_seed(seed)  # type: ignore[attr-defined]
    n = len(inputs)
    t = inputs.tensors
    real = np.arange(t["input"].shape[1])[None, :] < inputs.n_candidates[:, None]
    feats = t["input"][real]
    net = build_network(feats.mean(axis=0), feats.std(axis=0) + 1e-6)
    tens = [torch.from_numpy(t[k]) for k in INPUT_NAMES]  # type: ignore[attr-defined]
    y = torch.from_numpy((target / NORM_FACTOR).astype(np.float32))  # type: ignore[attr-defined]

    def loss_of(idx: np.ndarray) -> object:
        width = int(inputs.n_candidates[idx].max())  # no work on rows that are all padding
        ix = torch.from_numpy(idx)  # type: ignore[attr-defined]
        pred = net(*(x[ix, :width] for x in tens))
        return ((pred - y[ix]) ** 2).sum(dim=1).mean()

    result = fit(net, loss_of, n, epochs=epochs, batch_size=batch_size, lr=lr,
                 val_fraction=val_fraction, seed=seed, clip_norm=1.0,
                 progress=progress)  # fmt: skip
    return net, result


def export_onnx(net: object, path: Path, max_n_pf: int = MAX_N_PF) -> Path:
    """Write the network as ONNX with CMSSW's names and shapes (batch dimension dynamic)."""
    torch = _torch()
    net.eval()  # type: ignore[attr-defined]
    example = (torch.zeros(1, max_n_pf, len(FEATURES)),  # type: ignore[attr-defined]
               *(torch.zeros(1, max_n_pf, 1) for _ in range(3)))  # type: ignore[attr-defined]  # fmt: skip
    axes = {name: {0: "batch"} for name in (*INPUT_NAMES, OUTPUT_NAME)}
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # The TorchScript-based exporter is deprecated but needs no onnxscript,
        # and gives the plain opset-17 graph every ONNX Runtime serves.
        warnings.filterwarnings("ignore", "You are using the legacy", DeprecationWarning)
        torch.onnx.export(  # type: ignore[attr-defined]
            net, example, str(path), input_names=list(INPUT_NAMES), output_names=[OUTPUT_NAME],
            dynamic_axes=axes, opset_version=17, dynamo=False,
        )  # fmt: skip
    return path


def load_training_data(
    files: list[Path], max_events: int | None = None
) -> tuple[DeepMETInputs, np.ndarray]:
    """CMSSW inputs and GenMET (px, py) targets from generated samples.

    Padding is cut at the largest event (at most 4500): training needs no
    all-zero rows, and the network treats every row alike.
    """
    import awkward as ak
    import uproot

    from sonic.workflow.inputs import PF_BRANCHES, build_inputs

    arrays = [uproot.open(f)["Events"].arrays([f"PFCands_{b}" for b in PF_BRANCHES]
                                              + ["GenMET_pt", "GenMET_phi"],
                                              entry_stop=max_events) for f in files]  # fmt: skip
    a = ak.concatenate(arrays)
    width = min(MAX_N_PF, int(ak.max(ak.num(a["PFCands_pt"]))))
    inputs = build_inputs({b: a[f"PFCands_{b}"] for b in PF_BRANCHES}, max_n_pf=width)
    pt, phi = ak.to_numpy(a["GenMET_pt"]), ak.to_numpy(a["GenMET_phi"])
    return inputs, np.stack([pt * np.cos(phi), pt * np.sin(phi)], axis=1)
