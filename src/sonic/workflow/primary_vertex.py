"""Primary vertices without generator truth: a vertex-fit emulation and CMS's ``fromPV``.

CMS does not know which collision a track came from.  It clusters tracks in z
into vertices (deterministic annealing, then an adaptive fit), picks the
primary vertex (PV) as the one with the largest sum of pT squared, and
``PATPackedCandidateProducer`` then states each charged candidate's
relation to the PV as ``fromPV`` (``pat::PackedCandidate::PVAssociationQuality``).
This module does the same from the tracks' measured z, so that ``fromPV``
carries the confusion a real vertex fit has:

Vertex finding
    Tracks compatible with a prompt origin (|d0| / sigma(d0) < 4) take part.
    Each collision with at least :data:`MIN_FIT_TRACKS` of them gives a
    vertex at the error-weighted mean z of its tracks; collisions with fewer
    are not found, and their tracks belong to no vertex.  Vertices closer than
    :data:`MERGE_DZ` (1 mm, the z separation CMS's clustering resolves)
    merge, chaining in z: a pileup collision that close to the hard scatter
    becomes part of the PV.  A merged vertex sits where its most precisely
    measured collision is, as the adaptive fit, which down-weights tracks
    far off, converges there; the other collisions' tracks fall outside it.
Primary vertex
    The vertex with the largest sum of its physics objects' pT squared (jets of its
    tracks and their missing pT, :func:`physics_pt2`).
Association (each track to the vertex closest in dz significance)
    As ``pat::PackedCandidate::fromPV`` states it: ``3`` (PVUsedInFit) if
    used in the PV's fit (prompt, within 3 sigma); ``2`` (PVTight) if the PV
    is the closest vertex but the track is not in its fit, and for every
    electron and muon; ``0`` (NoPV) only if used in another vertex's fit;
    ``1`` (PVLoose) for the rest, tracks closest to another vertex but used
    in no fit (displaced daughters of the hard scatter, and pileup tracks
    from collisions too soft to give a vertex).  CHS, which removes NoPV,
    thus keeps them, as CMS's does; PUPPI's dz cut sorts them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

#: Tracks a collision needs to give a vertex (CMS's ndof > 4 needs about four).
MIN_FIT_TRACKS = 4
#: Vertices closer than this in z (cm) merge.
MERGE_DZ = 0.1
#: A track takes part in finding vertices if it is this compatible with a prompt origin.
MAX_D0_SIGNIFICANCE = 4.0
#: Compatibility (in sigma) of a track with the vertex it is fitted into.
FIT_SIGMA = 3.0
NO_PV, PV_LOOSE, PV_TIGHT, PV_USED_IN_FIT = 0, 1, 2, 3


@dataclass(frozen=True, slots=True)
class Vertices:
    """The reconstructed vertices of one event (z in cm) and which one is the PV."""

    z: np.ndarray
    #: Each vertex's score for being the PV (:func:`physics_pt2`).
    sum_pt2: np.ndarray
    pv: int

    @property
    def count(self) -> int:
        return len(self.z)

    @property
    def pv_z(self) -> float:
        return float(self.z[self.pv]) if self.count else 0.0


def find_vertices(z: np.ndarray, sigma_z: np.ndarray, pt: np.ndarray, eta: np.ndarray,
                  phi: np.ndarray, prompt: np.ndarray,
                  collision: np.ndarray) -> Vertices:  # fmt: skip
    """Vertices from tracks (measured z, its error, pT, direction, promptness, and the collision
    each came from: the emulation forms one seed per collision, as a perfect clustering would,
    and lets the merging spoil it as CMS's does)."""
    seeds = []
    for c in np.unique(collision[prompt]):
        mine = prompt & (collision == c)
        if mine.sum() >= MIN_FIT_TRACKS:
            w = 1 / sigma_z[mine] ** 2
            seeds.append((float((z[mine] * w).sum() / w.sum()), float(w.sum()), [c]))
    if not seeds:
        return Vertices(np.zeros(0), np.zeros(0), -1)
    seeds.sort(key=lambda seed: seed[0])
    # Each merged vertex: [clustering z, its weight, collisions, fitted z, that seed's weight].
    merged = [[*seeds[0], *seeds[0][:2]]]
    for zs, ws, cs in seeds[1:]:
        last = merged[-1]
        if zs - last[0] < MERGE_DZ:  # chain: the cluster moves, and may reach the next
            last[0] = (last[0] * last[1] + zs * ws) / (last[1] + ws)
            last[1] += ws
            last[2] += cs
            if ws > last[4]:
                last[3:] = [zs, ws]
        else:
            merged.append([zs, ws, cs, zs, ws])
    score = np.array([physics_pt2(*(x[prompt & np.isin(collision, m[2])] for x in (pt, eta, phi)))
                      for m in merged])  # fmt: skip
    return Vertices(np.array([m[3] for m in merged]), score, int(np.argmax(score)))


def physics_pt2(pt: np.ndarray, eta: np.ndarray, phi: np.ndarray) -> float:
    """CMS's PV score: the sum of pT squared of the jets made of a vertex's tracks, plus their
    missing pT squared (so that a hard jet outweighs many soft tracks).  The jets here are the
    tracks' pT summed in cells of 0.8 x pi/4 in (eta, phi), about an R = 0.4 cone each."""
    cells = np.floor(eta / 0.8) * 16 + np.floor((phi + np.pi) / (np.pi / 4))
    _, which = np.unique(cells, return_inverse=True)
    jets = np.bincount(which, pt)
    return float((jets**2).sum() + (pt * np.cos(phi)).sum() ** 2 + (pt * np.sin(phi)).sum() ** 2)


def charged_pileup(charge: Any, from_pv: Any) -> Any:
    """What CHS removes: charged candidates used in another vertex's fit (NoPV); numpy or
    awkward arrays alike."""
    return (charge != 0) & (from_pv == NO_PV)


def associate(z: np.ndarray, sigma_z: np.ndarray, prompt: np.ndarray, lepton: np.ndarray,
              vertices: Vertices) -> np.ndarray:  # fmt: skip
    """``fromPV`` of each track (see the module docstring).  With no vertex, CMS's PV is a
    stand-in made from the beam spot, and every track is PVTight to it."""
    if vertices.count == 0:
        return np.full(len(z), PV_TIGHT, dtype=np.int32)
    significance = np.abs(z[:, None] - vertices.z[None, :]) / sigma_z[:, None]
    closest = np.argmin(significance, axis=1)
    fitted = prompt & (significance[np.arange(len(z)), closest] < FIT_SIGMA)
    to_pv = closest == vertices.pv
    return np.select(
        [fitted & to_pv, to_pv | lepton, fitted], [PV_USED_IN_FIT, PV_TIGHT, NO_PV], PV_LOOSE
    ).astype(np.int32)
