"""ParticleNet-style EdgeConv jet tagger with the ParticleNetSonicJetTagsProducer interface.

Inputs (batch = jets; the particle and vertex counts vary per event, as the
producer sets them with ``setShape``): ``pf_points`` [2, P], ``pf_features``
[25, P], ``pf_mask`` [1, P], ``sv_points`` [2, S], ``sv_features`` [11, S],
``sv_mask`` [1, S]; output ``softmax`` [17] class scores.

The network: per-point linear embeddings of particles and vertices into one
point cloud (padded with K + 1 masked points, so any size works), one
EdgeConv block (k nearest neighbours in (eta, phi), edge
features [x_i, x_j - x_i], a shared MLP, mean over neighbours, residual),
masked global average pooling, and a dense classifier.  The example model
is untrained (fixed seed); :mod:`sonic.workflow.particlenet` trains the same
network with CMS's AK4 interface.  Building it needs PyTorch (the ``torch``
extra); serving the ONNX file does not.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

N_CLASSES = 17
PF_FEATURES = 25
SV_FEATURES = 11
K = 7
INPUT_NAMES = ["pf_points", "pf_features", "pf_mask", "sv_points", "sv_features", "sv_mask"]


def network(n_pf_features: int = PF_FEATURES, n_sv_features: int = SV_FEATURES,
            n_classes: int = N_CLASSES, seed: int = 0) -> Any:
    """The EdgeConv tagger for the given feature and class counts (fresh weights from ``seed``);
    its ``logits`` method is what training optimises, ``forward`` the softmax CMSSW reads."""
    try:
        import torch
        from torch import nn
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError(
            "building ParticleNet needs PyTorch: pip install 'sonic-inference[torch]' "
            "(torch==2.13.0)"
        ) from err

    class EdgeConvTagger(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.pf_embed = nn.Conv1d(n_pf_features, 32, 1)
            self.sv_embed = nn.Conv1d(n_sv_features, 32, 1)
            self.edge_mlp = nn.Sequential(
                nn.Conv2d(64, 64, 1), nn.ReLU(), nn.Conv2d(64, 32, 1), nn.ReLU()
            )
            self.head = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, n_classes))

        def logits(self, pf_points, pf_features, pf_mask, sv_points, sv_features, sv_mask):
            points = torch.cat([pf_points, sv_points], dim=2)  # [N, 2, M]
            mask = torch.cat([pf_mask, sv_mask], dim=2)  # [N, 1, M]
            x = torch.cat([self.pf_embed(pf_features), self.sv_embed(sv_features)], dim=2)
            x = x * mask
            # K + 1 masked padding points, so that even a tiny cloud has K neighbours.
            # new_zeros/arange on the inputs' device: the same module runs on a GPU.
            n = x.shape[0]
            points = torch.cat([points, points.new_zeros(n, 2, K + 1)], dim=2)
            mask = torch.cat([mask, mask.new_zeros(n, 1, K + 1)], dim=2)
            x = torch.cat([x, x.new_zeros(n, x.shape[1], K + 1)], dim=2)
            # Masked points are pushed far away so that they are nobody's neighbour.
            shifted = points + (1.0 - mask) * 1e5
            pts = shifted.transpose(1, 2)  # [N, M, 2]
            dist = torch.cdist(pts, pts)  # [N, M, M]
            idx = dist.topk(K + 1, dim=-1, largest=False).indices[:, :, 1:]  # [N, M, K]
            c, m = x.shape[1], x.shape[2]
            xt = x.transpose(1, 2)  # [N, M, C]
            batch = torch.arange(n, device=x.device).view(n, 1, 1).expand(n, m, K)
            neighbours = xt[batch, idx]  # [N, M, K, C]
            centre = xt.unsqueeze(2).expand(n, m, K, c)
            edges = torch.cat([centre, neighbours - centre], dim=3).permute(0, 3, 1, 2)
            y = self.edge_mlp(edges).mean(dim=3) + x  # [N, 32, M]
            y = y * mask
            pooled = y.sum(dim=2) / mask.sum(dim=2).clamp(min=1.0)
            return self.head(pooled)

        def forward(self, *inputs):
            return torch.softmax(self.logits(*inputs), dim=1)

    torch.manual_seed(seed)
    return EdgeConvTagger().eval()


def export_onnx(model: Any, path: Path, n_pf: int = 50, n_sv: int = 5) -> Path:
    """Write ``model`` as ONNX with CMSSW's names and dynamic jets, particles and vertices."""
    import torch

    model.eval()
    n, n_pf_features = 3, model.pf_embed.in_channels
    n_sv_features = model.sv_embed.in_channels
    example = (
        torch.randn(n, 2, n_pf), torch.randn(n, n_pf_features, n_pf), torch.ones(n, 1, n_pf),
        torch.randn(n, 2, n_sv), torch.randn(n, n_sv_features, n_sv), torch.ones(n, 1, n_sv),
    )  # fmt: skip
    axes = {"pf_points": {0: "jets", 2: "n_pf"}, "pf_features": {0: "jets", 2: "n_pf"},
            "pf_mask": {0: "jets", 2: "n_pf"}, "sv_points": {0: "jets", 2: "n_sv"},
            "sv_features": {0: "jets", 2: "n_sv"}, "sv_mask": {0: "jets", 2: "n_sv"},
            "softmax": {0: "jets"}}  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "You are using the legacy", DeprecationWarning)
        # The neighbour gather's indices come from topk, never negative.
        warnings.filterwarnings("ignore", "Exporting aten::index operator", UserWarning)
        torch.onnx.export(
            model, example, str(path), input_names=INPUT_NAMES, output_names=["softmax"],
            dynamic_axes=axes, opset_version=17, dynamo=False,
        )  # fmt: skip
    return path


def export_particlenet(path: Path, n_pf: int = 50, n_sv: int = 5) -> None:
    """Write the untrained example model (25 particle and 11 vertex features, 17 classes)."""
    export_onnx(network(), path, n_pf=n_pf, n_sv=n_sv)
