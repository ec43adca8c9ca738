"""DeepMET as CMS builds it: a weight and two bias terms per PF candidate, summed into MET.

The network of CMS's ``RecoMET/METPUSubtraction`` (the graph CMS serves, and
its training code ``train_ptmiss.py``) in PyTorch, with the exact CMSSW tensor
interface (:mod:`sonic.workflow.inputs`).  Per candidate the three categorical
inputs (charge, pdgId class, fromPV) are embedded in 8 dimensions each and
joined to the 8 continuous features (standardised with constants fixed from
the training sample, stored in the graph); dense layers of 64, 32 and 16, each
tanh then BatchNorm; a linear layer gives three numbers (w - 1, b_x, b_y).  The
event sums w (b_x, b_y, px, py) over its real candidates, and a final linear
layer (4 -> 2) gives ``output/BiasAdd``: MET (px, py) / 50.  Padding rows
(pT = 0) are masked out of the sum and of BatchNorm's statistics.  At
initialisation w = 1, b = 0 and the last layer takes -(px, py), so an untrained
network is raw PF MET.

Two tunes, as CMS trains them: the **resolution tune** minimises
0.5 |MET - GenMET|^2 (in units of 50 GeV); the **response tune** adds CMS's
response-balancing term (:func:`response_term`), weighted by
:data:`RESPONSE_WEIGHT`, extended to the Z->mumu recoil (:func:`dimuons`) and balanced for
each hard process apart (:func:`process_ids`).
Needs the ``torch`` extra (``torch==2.13.0``).
"""

from __future__ import annotations

import functools
import itertools
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
from sonic.workflow.met_performance import MUON, dimuon
from sonic.workflow.training import Progress, TrainResult, fit

EMBEDDING_DIM = 8
HIDDEN = (64, 32, 16)
N_FROM_PV = 4
#: Keras's BatchNorm momentum 0.95 is PyTorch's 0.05.
BN_MOMENTUM = 0.05
#: The response term's weight, and CMS's true-pT bins (GeV).  CMS weights its term 5000, which
#: here swamps the squared error with the term's noise (it stayed at its starting value over
#: four epochs); 20 balances the response (in a 600-event trial: 0.81 without the term, 0.97
#: at q_T 50-100 GeV with it, resolution unchanged; 200 gave the same as 20; on the full sample
#: version 5, 40, 100 and 300 gave 0.966, 0.969 and 0.971 against 0.961 at Z->nunu q_T 50-100
#: GeV, each with 0.3-0.6 GeV more sigma_perp; docs/workflow.md).
RESPONSE_WEIGHT = 20.0
RESPONSE_BINS = (50.0, 100.0, 200.0, 300.0, 400.0, float("inf"))
#: Training's defaults.  The response term balances each bin's sum within a batch, and at 64 a
#: bin holds about a dozen events of a process; batches of 256 (learning rate 2e-3) balance the
#: held-out response at q_T 50-100 GeV to 0.98 (0.97 at 64) but, in the same epochs, fit less:
#: sigma_perp/R 2-3 GeV worse (docs/workflow.md).
BATCH_SIZE = 64
LEARNING_RATE = 1e-3
#: So the response tune ends with a few epochs in large batches, from a small learning rate:
#: the fit is made in batches of 64, the balance then on sums of about a hundred events per
#: bin.  Measured on the shipped tune (three held-out seeds): the response at q_T 50-100 GeV
#: 0.972 -> 0.982 in Z->nu nu and 0.966 -> 0.977 in the Z->mu mu recoil, sigma_perp/R unchanged
#: (docs/workflow.md).
BALANCE_EPOCHS = 3
BALANCE_BATCH_SIZE = 512
BALANCE_LR = 3e-4
#: The tunes, and the version each is in the model directory (as CMS numbers them).
TUNE_VERSIONS = {"resolution": "1", "response": "2"}
TUNES = tuple(TUNE_VERSIONS)
PT_FEATURE = FEATURES.index("pt")


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
            widths = (len(FEATURES) + 3 * EMBEDDING_DIM, *HIDDEN)
            self.dense = nn.ModuleList([nn.Linear(a, b) for a, b in itertools.pairwise(widths)])
            self.norm = nn.ModuleList([nn.BatchNorm1d(h, momentum=BN_MOMENTUM) for h in HIDDEN])
            self.head = nn.Linear(HIDDEN[-1], 3)  # w - 1, b_x, b_y
            self.output = nn.Linear(4, 2)  # from sum w (b_x, b_y, px, py)
            with torch.no_grad():  # start as raw PF MET: w = 1, b = 0, output -(px, py)
                nn.init.zeros_(self.head.weight)
                nn.init.zeros_(self.head.bias)
                self.output.weight.copy_(torch.tensor([[0.0, 0, -1, 0], [0, 0, 0, -1]]))
                nn.init.zeros_(self.output.bias)
            m = np.zeros(len(FEATURES)) if mean is None else mean
            s = np.ones(len(FEATURES)) if std is None else std
            self.register_buffer("mean", torch.tensor(m, dtype=torch.float32))
            self.register_buffer("inv_std", torch.tensor(1 / s, dtype=torch.float32))

        def _normed(self, bn, h, real):  # type: ignore[no-untyped-def]
            flat = h.reshape(-1, h.shape[-1])
            if not self.training:  # running statistics: the same affine map on every row
                return bn(flat).reshape(h.shape)
            rows = real.reshape(-1)
            out = flat.clone()
            out[rows] = bn(flat[rows])  # statistics of real candidates, never of padding
            return out.reshape(h.shape)

        def forward(self, x, cat0, cat1, cat2):  # type: ignore[no-untyped-def]
            real = x[..., PT_FEATURE] != 0
            # Clamped: a value outside a table (no CMSSW producer sends one) must not fail.
            cats = [e(c[..., 0].long().clamp(0, e.num_embeddings - 1))
                    for e, c in zip(self.emb, (cat0, cat1, cat2), strict=True)]  # fmt: skip
            h = torch.cat([(x - self.mean) * self.inv_std, *cats], dim=-1)
            for dense, bn in zip(self.dense, self.norm, strict=True):
                h = self._normed(bn, torch.tanh(dense(h)), real)
            out = self.head(h)
            w = (1 + out[..., :1]) * real.unsqueeze(-1).to(x.dtype)
            summed = (w * torch.cat([out[..., 1:3], x[..., 6:8]], dim=-1)).sum(dim=1)
            return self.output(summed)  # features 6, 7: px/50, py/50

    return DeepMET()


