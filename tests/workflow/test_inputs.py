"""DeepMET inputs against hand-computed events: order, the 4500 cap, padding, embedding maps."""

from __future__ import annotations

import math

import awkward as ak
import numpy as np
import pytest

from sonic.workflow.inputs import (
    CHARGE_INDEX,
    MAX_N_PF,
    PDGID_INDEX,
    build_inputs,
    scale_and_rm_outlier,
)


def _pf(events: list[list[dict[str, float]]]) -> dict[str, ak.Array]:
    fields = ("pt", "eta", "phi", "mass", "d0", "dz", "puppiWeight", "pdgId", "charge", "fromPV")
    return {f: ak.Array([[c[f] for c in ev] for ev in events]) for f in fields}


def _cand(pt: float, phi: float, pdg: int, charge: int, from_pv: int = 3, **kw: float) -> dict:
    return {"pt": pt, "eta": kw.get("eta", 0.5), "phi": phi, "mass": kw.get("mass", 0.14),
            "d0": kw.get("d0", 0.01), "dz": kw.get("dz", -0.02), "puppiWeight": kw.get("w", 1.0),
            "pdgId": pdg, "charge": charge, "fromPV": from_pv}  # fmt: skip


def test_features_in_cmssw_order_and_collection_order() -> None:
    ev = [_cand(100.0, 0.0, 211, 1, d0=0.1, dz=0.2, eta=1.5, mass=0.13957, w=0.75),
          _cand(50.0, math.pi / 2, 22, 0, 2, mass=0.0)]  # fmt: skip
    inp = build_inputs(_pf([ev]))
    x = inp.tensors["input"][0]
    # dxy, dz, eta, mass, pt/50, puppiWeight, px/50, py/50 -- in the file's order.
    np.testing.assert_allclose(x[0], [0.1, 0.2, 1.5, 0.13957, 2.0, 0.75, 2.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(x[1], [0.01, -0.02, 0.5, 0.0, 1.0, 1.0, 0.0, 1.0], atol=1e-6)
    assert inp.tensors["input_cat0"][0, :2, 0].tolist() == [2, 1]  # charge +1 -> 2, 0 -> 1
    assert inp.tensors["input_cat1"][0, :2, 0].tolist() == [10, 8]  # 211 -> 10, 22 -> 8
    assert inp.tensors["input_cat2"][0, :2, 0].tolist() == [3, 2]
    assert not inp.tensors["input"][0, 2:].any()  # zero padding after the last candidate
    assert inp.n_candidates.tolist() == [2]


@pytest.mark.parametrize(("pdg", "charge"), [(-211, -1), (-13, 1), (-11, 1), (0, 0), (1, 0),
                                             (2, 0), (11, -1), (13, -1), (22, 0), (130, 0),
                                             (211, 1)])  # fmt: skip
def test_every_embedding_value_maps_as_deepmethelp(pdg: int, charge: int) -> None:
    inp = build_inputs(_pf([[_cand(10.0, 0.3, pdg, charge)]]))
    assert inp.tensors["input_cat1"][0, 0, 0] == PDGID_INDEX[pdg]
    assert inp.tensors["input_cat0"][0, 0, 0] == CHARGE_INDEX[charge]


def test_cap_keeps_the_first_4500_and_pads_short_events() -> None:
    n = MAX_N_PF + 7
    long_event = [_cand(float(i + 1), 0.0, 211, 1) for i in range(n)]
    short_event = [_cand(5.0, 0.0, 130, 0)]
    inp = build_inputs(_pf([long_event, short_event]))
    x = inp.tensors["input"]
    assert x.shape == (2, MAX_N_PF, 8)
    assert inp.n_candidates.tolist() == [MAX_N_PF, 1]
    # The first 4500 in collection order, not the hardest: pt/50 of the last kept is 4500/50.
    assert x[0, -1, 4] == pytest.approx(MAX_N_PF / 50)
    assert x[1, 0, 4] == pytest.approx(0.1) and not x[1, 1:].any()


def test_smaller_cap_for_other_producers() -> None:
    inp = build_inputs(_pf([[_cand(1.0, 0, 211, 1)] * 5]), max_n_pf=3)
    assert inp.tensors["input"].shape == (1, 3, 8)


def test_outliers_scaled_then_zeroed() -> None:
    out = scale_and_rm_outlier(np.array([1e8, -1e8, np.nan, 100.0]), 1 / 50)
    assert out.tolist() == [0.0, 0.0, 0.0, 2.0]  # 1e8/50 = 2e6 > 1e6 -> 0
    assert out.dtype == np.float32


def test_ignore_leptons_removes_them_and_subtracts_their_momentum() -> None:
    ev = [_cand(40.0, 0.0, 13, -1), _cand(10.0, math.pi / 2, 211, 1), _cand(30.0, math.pi, -11, 1)]
    inp = build_inputs(_pf([ev]), ignore_leptons=True)
    assert inp.n_candidates.tolist() == [1]
    assert inp.tensors["input_cat1"][0, 0, 0] == PDGID_INDEX[211]
    assert inp.lepton_px[0] == pytest.approx(10.0)
    assert inp.lepton_py[0] == pytest.approx(0, abs=1e-5)
    met = inp.met(np.array([[1.0, 2.0]], np.float32))
    np.testing.assert_allclose(met, [[50.0 - 10.0, 100.0]], atol=1e-4)


def test_unknown_pdgid_is_an_error_naming_event_and_value() -> None:
    events = [[_cand(1.0, 0, 211, 1)], [_cand(1.0, 0, 321, 1)]]
    with pytest.raises(ValueError, match=r"event 1: pdgId 321 has no DeepMET embedding"):
        build_inputs(_pf(events))


def test_missing_branch_is_named() -> None:
    pf = _pf([[_cand(1.0, 0, 211, 1)]])
    del pf["fromPV"]
    with pytest.raises(KeyError, match="fromPV"):
        build_inputs(pf)
