"""MET performance as CMS measures it, on hand-built events with known answers."""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sonic.workflow.met_performance import (
    QT_BINS,
    BinResult,
    binned,
    chs_met,
    components,
    dimuon,
    paired,
    pileup_growth,
    recoil,
    seed_spread,
)


def test_recoil_of_a_perfectly_measured_event() -> None:
    """Z -> mu mu with the hadronic activity exactly balancing it: MET = 0, u = -q_T."""
    qx, qy = np.array([30.0]), np.array([40.0])
    u_par, u_perp = recoil(np.zeros(1), np.zeros(1), qx, qy)
    assert u_par[0] == pytest.approx(-50.0) and u_perp[0] == pytest.approx(0.0)
    # A recoil measured at 80%: the missing 20% shows up as MET against q_T.
    u_par, _ = recoil(-0.2 * qx, -0.2 * qy, qx, qy)
    assert -u_par[0] / 50.0 == pytest.approx(0.8)
    par, perp = components(np.array([0.0]), np.array([10.0]), np.array([10.0]), np.array([0.0]))
    assert par[0] == pytest.approx(0.0) and perp[0] == pytest.approx(10.0)


def test_response_and_corrected_resolution_per_bin() -> None:
    """A recoil with response 0.8 and 10 GeV of Gaussian spread in each direction: R = 0.8 and
    both resolutions 10 / 0.8 = 12.5 GeV, in every bin, within their bootstrap errors."""
    rng = np.random.default_rng(1)
    n = 20000
    qt = rng.uniform(0, 400, n)
    par = 0.8 * qt + rng.normal(0, 10, n)
    perp = rng.normal(0, 10, n)
    bins = binned(par, perp, qt, bootstrap=50)
    assert [(b.lo, b.hi) for b in bins] == list(itertools.pairwise(QT_BINS))
    for b in bins:
        assert b.response == pytest.approx(0.8, abs=4 * b.response_err + 1e-3)
        assert b.sigma_perp == pytest.approx(12.5, abs=4 * b.sigma_perp_err)
        assert b.sigma_par == pytest.approx(12.5, abs=4 * b.sigma_par_err)
        assert 0 < b.response_err < 0.01 and b.events > 1000


def test_paired_difference_sees_what_independent_errors_hide() -> None:
    """Two estimators of the same events, the second with 0.4 GeV more spread on top of a shared
    20 GeV: their own errors overlap, the paired difference does not; an estimator against
    itself differs by exactly nothing."""
    rng = np.random.default_rng(3)
    n = 2000
    qt = rng.uniform(50, 100, n)
    shared = rng.normal(0, 20, n)
    a = (qt + rng.normal(0, 5, n), shared)
    b = (a[0], shared + rng.normal(0, 4, n))  # sqrt(20^2 + 4^2) = 20.4
    alone = [binned(*x, qt, bins=(50.0, 100.0), bootstrap=100)[0] for x in (a, b)]
    diff = paired(a, b, qt, bins=(50.0, 100.0), bootstrap=100)[0]
    assert alone[1].sigma_perp - alone[0].sigma_perp < 2 * alone[0].sigma_perp_err  # overlap
    assert diff.difference == pytest.approx(alone[0].sigma_perp - alone[1].sigma_perp)
    assert diff.difference < -4 * diff.error < 0
    same = paired(a, a, qt, bins=(50.0, 100.0), bootstrap=20)[0]
    assert (same.difference, same.error, same.events) == (0.0, 0.0, n)


def test_a_shrinking_estimator_gains_nothing() -> None:
    """Scaling every measurement by one half halves the raw spread, but not the corrected one."""
    rng = np.random.default_rng(2)
    qt = rng.uniform(50, 100, 5000)
    par, perp = qt + rng.normal(0, 10, 5000), rng.normal(0, 10, 5000)
    full = binned(par, perp, qt, bootstrap=20)[0]
    half = binned(par / 2, perp / 2, qt, bootstrap=20)[0]
    assert half.response == pytest.approx(full.response / 2)
    assert half.sigma_perp == pytest.approx(full.sigma_perp)


def test_sparse_bins_are_left_out() -> None:
    qt = np.array([10.0, 20.0, 30.0, 40.0, 45.0, 300.0])
    assert [b.lo for b in binned(qt, np.zeros(6), qt, bootstrap=5)] == [0.0]


