"""Jet labels from hand-built generator particles: CMS's flavour classes and their priority."""

from __future__ import annotations

import numpy as np
import pytest

from sonic.workflow.generate import HARD_PARTON, HEAVY_HADRON, SHOWER_PARTON
from sonic.workflow.jet_labels import BB, CC, PU, UDS, UNDEF, B, C, G, b_vs_light, event_truth


def _gen(rows: list[tuple[int, int, float, float, float]]) -> dict[str, np.ndarray]:
    a = np.array(rows, dtype=np.float64).reshape(-1, 5)
    return {k: a[:, i] for i, k in enumerate(("pdgId", "kind", "pt", "eta", "phi"))}


def test_each_class_and_its_priority() -> None:
    # Eight jets along phi = 0, 0.8, ..., each with its own particles nearby.
    jets = [(30.0, 0.0, 0.8 * j) for j in range(8)]
    gen = _gen([
        (511, HEAVY_HADRON, 20, 0.1, 0.0), (21, HARD_PARTON, 30, 0.0, 0.0),  # b beats the gluon
        (511, HEAVY_HADRON, 10, 0.1, 0.8), (-521, HEAVY_HADRON, 10, -0.1, 0.8),  # bb
        (421, HEAVY_HADRON, 10, 0.0, 1.6), (1, SHOWER_PARTON, 25, 0.0, 1.6),  # c
        (421, HEAVY_HADRON, 10, 0.1, 2.4), (-411, HEAVY_HADRON, 8, 0.0, 2.4),  # cc
        (2, HARD_PARTON, 25, 0.0, 3.2), (21, SHOWER_PARTON, 6, 0.1, 3.2),  # uds: the hardest
        (21, SHOWER_PARTON, 25, 0.0, 4.0), (3, SHOWER_PARTON, 6, 0.1, 4.0),  # g: the hardest
        (511, HEAVY_HADRON, 20, 1.0, 4.8),  # outside the jet at eta 0: undef
    ])  # fmt: skip
    pf_pt = np.array([10.0, 10.0, 10.0])
    not_pu = np.zeros(3, bool)
    members = [np.array([0, 1])] * 7 + [np.array([0, 1, 2])]
    is_pu = np.zeros(3, bool)
    truth = event_truth(jets[:7], members[:7], gen, pf_pt, not_pu)
    assert list(truth.label) == [B, BB, C, CC, UDS, G, UNDEF]
    assert list(truth.hadron_flavour) == [5, 5, 4, 4, 0, 0, 0]
    assert list(truth.parton_flavour) == [21, 0, 1, 0, 2, 21, 0]
    assert list(truth.n_b) == [1, 2, 0, 0, 0, 0, 0]
    # Mostly pileup by pT: pu, whatever hadrons it holds.
    is_pu[1:] = True
    pu = event_truth([jets[0]], [members[7]], gen, pf_pt, is_pu)
    assert list(pu.label) == [PU]


def test_b_parton_sets_the_parton_flavour() -> None:
    gen = _gen([(21, HARD_PARTON, 50, 0.0, 0.0), (5, SHOWER_PARTON, 6, 0.1, 0.0)])
    truth = event_truth([(40.0, 0.0, 0.0)], [np.array([0])], gen, np.array([5.0]),
                        np.zeros(1, bool))  # fmt: skip
    assert truth.parton_flavour[0] == 5 and truth.label[0] == UNDEF  # no b hadron: not b


def test_b_vs_light_discriminant() -> None:
    scores = np.zeros((2, 8))
    scores[0, [B, BB, UDS, G]] = [0.3, 0.1, 0.1, 0.1]
    scores[1, [B, UDS]] = [0.0, 1.0]
    assert b_vs_light(scores) == pytest.approx([0.4 / 0.6, 0.0])


def test_ak8_top_classes_and_qcd() -> None:
    from sonic.workflow.generate import HARD_LEPTON, TOP_QUARK
    from sonic.workflow.jet_labels import AK8, event_truth_ak8, top_vs_qcd

    # Six AK8 jets, each with its own generator particles (the last one with none).
    jets = [(500.0, 0.0, p) for p in (0.0, 1.2, 2.4, -1.2, -2.4)] + [(500.0, 2.0, 0.0)]
    gen = _gen([
        (6, TOP_QUARK, 500, 0.0, 0.0), (5, HARD_PARTON, 200, 0.1, 0.1),  # t -> b u d: bqq
        (2, HARD_PARTON, 150, -0.2, 0.1), (-1, HARD_PARTON, 120, 0.1, -0.3),
        (-6, TOP_QUARK, 500, 0.0, 1.2), (-5, HARD_PARTON, 200, 0.1, 1.2),  # tbar -> bbar c sbar
        (4, HARD_PARTON, 150, 0.2, 1.3), (-3, HARD_PARTON, 100, 0.0, 1.0),
        (6, TOP_QUARK, 500, 0.0, 2.4), (5, HARD_PARTON, 300, 0.0, 2.4),  # t -> b mu nu: bmu
        (-13, HARD_LEPTON, 100, 0.1, 2.3),
        (6, TOP_QUARK, 500, 0.0, -1.2), (-5, HARD_PARTON, 300, 0.0, -1.2),  # wrong-sign b only
        (2, HARD_PARTON, 100, 0.3, -1.2),
        (511, HEAVY_HADRON, 50, 0.0, -2.4),  # QCD with one b hadron
    ])  # fmt: skip
    members = [np.array([0])] * len(jets)
    truth = event_truth_ak8(jets, members, gen, np.array([1.0]), np.zeros(1, bool))
    expected = ["Top_bqq", "Top_bcq", "Top_bmu", "QCD_others", "QCD_b", "QCD_others"]
    assert list(truth.label) == [AK8[k] for k in expected]
    scores = np.zeros((2, len(AK8)))
    scores[0, [AK8["Top_bqq"], AK8["QCD_others"]]] = [0.6, 0.2]
    scores[1, AK8["QCD_b"]] = 1.0
    assert top_vs_qcd(scores) == pytest.approx([0.75, 0.0])
