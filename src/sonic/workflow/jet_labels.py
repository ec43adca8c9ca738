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
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sonic.workflow.generate import HARD_PARTON, HEAVY_HADRON, SHOWER_PARTON, _heavy_flavour
from sonic.workflow.jet_inputs import AK4_LABELS

B, BB, C, CC, UDS, G, UNDEF, PU = range(len(AK4_LABELS))


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
