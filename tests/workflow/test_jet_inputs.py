"""ParticleNet inputs against hand-built jets: order, preprocessing, clipping, padding, masks,
the half-ragged lengths, and events that send nothing."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sonic.workflow.jet_inputs import AK4_CHS, INPUT_NAMES, VTX_ASS, event_inputs

FEATURES = [v.name for v in AK4_CHS.group("pf_features").variables]
SV_FEATURES = [v.name for v in AK4_CHS.group("sv_features").variables]


def _pf(rows: list[tuple[float, float, float, int, int]]) -> dict[str, np.ndarray]:
    """(pt, eta, phi, charge, pdgId) per candidate; tracks from the PV with small IPs."""
    a = np.array(rows, dtype=np.float64).reshape(-1, 5)
    n = len(a)
    return {"pt": a[:, 0], "eta": a[:, 1], "phi": a[:, 2], "mass": np.zeros(n),
            "charge": a[:, 3].astype(int), "pdgId": a[:, 4].astype(int),
            "d0": np.where(a[:, 3] != 0, 0.002, 0.0), "dz": np.where(a[:, 3] != 0, -0.003, 0.0),
            "fromPV": np.full(n, 3)}  # fmt: skip


def _row(out: dict[str, np.ndarray], name: str, jet: int) -> np.ndarray:
    return out["pf_features"][jet, FEATURES.index(name)]


def test_one_jet_features_preprocessing_and_padding() -> None:
    pf = _pf([(20.0, -1.2, 0.3, 1, 211), (10.0, -1.0, 0.2, 0, 22), (400.0, -1.1, 0.25, 0, 130)])
    jet = (430.0, -1.1, 0.25)
    out = event_inputs(pf, [(jet, np.array([2, 0, 1]))])
    assert out is not None and tuple(out) == INPUT_NAMES
    assert out["pf_features"].shape == (1, 20, 8)  # 3 candidates, padded to min_length 8
    assert out["pf_features"].dtype == np.float32
    # pt_log: (log(pt) - 0.8) * 0.7, clipped to [-5, 5]: log(400) gives 3.63.
    np.testing.assert_allclose(_row(out, "pfcand_pt_log_nopuppi", 0)[:3],
                               [(math.log(p) - 0.8) * 0.7 for p in (400, 20, 10)], rtol=1e-6)
    # etarel is signed by the jet's eta (negative here), phirel is a plain difference.
    np.testing.assert_allclose(out["pf_points"][0, 0, :3], [-(x + 1.1) for x in (-1.1, -1.2, -1.0)],
                               atol=1e-6)  # fmt: skip
    np.testing.assert_allclose(out["pf_points"][0, 1, :3], [0.0, 0.05, -0.05], atol=1e-6)
    # A neutral has CMSSW's no-track values: normchi2 999 clipped to 5, IPs 0.
    assert _row(out, "pfcand_normchi2", 0)[0] == 5.0
    assert _row(out, "pfcand_normchi2", 0)[1] == pytest.approx((1 - 5) * 0.2)
    assert _row(out, "pfcand_dxy", 0)[0] == 0.0 and _row(out, "pfcand_dxy", 0)[1] != 0.0
    assert _row(out, "pfcand_VTX_ass", 0)[1] == pytest.approx((VTX_ASS[3] - 4) * 0.3)
    # The track's momentum relative to the jet axis: a small angle, so PtRatio is small and
    # PParRatio is close to 1.
    assert 0 < _row(out, "pfcand_btagPtRatio", 0)[1] < 0.2
    assert _row(out, "pfcand_btagPParRatio", 0)[1] == pytest.approx(1.0, abs=0.02)
    # Padding: every group's padded positions are 0, the mask marks the real ones.
    assert np.all(out["pf_features"][0, :, 3:] == 0)
    np.testing.assert_array_equal(out["pf_mask"][0, 0], [1, 1, 1, 0, 0, 0, 0, 0])
    # No secondary vertices: one masked, zero vertex slot (min_length 1).
    assert out["sv_features"].shape == (1, 11, 1)
    assert np.all(out["sv_mask"] == 0) and np.all(out["sv_features"] == 0)


def test_lengths_are_the_largest_jet_clamped_and_long_jets_keep_their_leading_candidates() -> None:
    n = 70
    pf = _pf([(100.0 - i, 0.5 + 0.001 * i, 0.1, 1, 211) for i in range(n)])
    jets = [((3000.0, 0.5, 0.1), np.arange(n)), ((30.0, 0.5, 0.1), np.arange(12, 24))]
    out = event_inputs(pf, jets)
    assert out is not None
    assert out["pf_features"].shape == (2, 20, 50)  # 70 candidates: clamped to max_length 50
    np.testing.assert_allclose(out["pf_points"][0, 0, :50], 0.001 * np.arange(50), atol=1e-6)
    assert out["pf_mask"][0].sum() == 50
    assert out["pf_mask"][1].sum() == 12
    assert np.all(out["pf_features"][1, :, 12:] == 0)
    # 20 candidates in the largest jet: that length, between 8 and 50.
    out = event_inputs(pf, [((30.0, 0.5, 0.1), np.arange(20)), ((30.0, 0.5, 0.1), np.arange(3))])
    assert out is not None and out["pf_features"].shape == (2, 20, 20)


def test_clipping_and_non_finite_values() -> None:
    # A track with a huge impact parameter: dxy * 270 clips at 5; a zero-pT candidate's log
    # is -inf and is replaced by 0 before centring.
    pf = _pf([(5.0, 0.0, 0.0, 1, 211), (0.0, 0.0, 0.0, 0, 22)])
    pf["d0"] = np.array([1.0, 0.0])
    out = event_inputs(pf, [((5.0, 0.0, 0.0), np.array([0, 1]))])
    assert out is not None
    assert _row(out, "pfcand_dxy", 0)[0] == 5.0
    assert _row(out, "pfcand_pt_log_nopuppi", 0)[1] == pytest.approx((0 - 0.8) * 0.7)


def test_secondary_vertices_inside_the_cone_by_significance() -> None:
    pf = _pf([(50.0, 0.0, 0.0, 1, 211)])
    sv = {"pt": np.array([10.0, 20.0, 5.0]), "eta": np.array([0.1, 0.05, 2.0]),
          "phi": np.array([0.0, 0.1, 0.0]), "mass": np.array([1.5, 2.0, 1.0]),
          "ntracks": np.array([2, 3, 2]), "chi2": np.array([0.5, 1.0, 0.7]),
          "dxy": np.array([0.1, 0.3, 0.2]), "dxySig": np.array([4.0, 12.0, 8.0]),
          "dlen": np.array([0.2, 0.4, 0.3]), "dlenSig": np.array([5.0, 14.0, 9.0])}  # fmt: skip
    out = event_inputs(pf, [((50.0, 0.0, 0.0), np.array([0]))], sv)
    assert out is not None
    assert out["sv_features"].shape == (1, 11, 2)  # the third vertex is outside R = 0.4
    np.testing.assert_array_equal(out["sv_mask"][0, 0], [1, 1])
    ntracks = out["sv_features"][0, SV_FEATURES.index("sv_ntracks")]
    np.testing.assert_allclose(ntracks, [(3 - 3) * 0.5, (2 - 3) * 0.5])  # by dxySig: 12, 4
    # etarel's sign is CMSSW's, +1 only for a jet at positive eta: -1 for this jet at eta 0.
    np.testing.assert_allclose(out["sv_points"][0, 0], [-0.05, -0.1], atol=1e-6)


def test_an_event_without_jets_or_candidates_sends_nothing() -> None:
    pf = _pf([(5.0, 0.0, 0.0, 1, 211)])
    assert event_inputs(pf, []) is None
    assert event_inputs(pf, [((20.0, 0.0, 0.0), np.array([], int))]) is None
