"""Secondary vertices of the emulation, from hand-built decays, and the generator's truth."""

from __future__ import annotations

from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import uproot

from sonic.workflow import vertexing
from sonic.workflow.detector import Particles
from sonic.workflow.generate import HEAVY_HADRON, _heavy_flavour
from sonic.workflow.vertexing import K0S_MASS, secondary_vertices


def _decay(momenta: list[tuple[float, float, float]], at: tuple[float, float, float]) -> Particles:
    n = len(momenta)
    p = np.array(momenta, dtype=np.float64)
    return Particles(np.full(n, 211, np.int32), np.ones(n), p[:, 0], p[:, 1], p[:, 2],
                     np.full(n, at[0]), np.full(n, at[1]), np.full(n, at[2]))  # fmt: skip


@pytest.fixture
def always(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every track and vertex found, so that the test sees the rules, not the dice."""
    monkeypatch.setattr(vertexing, "TRACK_EFFICIENCY", 1.0)
    monkeypatch.setattr(vertexing, "VERTEX_EFFICIENCY", 1.0)


def test_a_displaced_three_track_decay_is_one_vertex(always: None) -> None:
    decay = _decay([(10.0, 1.0, 2.0), (8.0, -0.5, 1.0), (5.0, 0.5, 0.0)], (0.3, 0.4, 0.1))
    sv = secondary_vertices(decay, np.random.default_rng(0))
    assert list(sv["ntracks"]) == [3]
    assert sv["pt"][0] == pytest.approx(np.hypot(23.0, 1.0), rel=0.03)
    assert sv["dxy"][0] == pytest.approx(0.5, abs=0.05)  # 100 um smearing
    assert sv["dlen"][0] >= sv["dxy"][0] and sv["dxySig"][0] > 20
    assert 1.0 < sv["mass"][0] < 10.0


def test_prompt_soft_and_k0s_like_pairs_are_no_vertex(always: None) -> None:
    rng = np.random.default_rng(1)
    prompt = _decay([(10.0, 1.0, 2.0), (8.0, -0.5, 1.0)], (0.001, 0.001, 0.0))
    assert len(secondary_vertices(prompt, rng)["pt"]) == 0
    soft = _decay([(0.5, 0.1, 0.0), (8.0, -0.5, 1.0)], (0.3, 0.4, 0.1))  # one track < 0.8 GeV
    assert len(secondary_vertices(soft, rng)["pt"]) == 0
    # Two pions back to back in the K0S frame, boosted along x: the pair's mass is the K0S's.
    p_star = np.sqrt(K0S_MASS**2 / 4 - 0.13957**2)
    k0s = _decay([(5.0, p_star, 0.0), (5.0, -p_star, 0.0)], (1.0, 0.5, 0.2))
    assert len(secondary_vertices(k0s, rng)["pt"]) == 0


@pytest.mark.parametrize(("pdg", "flavour"), [(511, 5), (-521, 5), (5122, 5), (553, 5), (421, 4),
                                              (-4122, 4), (443, 4), (211, 0), (2212, 0), (21, 0),
                                              (5, 0)])  # fmt: skip
def test_hadron_flavour_from_the_pdg_id(pdg: int, flavour: int) -> None:
    assert _heavy_flavour(pdg) == flavour


def test_generated_ttbar_has_b_hadrons_and_vertices(samples: list[Path]) -> None:
    with uproot.open(samples[0]) as f:
        a = f["Events"].arrays(["GenProcess_id", "GenPart_pdgId", "GenPart_kind", "SV_dxy",
                                "SV_ntracks"], library="ak")  # fmt: skip
    ttbar = a[a.GenProcess_id == 0]
    hadrons = ttbar.GenPart_pdgId[ttbar.GenPart_kind == HEAVY_HADRON]
    with_b = ak.any(abs(hadrons) // 100 % 10 == 5, axis=1) | ak.any(abs(hadrons) // 1000 == 5,
                                                                     axis=1)  # fmt: skip
    assert ak.mean(with_b) > 0.9  # two b quarks per event
    assert ak.sum(ak.num(ttbar.SV_dxy)) > len(ttbar)  # more than one vertex per event
    assert ak.all(ak.flatten(a.SV_dxy) > 0) and ak.all(ak.flatten(a.SV_ntracks) >= 2)
