"""Secondary vertices, as CMS's inclusive vertex finder (IVF) would find them in the emulation.

B and D hadrons fly millimetres before they decay; CMS reconstructs their decay
points from displaced tracks (``slimmedSecondaryVertices``, NanoAOD's ``SV``
collection) and the b taggers read them.  The emulation knows each
particle's true production point, so it finds vertices from the truth and
then degrades them:

- tracks: charged, |eta| < 2.5, pT > 0.8 GeV (IVF's seed threshold), each
  found with 90% probability;
- a vertex needs two such tracks sharing a production point at least 100 um
  from the collision in the transverse plane, and is then found with 70%
  probability (about IVF's efficiency for b-hadron decays);
- its position is smeared by 100 um transverse and 150 um along z, and its
  kinematics are the sum of its tracks (pion masses), with the track
  momentum resolution;
- two-track vertices within 50 MeV of the K0S mass are vetoed, as IVF does.

Only the hard collision's vertices are kept; pileup collisions sit centimetres
away in z.  Each vertex carries NanoAOD's columns: pt, eta, phi, mass,
ntracks, chi2 (per degree of freedom), dxy, dxySig, dlen, dlenSig.
"""

from __future__ import annotations

import numpy as np

from sonic.workflow.detector import CHARGED_HADRON_MASS, Particles

TRACK_MIN_PT = 0.8
TRACK_EFFICIENCY = 0.9
VERTEX_EFFICIENCY = 0.7
MIN_DXY_CM = 0.01
SIGMA_XY_CM, SIGMA_Z_CM = 0.010, 0.015
#: The primary vertex's own transverse and longitudinal uncertainty (cm).
PV_SIGMA_XY_CM, PV_SIGMA_Z_CM = 0.002, 0.003
K0S_MASS, K0S_WINDOW = 0.4976, 0.05
SV_FIELDS = ("pt", "eta", "phi", "mass", "ntracks", "chi2", "dxy", "dxySig", "dlen", "dlenSig")


def secondary_vertices(hard: Particles, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The vertices found among the hard collision's particles, as columns."""
    pt = np.hypot(hard.px, hard.py)
    eta = np.arcsinh(np.divide(hard.pz, pt, out=np.zeros_like(pt), where=pt > 0))
    usable = ((hard.charge != 0) & (np.abs(eta) < 2.5) & (pt > TRACK_MIN_PT)
              & (rng.random(len(pt)) < TRACK_EFFICIENCY))  # fmt: skip
    displaced = usable & (np.hypot(hard.vx, hard.vy) > MIN_DXY_CM)
    rows: list[tuple[float, ...]] = []
    if displaced.any():
        points = np.stack([hard.vx, hard.vy, hard.vz], axis=1)[displaced]
        members = np.flatnonzero(displaced)
        _, group = np.unique(points, axis=0, return_inverse=True)
        for g in range(group.max() + 1):
            tracks = members[group.ravel() == g]
            if len(tracks) < 2 or rng.random() >= VERTEX_EFFICIENCY:
                continue
            row = _vertex(hard, tracks, rng)
            if row is not None:
                rows.append(row)
    table = np.array(rows, dtype=np.float64).reshape(-1, len(SV_FIELDS))
    out = {k: table[:, i] for i, k in enumerate(SV_FIELDS)}
    out["ntracks"] = out["ntracks"].astype(np.int32)
    return out


def _vertex(hard: Particles, tracks: np.ndarray,
            rng: np.random.Generator) -> tuple[float, ...] | None:  # fmt: skip
    n = len(tracks)
    scale = 1.0 + 0.01 * rng.standard_normal(n)
    px, py, pz = (getattr(hard, k)[tracks] * scale for k in ("px", "py", "pz"))
    e = np.sqrt(px**2 + py**2 + pz**2 + CHARGED_HADRON_MASS**2)
    sx, sy, sz, se = px.sum(), py.sum(), pz.sum(), e.sum()
    mass = float(np.sqrt(max(se**2 - sx**2 - sy**2 - sz**2, 0.0)))
    if n == 2 and abs(mass - K0S_MASS) < K0S_WINDOW:
        return None
    x, y = (getattr(hard, k)[tracks[0]] + SIGMA_XY_CM * rng.standard_normal() for k in ("vx", "vy"))
    z = hard.vz[tracks[0]] + SIGMA_Z_CM * rng.standard_normal()
    dxy = float(np.hypot(x, y))
    dlen = float(np.sqrt(x * x + y * y + z * z))
    sig_xy = np.hypot(SIGMA_XY_CM, PV_SIGMA_XY_CM)
    sig_3d = np.sqrt((SIGMA_XY_CM**2 + PV_SIGMA_XY_CM**2) * (x * x + y * y)
                     + (SIGMA_Z_CM**2 + PV_SIGMA_Z_CM**2) * z * z) / max(dlen, 1e-9)  # fmt: skip
    ndof = 2 * n - 3
    chi2 = float(rng.chisquare(ndof) / ndof)
    spt = float(np.hypot(sx, sy))
    return (spt, float(np.arcsinh(sz / spt)), float(np.arctan2(sy, sx)), mass, float(n), chi2,
            dxy, dxy / sig_xy, dlen, dlen / sig_3d)  # fmt: skip
