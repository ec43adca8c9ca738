"""The vertex-fit emulation and CMS's fromPV classes, from hand-placed tracks."""

from __future__ import annotations

import numpy as np
import pytest

from sonic.workflow import primary_vertex as pv


def _tracks(groups: list[tuple[float, int, float]]) -> dict[str, np.ndarray]:
    """(z, number of tracks, pT) per collision, tracks spread in phi, sigma_z 100 um."""
    z, pt, phi, collision = [], [], [], []
    for c, (zc, n, p) in enumerate(groups):
        z += [zc] * n
        pt += [p] * n
        phi += list(np.linspace(-3, 3, n))
        collision += [c] * n
    n = len(z)
    return {"z": np.array(z), "sigma_z": np.full(n, 0.01), "pt": np.array(pt),
            "eta": np.zeros(n), "phi": np.array(phi), "prompt": np.ones(n, bool),
            "collision": np.array(collision)}  # fmt: skip


def test_vertices_merge_within_a_millimetre_chaining_in_z() -> None:
    t = _tracks([(0.0, 5, 1.0), (0.06, 6, 1.0), (0.12, 5, 1.0), (1.0, 5, 1.0), (2.0, 3, 1.0)])
    v = pv.find_vertices(**t)
    # 0 and 0.06 cluster at 0.033; 0.12 is within 1 mm of that; 1.0 stays; 2.0 has too few
    # tracks.  The merged vertex is fitted where its largest collision is.
    assert v.count == 2
    assert v.z.tolist() == pytest.approx([0.06, 1.0], abs=1e-3)


def test_the_pv_has_the_largest_physics_pt2_not_the_most_tracks() -> None:
    t = _tracks([(0.0, 40, 0.8), (1.0, 4, 30.0)])
    t["phi"][40:] = 0.1  # a collimated jet of four 30 GeV tracks
    v = pv.find_vertices(**t)
    assert v.pv_z == pytest.approx(1.0)
    assert pv.physics_pt2(np.full(4, 30.0), np.zeros(4), np.full(4, 0.1)) == pytest.approx(
        120**2 * 2
    )  # one jet of 120 GeV, and 120 GeV of missing pT


def test_from_pv_classes() -> None:
    vertices = pv.Vertices(np.array([0.0, 0.4]), np.array([10.0, 1.0]), 0)
    z = np.array([0.01, 0.41, 0.1, 0.6, 2.0, 0.41])
    prompt = np.array([True, True, False, False, True, True])
    lepton = np.array([False] * 5 + [True])
    got = pv.associate(z, np.full(6, 0.01), prompt, lepton, vertices)
    # In the PV fit; in the other's fit; closest to the PV, not prompt; closest to the other,
    # in no fit (displaced); far from every vertex, so in no fit; a lepton in the other's fit.
    assert got.tolist() == [3, 0, 2, 1, 1, 2]
    none = pv.Vertices(np.zeros(0), np.zeros(0), -1)
    assert (pv.associate(z, np.full(6, 0.01), prompt, lepton, none) == 2).all()