def response_term(pred: object, target: object, visible: object | None = None,
                  groups: object | None = None) -> object:  # fmt: skip
    """The response-balancing term: per true-pT bin, |sum (MET_par - |GenMET|)|, summed over the
    bins and divided by the sum of |GenMET| (a batch whose every bin balances gives 0).

    MET_par is the estimate projected on GenMET's direction, the quantity whose mean over q_T
    is the response CMS measures.  CMS's ``loss.py`` balances the magnitude |MET| instead,
    which resolution pushes above the projection: balancing it leaves the measured response
    a few per cent below 1 (0.94 at q_T 50-100 GeV in the same trial, against 0.97).

    ``visible`` (the event's Z -> mu mu candidate, :func:`dimuons`; zero where it has none)
    is added to both sides: MET + q_mumu against GenMET + q_mumu balances the hadronic recoil
    against the dimuon, R = -<u_par>/<q_T> as CMS measures it in Z -> mu mu, where GenMET
    (about 0) says nothing of the recoil's scale.  Events with a dimuon are balanced apart
    from the others: in one sum, the few Z -> mu mu events' excess hid in the other events'
    shortfall.  Without the recoil the network counted the muons at 0.96 of their pT (bias
    terms included) while the recoil balanced, so the measured Z -> mu mu response came out
    at 1.04-1.05 above q_T 100 GeV; with it, and Z -> mu mu events at high q_T to train on
    (the inclusive sample has about 50 above 50 GeV), 1.01-1.02 (docs/workflow.md).

    ``groups`` (an integer per event, its hard process: :func:`process_ids`) splits the sums
    further, so that ttbar's excess at a true pT (1.03 at 50-100 GeV) does not hide Z -> nu
    nu's shortfall there.  Measured by retraining: the shortfall went with 1,000 more Z -> nu
    nu events to train on (0.961 -> 0.976, with or without groups), the groups bought the
    resolution (sigma_perp/R 20.1 against 20.8 GeV at 50-100 GeV; docs/workflow.md)."""
    torch = _torch()
    label = torch.zeros(len(pred), dtype=torch.long)  # type: ignore[arg-type,attr-defined]
    if visible is not None:
        pred, target = pred + visible, target + visible  # type: ignore[operator]
        label = (visible != 0).any(dim=1).long()  # type: ignore[attr-defined]
    if groups is not None:
        label = label + 2 * groups  # type: ignore[operator]
    kinds = [label == k for k in torch.unique(label)]  # type: ignore[attr-defined]
    pt_true = torch.linalg.vector_norm(target, dim=1)  # type: ignore[attr-defined]
    par = (pred * target).sum(dim=1) / pt_true.clamp(min=1e-6)  # type: ignore[operator]
    total = pt_true.new_zeros(())
    for lo, hi in itertools.pairwise(RESPONSE_BINS):
        inside = (pt_true >= lo / NORM_FACTOR) & (pt_true < hi / NORM_FACTOR)
        for kind in kinds:
            total = total + ((par - pt_true) * (inside & kind)).sum().abs()
    return total / pt_true.sum().clamp(min=1e-6)


def loss(pred: object, target: object, tune: str = "resolution",
         visible: object | None = None, groups: object | None = None) -> object:  # fmt: skip
    """The training loss of a batch, MET and GenMET (and ``visible`` and ``groups``,
    :func:`response_term`) in units of 50 GeV."""
    if tune not in TUNES:
        raise ValueError(f"tune must be one of {TUNES}, not {tune!r}")
    mse = 0.5 * ((pred - target) ** 2).sum(dim=1).mean()  # type: ignore[operator]
    if tune == "resolution":
        return mse
    return mse + RESPONSE_WEIGHT * response_term(pred, target, visible, groups)


