"""The MLP shared by all subjects: summed tri-plane features -> density and colour."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from rodin.config import DecoderConfig


@dataclass
class DecodedPoints:
    density: Tensor          # (N, 1), >= 0
    rgb: Tensor              # (N, 3), in [0, 1]
    extra: Tensor | None     # (N, E) feature channels for the refiner, or None


class _TruncatedExp(torch.autograd.Function):
    """exp with its gradient clamped, as in instant-NGP: densities span orders of magnitude
    (empty space to opaque skin in one sample step) without exploding gradients."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        ctx.save_for_backward(x)
        return torch.exp(x.clamp(max=15.0))

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (x,) = ctx.saved_tensors
        return grad * torch.exp(x.clamp(min=-15.0, max=15.0))


def truncated_exp(x: Tensor) -> Tensor:
    return _TruncatedExp.apply(x)


class TriplaneDecoder(nn.Module):
    """Features pass through a Fourier embedding (as in the paper), a small MLP gives density and
    a hidden code; colour comes from that code and, when view-dependent, the view direction."""

    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        self.config = config
        c = config.features
        octaves = config.fourier_octaves
        in_dim = c * (1 + 2 * octaves)
        self.register_buffer("frequencies", (2.0 ** torch.arange(octaves)) * math.pi, persistent=False)
        layers: list[nn.Module] = []
        width = in_dim
        for _ in range(config.layers):
            layers += [nn.Linear(width, config.hidden), nn.Softplus(beta=1.0)]
            width = config.hidden
        self.trunk = nn.Sequential(*layers)
        self.density_head = nn.Linear(config.hidden, 1)
        dir_dim = 3 if config.view_dependent else 0
        self.colour_head = nn.Sequential(
            nn.Linear(config.hidden + dir_dim, config.hidden // 2), nn.Softplus(beta=1.0),
            nn.Linear(config.hidden // 2, 3 + config.extra_features),
        )
        nn.init.constant_(self.density_head.bias, config.density_bias)

    def embed(self, features: Tensor) -> Tensor:
        if self.config.fourier_octaves == 0:
            return features
        angles = features[..., None] * self.frequencies          # (N, C, octaves)
        return torch.cat([features, angles.sin().flatten(1), angles.cos().flatten(1)], dim=-1)

    def density(self, features: Tensor) -> Tensor:
        """Density alone: what shape regularisers need, without the colour head or view directions."""
        return truncated_exp(self.density_head(self.trunk(self.embed(features)))).squeeze(-1)

    def forward(self, features: Tensor, directions: Tensor | None = None) -> DecodedPoints:
        hidden = self.trunk(self.embed(features))
        density = truncated_exp(self.density_head(hidden))
        if self.config.view_dependent:
            if directions is None:
                raise ValueError("this decoder is view-dependent: pass the view directions")
            hidden = torch.cat([hidden, directions], dim=-1)
        out = self.colour_head(hidden)
        rgb = torch.sigmoid(out[:, :3]) * (1 + 2e-3) - 1e-3       # reachable 0 and 1 (as in EG3D)
        extra = out[:, 3:] if self.config.extra_features else None
        return DecodedPoints(density=density, rgb=rgb, extra=extra)