def test_dimuon_selection_and_chs_met() -> None:
    # Two opposite-charge muons of 45 GeV back to back in eta: m = 2 * 45 * cosh(1) ~ 139 GeV
    # is outside the window; at eta +-0.4, m = 90 * cosh(0.4) ~ 97 GeV is inside.
    def event(eta: float, charges: tuple[int, int]) -> tuple:
        pt = np.array([45.0, 45.0, 5.0])
        return (pt, np.array([eta, -eta, 0.0]), np.array([0.0, math.pi, 1.0]),
                np.array([13, -13, 211]), np.array([*charges, 1]))  # fmt: skip

    assert dimuon(*event(1.0, (-1, 1))) is None
    assert dimuon(*event(0.4, (-1, -1))) is None
    q = dimuon(*event(0.4, (-1, 1)))
    assert q is not None and np.hypot(*q) == pytest.approx(0.0, abs=1e-9)
    px, py = np.array([10.0, 5.0, 3.0]), np.array([0.0, 0.0, 4.0])
    assert chs_met(px, py, np.array([1, 1, 0]), np.array([3, 0, 0])) == (-13.0, -4.0)


def test_a_study_on_generated_events(samples: list[Path], tmp_path: Path) -> None:
    """Every estimator measured against the neutrinos of generated events, DeepMET from the
    workflow's own output: the raw PF response is near one where events are plentiful."""
    from sonic.workflow.met_performance import ESTIMATORS, study
    from sonic.workflow.report import read_outputs, recoil_figure
    from sonic.workflow.runner import JobConfig, run_files
    from tests.workflow.conftest import MODEL

    outputs = read_outputs(run_files(samples[:1], JobConfig(model=MODEL), tmp_path).outputs)
    results = study(samples[0], outputs, "znunu", bootstrap=20)
    assert set(results) == set(ESTIMATORS) - {"DeepMET (response tune)"}  # not run here
    busiest = max(results["PF (raw)"], key=lambda b: b.events)
    assert busiest.events >= 5 and 0.6 < busiest.response < 1.4
    assert all(b.sigma_perp > 0 for bins in results.values() for b in bins)
    recoil_figure(results, "smoke")  # draws without error
    # Only the Z->nunu half of the mixed file counts; an extra estimator joins the study.
    n, pt, phi = len(outputs["GenMET_pt"]), outputs["GenMET_pt"], outputs["GenMET_phi"]
    truth = np.stack([pt * np.cos(phi), pt * np.sin(phi)], axis=1)
    one_bin = study(samples[0], outputs, "znunu", bootstrap=5, bins=(0.0, math.inf),
                    extra={"truth": truth})  # fmt: skip
    assert [b.events for b in one_bin["PF (raw)"]] == [n // 2]
    assert one_bin["truth"][0].response == pytest.approx(1.0)
    assert one_bin["truth"][0].sigma_perp == pytest.approx(0.0, abs=1e-3)
    with pytest.raises(ValueError, match="process must be 'zmumu' or 'znunu'"):
        study(samples[0], outputs, "ttbar")


def test_pileup_fit_recovers_the_per_vertex_term() -> None:
    from sonic.workflow.met_performance import fit_pileup

    n_pu = np.array([0.0, 20.0, 55.0, 80.0])
    sigma = np.sqrt(12.0**2 + n_pu * 1.5**2)
    s0, s, ds0, ds = fit_pileup(n_pu, sigma, 0.01 * sigma)
    assert s0 == pytest.approx(12.0, rel=1e-6) and s == pytest.approx(1.5, rel=1e-6)
    assert 0 < ds0 < 1 and 0 < ds < 1


def test_a_high_qt_sample_fills_the_high_bins(tmp_path: Path) -> None:
    """``znunu_highpt`` is Z -> nu nu above its pT-hat cut of 160 GeV, and the study counts its
    events as Z -> nu nu: all of them land in the bins above 100 GeV."""
    import uproot

    from sonic.workflow.generate import generate_sample
    from sonic.workflow.met_performance import study

    sample = generate_sample(tmp_path / "hi.root", 8, processes=["znunu_highpt"], pileup=2,
                             pool_size=10, seed=3)  # fmt: skip
    with uproot.open(sample) as f:
        gen = f["Events"]["GenMET_pt"].array(library="np")
    assert gen.min() > 100.0
    results = study(sample, {}, "znunu_highpt", bootstrap=5, bins=(0.0, 100.0, math.inf))
    assert [b.events for b in results["PF (raw)"]] == [8]  # none below 100 GeV (left out)
    assert results["PF (raw)"][0].lo == 100.0


def test_a_mid_qt_zmumu_sample_counts_as_the_recoil(tmp_path: Path) -> None:
    """``zmumu_midpt`` (Z -> mu mu plus a jet, pT-hat > 30 GeV) is measured as the Z -> mu mu
    recoil: its events' dimuons give q_T; a process that is neither Z -> mu mu nor Z -> nu nu
    is refused."""
    from sonic.workflow.generate import generate_sample
    from sonic.workflow.met_performance import measured

    sample = generate_sample(tmp_path / "mid.root", 8, processes=["zmumu_midpt"], pileup=2,
                             pool_size=10, seed=5)  # fmt: skip
    per_event, qt = measured(sample, {}, "zmumu_midpt")
    assert len(qt) >= 5  # events whose two muons are both reconstructed (most)
    assert np.median(qt) > 25.0  # above the inclusive sample's typical q_T of a few GeV
    par, perp = per_event["PF (raw)"]
    assert len(par) == len(perp) == len(qt)
    with pytest.raises(ValueError, match="zmumu' or 'znunu'"):
        measured(sample, {}, "ttbar")


def test_independent_samples_see_the_shared_pileup_that_the_bootstrap_misses() -> None:
    """Samples whose events share a pool offset (each sample its own, spread 0.03 in response):
    one sample's bootstrap error is a few thousandths, the scatter between samples is the
    pool's 0.03, and seed_spread reports that scatter's error of the mean; without the offsets
    the error is the bootstrap's over the samples, not a scatter that came out small; a bin
    one sample left empty is left out, and one sample alone is refused."""
    rng = np.random.default_rng(5)

    def samples(pool: float, n: int) -> dict[int, dict[str, list[Any]]]:
        out = {}
        for seed in range(n):
            qt = rng.uniform(50, 100, 4000)
            par = (1 + rng.normal(0, pool)) * qt + rng.normal(0, 10, len(qt))
            out[seed] = {"est": binned(par, rng.normal(0, 10, len(qt)), qt, (0.0, 50.0, 100.0),
                                       bootstrap=50)}  # fmt: skip
        return out

    (alone,) = seed_spread(samples(0.0, 3))["est"]
    assert alone.error >= alone.bootstrap_err / math.sqrt(3)
    per_seed = samples(0.03, 12)
    spread = seed_spread(per_seed)["est"]
    assert [(b.lo, b.hi) for b in spread] == [(50.0, 100.0)]  # 0-50 is empty everywhere
    (b,) = spread
    assert b.seeds == list(range(12)) and len(b.values) == 12 and b.quantity == "response"
    assert b.bootstrap_err < 0.006
    scatter = b.error * math.sqrt(12)
    assert 0.015 < scatter < 0.05 and scatter > 4 * b.bootstrap_err
    assert b.mean == pytest.approx(np.mean(b.values))
    (width,) = seed_spread(per_seed, "sigma_perp")["est"]
    assert width.values == [x["est"][0].sigma_perp for x in per_seed.values()]
    assert 9 < width.mean < 11  # the perpendicular spread, 10 GeV
    del per_seed[3]["est"][0]
    assert seed_spread(per_seed)["est"] == []
    with pytest.raises(ValueError, match="two seeds"):
        seed_spread({1: per_seed[1]})


def test_pileup_growth_over_seeds_against_the_reference() -> None:
    """Two estimators measured at pileup 0 and 80 on three samples: one grows by 20 GeV, the
    other by 8 (0.4 of it) give or take a sample's offset; the growths, their ratio per sample
    and the means come out, and a single sample is refused."""

    def bin_(sigma: float) -> BinResult:
        return BinResult(50.0, 150.0, 1000, 80.0, 1.0, 0.01, sigma, 0.5, sigma, 0.5)

    scans = {seed: {"raw": [bin_(8.0), bin_(28.0 + d)], "puppi": [bin_(13.0), bin_(21.0 + d / 2)]}
             for seed, d in ((1, -1.0), (2, 0.0), (3, 1.0))}  # fmt: skip
    growth = pileup_growth(scans, reference="raw")
    raw, puppi = growth["raw"], growth["puppi"]
    assert raw["growth"] == [19.0, 20.0, 21.0] and raw["vs_reference"] == [1.0, 1.0, 1.0]
    assert raw["vs_reference_error"] == 0.0
    assert puppi["growth"] == [7.5, 8.0, 8.5]
    assert puppi["vs_reference_mean"] == pytest.approx(np.mean([7.5 / 19, 8 / 20, 8.5 / 21]))
    assert 0.0 < puppi["vs_reference_error"] < 0.05
    assert puppi["growth_mean"] == pytest.approx(8.0)
    # the error is at least the bootstrap's over sqrt(3): hypot(0.5, 0.5) / sqrt(3)
    assert puppi["growth_error"] >= math.hypot(0.5, 0.5) / math.sqrt(3) - 1e-12
    with pytest.raises(ValueError, match="two seeds"):
        pileup_growth({1: scans[1]}, reference="raw")
