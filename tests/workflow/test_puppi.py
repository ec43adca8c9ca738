"""PUPPI as CMS runs it, on hand-built events whose weights can be worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import chi2

from sonic.workflow import puppi


def _event(rows: list[tuple[float, float, float, int, int, float]]) -> dict[str, np.ndarray]:
    """(pt, eta, phi, charge, fromPV, dz) rows as the columns puppi_weights takes."""
    a = np.array(rows, dtype=float)
    return {"pt": a[:, 0], "eta": a[:, 1], "phi": a[:, 2], "charge": a[:, 3].astype(int),
            "from_pv": a[:, 4].astype(int), "dz": a[:, 5]}  # fmt: skip


def _weights(rows: list, n_pv: int = 1) -> np.ndarray:
    return puppi.puppi_weights(**_event(rows), n_pv=n_pv)


def _pileup_carpet(n: int = 60, seed: int = 0) -> list:
    """Charged pileup spread over the central region, far from the test particles (phi < 0)."""
    rng = np.random.default_rng(seed)
    return [
        (rng.uniform(0.5, 2), rng.uniform(-1.9, 1.9), rng.uniform(-3.0, -0.5), 1, 0, 2.0)
        for _ in range(n)
    ]


def test_charged_weights_follow_the_vertex_association() -> None:
    w = _weights([(5, 0, 1, 1, 3, 0.0), (5, 0, 2, 1, 0, 0.0), (5, 0, 2.5, -1, 2, 0.1),
                  (5, 0, 3, -1, 1, 0.5)])  # fmt: skip
    assert w.tolist() == [1.0, 0.0, 1.0, 0.0]  # fromPV 1-2 count as PV only with |dz| < 0.3


def test_a_neutral_next_to_the_pv_jet_is_kept_and_one_among_pileup_is_not() -> None:
    pv_jet = [(30, 0.0, 1.0, 1, 3, 0.0), (20, 0.05, 1.05, -1, 3, 0.0)]
    neutrals = [(10, 0.02, 1.02, 0, 3, 0.0), (10, 0.5, -1.5, 0, 3, 0.0)]
    w = _weights(pv_jet + neutrals + _pileup_carpet())
    assert w[2] == pytest.approx(1.0, abs=1e-6)  # alpha far above the pileup's
    assert w[3] == 0.0  # no PV track within 0.4: alpha = -inf


def test_no_charged_pileup_keeps_every_neutral_with_a_pv_neighbour() -> None:
    w = _weights([(30, 0.0, 1.0, 1, 3, 0.0), (3, 0.2, 1.1, 0, 3, 0.0), (3, 1.5, 2.5, 0, 3, 0.0)])
    assert w.tolist() == [1.0, 1.0, 0.0]


def test_min_neutral_pt_grows_with_the_number_of_vertices() -> None:
    rows = [(30, 0.0, 1.0, 1, 3, 0.0), (0.5, 0.2, 1.1, 0, 3, 0.0)]
    assert _weights(rows, n_pv=1)[1] == 1.0  # 0.5 > 0.2 + 0.015
    assert _weights(rows, n_pv=40)[1] == 0.0  # 0.5 < 0.2 + 0.6


def test_neutrals_above_pt_max_keep_weight_one() -> None:
    w = _weights([(250, 0.5, -1.5, 0, 3, 0.0), (150, 0.5, 1.5, 0, 3, 0.0), *_pileup_carpet()])
    assert w[:2].tolist() == [1.0, 0.0]  # both isolated; only the one above 200 GeV is kept


def test_forward_neutrals_use_all_neighbours_and_the_scaled_central_reference() -> None:
    """A forward neutral in a dense forward jet (neutrals only) passes; an isolated one fails,
    and neither needs a track."""
    jet = [(40, 3.5, 1.0, 0, 3, 0.0), (30, 3.55, 1.05, 0, 3, 0.0), (25, 3.45, 0.95, 0, 3, 0.0)]
    lone = [(5, 4.0, 2.5, 0, 3, 0.0)]
    w = _weights(jet + lone + _pileup_carpet())
    assert (w[:3] > 0.99).all() and w[3] == 0.0


def test_pileup_shape_scales_and_corrects_for_low_pileup() -> None:
    pu, pv = np.array([1.0, 2.0, 3.0]), np.array([0.0, 0.0, 0.0, 0.0])
    region = puppi.REGIONS[1]  # 2.5 < |eta| < 3: MedEtaSF 0.9, RMSEtaSF 1.2
    shape = puppi.pileup_shape(pu, pv, region)
    rms = math.sqrt(2 / 3) * 1.2
    adjust = 4 / (4 + 0.5 * 3)  # four PV alphas below the median, against half of three
    assert shape.rms == pytest.approx(rms)
    assert shape.median == pytest.approx(2 * 0.9 - math.sqrt(chi2.ppf(adjust, 1)) * rms)
    # No PV alpha below the median: no correction.
    assert puppi.pileup_shape(pu, pv + 10, puppi.REGIONS[0]).median == pytest.approx(2.0)
    assert puppi.pileup_shape(np.array([-np.inf]), pv, region) is None


def test_neutral_weight_is_the_chi2_probability_above_the_median() -> None:
    shape = puppi.PileupShape(median=2.0, rms=0.5)
    w = puppi.neutral_weight(np.array([1.0, 2.0, 2.5, 3.0, -np.inf]), shape)
    assert w.tolist() == pytest.approx([0.0, 0.0, chi2.cdf(1.0, 1), chi2.cdf(4.0, 1), 0.0])
