"""Truth labels of jets, as CMS defines the flavour classes ParticleNet is trained on.

CMS labels AK4 jets from their clustered generator hadrons and partons
(``JetFlavourClustering``): the hadron flavour is 5 with a b hadron in the
jet, 4 with a c hadron and no b, else 0; the parton flavour is 5 or 4 with
such a parton, else the hardest parton's flavour (21 for a gluon).  The
emulation associates by distance instead of ghost clustering: a weakly
decaying hadron, or a parton of the hard process or from the end of the
shower (``GenPart_*``), belongs to a jet within the jet's radius.  A jet
whose constituents are mostly (by pT) from pileup collisions
(``PFCands_isPU``) is a pileup jet, CMS's ``pu`` class.

The AK4 classes, in the softmax order of CMS's AK4 ParticleNet:
``b`` (one b hadron), ``bb`` (several), ``c`` / ``cc`` (no b, one or several c
hadrons), ``uds`` and ``g`` (no heavy hadron; light-quark or gluon parton),
``undef`` (neither), ``pu``.

AK8 jets (:func:`event_truth_ak8`) take the classes of CMS's AK8 ParticleNet:
a jet within 0.6 of a top quark whose b (the quark of the top's own sign) is
inside is ``Top_bqq`` / ``Top_bcq`` with both W quarks inside (``c`` when one
is a charm), ``Top_bq`` / ``Top_bc`` with one, ``Top_bele`` / ``Top_bmu`` /
``Top_btau`` with the W's lepton; every other jet is QCD by its hadrons
(``QCD_bb``, ``QCD_b``, ``QCD_cc``, ``QCD_c``, ``QCD_others``).  The W, Z
and H classes stay empty: no sample here makes them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sonic.workflow.generate import (
    HARD_LEPTON,
    HARD_PARTON,
    HEAVY_HADRON,
    SHOWER_PARTON,
    TOP_QUARK,
    _heavy_flavour,
)
from sonic.workflow.jet_inputs import AK4_LABELS, AK8_LABELS

B, BB, C, CC, UDS, G, UNDEF, PU = range(len(AK4_LABELS))
AK8 = {label: i for i, label in enumerate(AK8_LABELS)}
#: AK8 classes of a top decayed inside the jet (hadronically), and of QCD jets.
TOP_MERGED = ("Top_bcq", "Top_bqq", "Top_bc", "Top_bq")
QCD = ("QCD_bb", "QCD_cc", "QCD_b", "QCD_c", "QCD_others")
#: A top belongs to an AK8 jet within this distance (CMS's matching).
TOP_MATCH_DR = 0.6


@dataclass(slots=True)
class JetTruth:
    """Per jet: the class index, hadron and parton flavour, and b / c hadron counts."""

    label: np.ndarray
    hadron_flavour: np.ndarray
    parton_flavour: np.ndarray
    n_b: np.ndarray
    n_c: np.ndarray


def _dr2(eta: float, phi: float, etas: np.ndarray, phis: np.ndarray) -> np.ndarray:
    dphi = (phis - phi + np.pi) % (2 * np.pi) - np.pi
    return (etas - eta) ** 2 + dphi**2


def event_truth(jets: list[tuple[float, float, float]], members: list[np.ndarray],
                gen: dict[str, np.ndarray], pf_pt: np.ndarray, pf_is_pu: np.ndarray,
                radius: float = 0.4) -> JetTruth:  # fmt: skip
    """Labels of one event's jets ((pt, eta, phi) and constituent indices each)."""
    n = len(jets)
    out = JetTruth(*(np.zeros(n, dtype=np.int32) for _ in range(5)))
    pdg, kind = gen["pdgId"].astype(int), gen["kind"].astype(int)
    flavour = np.array([_heavy_flavour(p) for p in pdg], dtype=int)
    for j, ((_, eta, phi), idx) in enumerate(zip(jets, members, strict=True)):
        inside = _dr2(eta, phi, gen["eta"], gen["phi"]) < radius * radius
        hadrons = flavour[inside & (kind == HEAVY_HADRON)]
        n_b, n_c = int((hadrons == 5).sum()), int((hadrons == 4).sum())
        partons = inside & ((kind == HARD_PARTON) | (kind == SHOWER_PARTON))
        parton_ids = np.abs(pdg[partons])
        if (parton_ids == 5).any():
            parton = 5
        elif (parton_ids == 4).any():
            parton = 4
        elif parton_ids.size:
            parton = int(parton_ids[np.argmax(gen["pt"][partons])])
        else:
            parton = 0
        hadron = 5 if n_b else 4 if n_c else 0
        pu_fraction = pf_pt[idx][pf_is_pu[idx]].sum() / max(pf_pt[idx].sum(), 1e-9)
        if pu_fraction > 0.5:
            label = PU
        elif n_b:
            label = B if n_b == 1 else BB
        elif n_c:
            label = C if n_c == 1 else CC
        elif 1 <= parton <= 3:
            label = UDS
        elif parton == 21:
            label = G
        else:
            label = UNDEF
        out.label[j], out.hadron_flavour[j], out.parton_flavour[j] = label, hadron, parton
        out.n_b[j], out.n_c[j] = n_b, n_c
    return out