def dimuons(inputs: DeepMETInputs) -> np.ndarray:
    """Each event's Z -> mu mu candidate (q_x, q_y) in GeV from its tensors, as the MET study
    selects it (:func:`sonic.workflow.met_performance.dimuon`); (0, 0) where there is none."""
    x = inputs.tensors["input"]
    pdg_class = inputs.tensors["input_cat1"][..., 0]
    real = np.arange(pdg_class.shape[1])[None, :] < inputs.n_candidates[:, None]
    muon = real & np.isin(pdg_class, (PDGID_INDEX[-MUON], PDGID_INDEX[MUON]))
    charge_of = np.array(sorted(CHARGE_INDEX, key=CHARGE_INDEX.__getitem__))
    eta, px, py = (FEATURES.index(name) for name in ("eta", "px", "py"))
    out = np.zeros((len(inputs), 2))
    for ev in np.flatnonzero(muon.sum(axis=1) >= 2):
        rows = np.flatnonzero(muon[ev])
        mx, my = (x[ev, rows, c].astype(np.float64) * NORM_FACTOR for c in (px, py))
        pdg = np.where(pdg_class[ev, rows] == PDGID_INDEX[MUON], MUON, -MUON)
        charge = charge_of[inputs.tensors["input_cat0"][ev, rows, 0].astype(np.int64)]
        pair = dimuon(np.hypot(mx, my), x[ev, rows, eta].astype(np.float64),
                      np.arctan2(my, mx), pdg, charge)  # fmt: skip
        if pair is not None:
            out[ev] = pair
    return out


def train(
    inputs: DeepMETInputs,
    target: np.ndarray,
    *,
    tune: str = "resolution",
    epochs: int = 12,
    batch_size: int = BATCH_SIZE,
    lr: float = LEARNING_RATE,
    val_fraction: float = 0.2,
    seed: int = 0,
    progress: Progress | None = None,
    groups: np.ndarray | None = None,
    balance_epochs: int = BALANCE_EPOCHS,
) -> tuple[object, TrainResult]:
    """Train on a chunk of events; ``target`` is GenMET (px, py) in GeV, shape [n, 2];
    ``groups`` the events' hard processes, which the response term balances apart.  The
    response tune then trains ``balance_epochs`` more in batches of :data:`BALANCE_BATCH_SIZE`
    (the epochs are numbered on, and counted in the result)."""
    torch = _torch()
    torch.manual_seed(seed)  # type: ignore[attr-defined]
    n = len(inputs)
    t = inputs.tensors
    real = np.arange(t["input"].shape[1])[None, :] < inputs.n_candidates[:, None]
    feats = t["input"][real]
    net = build_network(feats.mean(axis=0), feats.std(axis=0) + 1e-6)
    tens = [torch.from_numpy(t[k]) for k in INPUT_NAMES]  # type: ignore[attr-defined]
    y = torch.from_numpy((target / NORM_FACTOR).astype(np.float32))  # type: ignore[attr-defined]
    v = torch.from_numpy((dimuons(inputs) / NORM_FACTOR).astype(np.float32))  # type: ignore[attr-defined]
    g = None if groups is None else torch.from_numpy(np.asarray(groups, np.int64))  # type: ignore[attr-defined]

    def loss_of(idx: np.ndarray) -> object:
        width = int(inputs.n_candidates[idx].max())  # no work on rows that are all padding
        ix = torch.from_numpy(idx)  # type: ignore[attr-defined]
        return loss(net(*(x[ix, :width] for x in tens)), y[ix], tune, v[ix],
                    None if g is None else g[ix])

    run = functools.partial(fit, net, loss_of, n, val_fraction=val_fraction, seed=seed,
                            clip_norm=1.0)  # fmt: skip
    result = run(epochs=epochs, batch_size=batch_size, lr=lr, progress=progress)
    balance_epochs = balancing(tune, balance_epochs)
    if balance_epochs == 0:
        return net, result
    on = None if progress is None else (lambda e, t, v: progress(epochs + e, t, v))
    more = run(epochs=balance_epochs, batch_size=BALANCE_BATCH_SIZE, lr=BALANCE_LR, progress=on)
    return net, TrainResult(epochs + balance_epochs, result.train_loss + more.train_loss,
                            result.val_loss + more.val_loss, result.seconds + more.seconds)


def balancing(tune: str, balance_epochs: int = BALANCE_EPOCHS) -> int:
    """The balancing epochs a tune trains: none for the resolution tune, which has no response
    term to balance."""
    return balance_epochs if tune == "response" else 0


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


def process_ids(files: list[Path]) -> np.ndarray:
    """Each event's hard process (``GenProcess_id``, an index into
    :data:`sonic.workflow.generate.HARD_PROCESSES`), for :func:`response_term`'s groups."""
    import uproot

    return np.concatenate([uproot.open(f)["Events"]["GenProcess_id"].array(library="np")
                           for f in files]).astype(np.int64)  # fmt: skip
