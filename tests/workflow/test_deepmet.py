"""DeepMET in PyTorch: starts as PF MET, trains, and exports with CMSSW's interface."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
import uproot

from sonic.workflow import deepmet
from sonic.workflow.generate import HARD_PROCESSES
from sonic.workflow.inputs import INPUT_NAMES, MAX_N_PF, OUTPUT_NAME


def test_untrained_network_is_raw_pf_met(samples: list[Path]) -> None:
    inputs, _ = deepmet.load_training_data(samples[:1])
    net = deepmet.build_network()
    with torch.no_grad():
        out = net(*(torch.from_numpy(inputs.tensors[k]) for k in INPUT_NAMES)).numpy()
    met = inputs.met(out)
    a = uproot.open(samples[0])["Events"].arrays(["RawPFMET_pt", "RawPFMET_phi"], library="np")
    expected = np.stack([a["RawPFMET_pt"] * np.cos(a["RawPFMET_phi"]),
                         a["RawPFMET_pt"] * np.sin(a["RawPFMET_phi"])], axis=1)  # fmt: skip
    np.testing.assert_allclose(met, expected, rtol=1e-3, atol=0.05)


def test_train_and_export(samples: list[Path], tmp_path: Path) -> None:
    inputs, target = deepmet.load_training_data(samples)
    seen: list[tuple[int, float, float]] = []
    net, result = deepmet.train(inputs, target, epochs=2, batch_size=8,
                                progress=lambda *a: seen.append(a))  # fmt: skip
    assert [s[0] for s in seen] == [1, 2] and len(result.val_loss) == 2
    path = deepmet.export_onnx(net, tmp_path / "model.onnx")
    sess = ort.InferenceSession(str(path))
    assert [i.name for i in sess.get_inputs()] == list(INPUT_NAMES)
    assert sess.get_inputs()[0].shape[1:] == [MAX_N_PF, 8]
    assert sess.get_inputs()[1].shape[1:] == [MAX_N_PF, 1]
    assert [o.name for o in sess.get_outputs()] == [OUTPUT_NAME]
    # The same numbers from ONNX Runtime as from PyTorch, with CMSSW's full padding.
    width = inputs.tensors["input"].shape[1]
    padded = {k: np.pad(v, ((0, 0), (0, MAX_N_PF - width), (0, 0)))
              for k, v in inputs.tensors.items()}  # fmt: skip
    got = sess.run([OUTPUT_NAME], padded)[0]
    with torch.no_grad():
        ref = net(*(torch.from_numpy(inputs.tensors[k]) for k in INPUT_NAMES)).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)


def test_response_term_balances_each_true_pt_bin() -> None:
    """The response term: zero for a perfect estimate, and for errors that cancel within a bin; the
    shortfall of a shrinking estimator; events below 50 GeV do not count."""
    gev = 1 / 50  # the network's units
    target = torch.tensor([[60.0, 0], [80, 0], [250, 0], [20, 0]]) * gev
    assert deepmet.response_term(target, target).item() == 0.0
    cancel = target * torch.tensor([[1.1], [0.9 * 80 / 80 + 0.1 * 60 / 80], [1.0], [1.0]])
    # 60 -> 66 and 80 -> 78: +6 and -2 in the same 50-100 bin leave |+4| of 410.
    np.testing.assert_allclose(deepmet.response_term(cancel, target).item(), 4 / 410, rtol=1e-5)
    shrunk = target * 0.8
    np.testing.assert_allclose(deepmet.response_term(shrunk, target).item(),
                               (0.2 * 140 + 0.2 * 250) / 410, rtol=1e-5)  # fmt: skip
    soft_only = target.clone()
    soft_only[3] *= 0.5
    assert deepmet.response_term(soft_only, target).item() == 0.0
    mse = deepmet.loss(shrunk, target)
    assert deepmet.loss(shrunk, target, "response") > mse > 0
    with pytest.raises(ValueError, match="tune must be one of"):
        deepmet.loss(shrunk, target, "tight")


def test_response_term_balances_the_recoil_against_a_dimuon() -> None:
    """With the event's dimuon added to both sides, a Z -> mu mu event (GenMET 0) counts: MET
    from muons taken at 0.96 of their pT against a recoil measured in full leaves the dimuon's
    4.8 GeV shortfall of 120; without it, or for a balanced event, the term is 0.  Recoil and
    genuine-MET events balance apart."""
    gev = 1 / 50
    q = torch.tensor([[120.0, 0]]) * gev
    genmet = torch.zeros(1, 2)
    undercounted = -(0.96 * q - q)  # -(muons + recoil), the recoil being -q
    np.testing.assert_allclose(deepmet.response_term(undercounted, genmet, q).item(), 4.8 / 120,
                               rtol=1e-5)  # fmt: skip
    assert deepmet.response_term(undercounted, genmet).item() == 0.0
    assert deepmet.response_term(genmet, genmet, q).item() == 0.0
    # A Z -> nu nu event 4.8 GeV short in the same bin does not hide the recoil's excess.
    pred = torch.cat([undercounted, q - 4.8 * gev])
    both = deepmet.response_term(pred, torch.cat([genmet, q]), torch.cat([q, genmet]))
    np.testing.assert_allclose(both.item(), 9.6 / 240, rtol=1e-5)


def test_dimuons_select_the_z_candidate_from_the_tensors() -> None:
    """The training's dimuon is the MET study's (two opposite-charge muons in the Z window),
    read back from the model tensors; other events get (0, 0)."""
    import awkward as ak

    from sonic.workflow.inputs import PF_BRANCHES, build_inputs

    events = {  # a Z -> mu mu event with a pion, same-charge muons, a single muon
        "pt": [[45.0, 50.0, 5.0], [45.0, 50.0], [45.0]],
        "eta": [[0.3, -0.4, 1.0], [0.3, -0.4], [0]],
        "phi": [[0.2, 2.9, 1.0], [0.2, 2.9], [0]], "pdgId": [[13, -13, 211], [13, 13], [13]],
        "charge": [[-1, 1, 1], [-1, -1], [-1]],
    }  # fmt: skip
    pf = {b: ak.Array(events[b]) if b in events else ak.zeros_like(ak.Array(events["pt"]))
          for b in PF_BRANCHES}  # fmt: skip
    got = deepmet.dimuons(build_inputs(pf, max_n_pf=4))
    want = [45 * np.cos(0.2) + 50 * np.cos(2.9), 45 * np.sin(0.2) + 50 * np.sin(2.9)]
    np.testing.assert_allclose(got[0], want, rtol=1e-5)
    np.testing.assert_array_equal(got[1:], 0.0)


def test_batchnorm_statistics_ignore_padding(samples: list[Path]) -> None:
    """Training-mode BatchNorm sees real candidates only: the same events padded wider leave
    the same running statistics, and in evaluation padding changes no output."""
    inputs, _ = deepmet.load_training_data(samples[:1], max_events=4)
    tensors = [torch.from_numpy(inputs.tensors[k]) for k in INPUT_NAMES]
    wider = [torch.nn.functional.pad(t, (0, 0, 0, 300)) for t in tensors]
    stats = []
    for batch in (tensors, wider):
        torch.manual_seed(0)
        net = deepmet.build_network()
        net.train()
        net(*batch)
        stats.append([bn.running_mean.clone() for bn in net.norm])
    for a, b in zip(*stats, strict=True):
        torch.testing.assert_close(a, b)
    net.eval()
    with torch.no_grad():
        torch.testing.assert_close(net(*tensors), net(*wider))


def test_response_term_balances_each_process_apart() -> None:
    """A ttbar event 5% over and a Z -> nu nu event 5% under in the same true-pT bin cancel in
    one sum; with their processes as groups each counts, and a group that balances adds 0."""
    gev = 1 / 50
    target = torch.tensor([[80.0, 0], [80, 0]]) * gev
    pred = target * torch.tensor([[1.05], [0.95]])
    assert deepmet.response_term(pred, target).item() == pytest.approx(0.0, abs=1e-6)
    ttbar, znunu = (HARD_PROCESSES.index(p) for p in ("ttbar", "znunu"))
    groups = torch.tensor([ttbar, znunu])
    np.testing.assert_allclose(deepmet.response_term(pred, target, groups=groups).item(),
                               8 / 160, rtol=1e-5)  # fmt: skip
    assert deepmet.response_term(target, target, groups=groups).item() == 0.0


def test_process_ids_are_read_from_the_samples(samples: list[Path]) -> None:
    ids = deepmet.process_ids(samples)
    assert len(ids) == sum(len(deepmet.load_training_data([s])[1]) for s in samples)
    assert set(ids.tolist()) <= set(range(len(HARD_PROCESSES))) and len(set(ids.tolist())) > 1


def test_the_cli_trains_the_response_tune(samples: list[Path], tmp_path: Path) -> None:
    """``sonic workflow train --tune response`` reads the samples' processes, takes the batch
    size and learning rate it is given, and writes an ONNX model with CMSSW's interface."""
    out = tmp_path / "model.onnx"
    cmd = [sys.executable, "-m", "sonic.cli", "workflow", "train", *map(str, samples),
           "--tune", "response", "--epochs", "1", "--batch-size", "32", "--lr", "2e-3",
           "--balance-epochs", "1", "--out", str(out)]  # fmt: skip
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert f"wrote {out}" in run.stdout
    assert ("batches of 32, learning rate 0.002, then 1 more epochs in batches of "
            f"{deepmet.BALANCE_BATCH_SIZE}") in run.stdout  # fmt: skip
    assert "epoch 2:" in run.stdout + run.stderr  # the balancing epoch, numbered on
    names = [i.name for i in ort.InferenceSession(str(out)).get_inputs()]
    assert names == list(INPUT_NAMES)


def test_the_response_tune_ends_balancing_in_large_batches(
        samples: list[Path], monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """The response tune's last epochs take batches of BALANCE_BATCH_SIZE (their per-bin sums
    then hold enough events to balance): one optimizer step an epoch on these 39 training
    events, against two in batches of 32; the resolution tune has no such epochs."""
    inputs, target = deepmet.load_training_data(samples)
    steps: list[int] = []
    adam_step = torch.optim.Adam.step

    def counted(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        steps.append(1)
        return adam_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", counted)
    seen: list[int] = []
    _, result = deepmet.train(inputs, target, tune="response", epochs=1, batch_size=32,
                              balance_epochs=2, progress=lambda e, t, v: seen.append(e))
    assert len(steps) == 2 + 2 * 1 and seen == [1, 2, 3]
    assert result.epochs == 3 and len(result.val_loss) == 3
    steps.clear()
    _, result = deepmet.train(inputs, target, tune="resolution", epochs=1, batch_size=32,
                              balance_epochs=2)  # fmt: skip
    assert len(steps) == 2 and result.epochs == 1