def b_vs_light(scores: np.ndarray) -> np.ndarray:
    """CMS's b-tagging discriminant from the softmax: (b + bb) / (b + bb + uds + g)."""
    b = scores[:, B] + scores[:, BB]
    return b / np.maximum(b + scores[:, UDS] + scores[:, G], 1e-12)


def event_truth_ak8(jets: list[tuple[float, float, float]], members: list[np.ndarray],
                    gen: dict[str, np.ndarray], pf_pt: np.ndarray, pf_is_pu: np.ndarray,
                    radius: float = 0.8) -> JetTruth:  # fmt: skip
    """Labels of one event's AK8 jets (indices into :data:`AK8_LABELS`)."""
    base = event_truth(jets, members, gen, pf_pt, pf_is_pu, radius)
    pdg, kind = gen["pdgId"].astype(int), gen["kind"].astype(int)
    labels = np.zeros(len(jets), dtype=np.int32)
    for j, (_, eta, phi) in enumerate(jets):
        dr2 = _dr2(eta, phi, gen["eta"], gen["phi"])
        inside = dr2 < radius * radius
        label = None
        for top in np.flatnonzero((kind == TOP_QUARK) & (dr2 < TOP_MATCH_DR**2)):
            sign = np.sign(pdg[top])
            if not (inside & (kind == HARD_PARTON) & (pdg == 5 * sign)).any():
                continue  # the top's b is outside: not a merged top
            quarks = np.abs(pdg[inside & (kind == HARD_PARTON) & (np.abs(pdg) <= 4)])
            leptons = np.abs(pdg[inside & (kind == HARD_LEPTON)])
            if len(quarks) >= 2:
                label = "Top_bcq" if (quarks == 4).any() else "Top_bqq"
            elif len(quarks) == 1:
                label = "Top_bc" if quarks[0] == 4 else "Top_bq"
            elif len(leptons):
                label = {11: "Top_bele", 13: "Top_bmu"}.get(int(leptons[0]), "Top_btau")
            break
        if label is None:
            n_b, n_c = base.n_b[j], base.n_c[j]
            label = ("QCD_bb" if n_b > 1 else "QCD_b" if n_b else "QCD_cc" if n_c > 1
                     else "QCD_c" if n_c else "QCD_others")  # fmt: skip
        labels[j] = AK8[label]
    base.label = labels
    return base


def top_vs_qcd(scores: np.ndarray) -> np.ndarray:
    """CMS's top-tagging discriminant from the AK8 softmax: merged top / (merged top + QCD)."""
    top = scores[:, [AK8[k] for k in TOP_MERGED]].sum(axis=1)
    return top / np.maximum(top + scores[:, [AK8[k] for k in QCD]].sum(axis=1), 1e-12)
