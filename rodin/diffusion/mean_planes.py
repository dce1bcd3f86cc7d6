"""What z alone says about a subject's tri-plane: a regression of the normalised roll-out from z.

The base UNet, conditioned on z only through a scale-shift of its blocks, did not learn to write a
subject's attributes at the noisiest steps, where its input holds nothing of the subject (BENCHMARKS.md,
"Where the gap is"). This head is trained directly, with its own MSE against the clean planes, so the
conditional mean of the planes given z is learnt as plain supervised regression. The UNet reads the
head's roll-out as extra input channels and, when it predicts the clean sample, adds its output to it:
the diffusion only has to draw what the mean leaves undecided (detail, the fit's own noise).

z is brought to unit RMS per component first, so a semantic z and a whitened PCA z read alike; the null
z (zeros, dropped for guidance) stays zero and maps to the biases, so the head's unconditional output
is the mean over the training subjects, as guidance wants.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from rodin.config import UNetConfig
from rodin.diffusion.aware_conv import unfold
from rodin.diffusion.unet import unit_rms
from rodin.errors import ConfigError

MEAN_HEADS = ("mlp", "linear")


class MeanPlanes(nn.Module):
    """z (B, D) -> normalised roll-out (B, C, R, 3R).

    "mlp": an MLP to coarse per-plane features at R/4 (at least 4 texels), then shared convolutions that
    double the side to R. "linear": one affine map to every texel, whose bias is the training planes' mean
    (the null z's output) and whose weights come from `fit_ridge`; on held-out subjects it says more of the
    planes than the MLP trained with the UNet (BENCHMARKS.md, "What z can say of the planes").
    """

    def __init__(self, config: UNetConfig, kind: str = "mlp") -> None:
        super().__init__()
        if kind not in MEAN_HEADS:
            raise ConfigError(f"BaseModelConfig.mean_head must be one of {', '.join(MEAN_HEADS)}, got {kind!r}")
        self.kind = kind
        self.shape = (config.channels, config.resolution, 3 * config.resolution)
        if kind == "linear":
            self.linear = nn.Linear(config.latent_dim, math.prod(self.shape))
            return
        width = config.width
        self.coarse = max(4, config.resolution // 4)
        doublings = (config.resolution // self.coarse).bit_length() - 1
        if self.coarse << doublings != config.resolution:
            raise ConfigError(f"the mean-planes head needs a plane side of 4 times a power of two, "
                              f"got {config.resolution}")
        self.width = width
        self.mlp = nn.Sequential(nn.Linear(config.latent_dim, 4 * width), nn.SiLU(),
                                 nn.Linear(4 * width, 3 * width * self.coarse ** 2))
        ups = []
        side = self.coarse
        while side < config.resolution:
            ups += [nn.GroupNorm(config.groups, width), nn.SiLU(), nn.Upsample(scale_factor=2.0, mode="nearest"),
                    nn.Conv2d(width, width, 3, padding=1)]
            side *= 2
        self.up = nn.Sequential(*ups)
        self.out = nn.Sequential(nn.GroupNorm(config.groups, width), nn.SiLU(),
                                 nn.Conv2d(width, config.channels, 3, padding=1))

    def forward(self, latent: Tensor) -> Tensor:
        b = latent.shape[0]
        if self.kind == "linear":
            return self.linear(unit_rms(latent)).reshape(b, *self.shape)
        folded = self.mlp(unit_rms(latent)).reshape(3 * b, self.width, self.coarse, self.coarse)
        return unfold(self.out(self.up(folded)))


class RidgeSums:
    """What a ridge regression of the roll-outs on z needs, summed a chunk of subjects at a time (so that a
    store of any size streams through it): X'X and X'Y of z (unit RMS, as the head reads it) against the
    roll-outs minus their mean, for the subjects fitted on and, apart, for every `every`-th subject, which
    choose the penalty."""

    def __init__(self, mean: Tensor, *, every: int = 10) -> None:
        self.mean = mean.flatten().double()
        self.every, self.seen = every, 0
        self.sums: dict[str, list] = {"fit": [0, 0, 0], "check": [0, 0, 0]}     # X'X, X'Y, sum of Y^2

    def add(self, latent: Tensor, rolled: Tensor, *, check: Tensor | None = None) -> None:
        """`check` (B,) bool marks the rows that choose the penalty instead of every `every`-th one: rows
        that share a subject (several captions of one) must fall on the same side."""
        x = unit_rms(latent).double()
        y = rolled.flatten(1).double() - self.mean
        index = torch.arange(self.seen, self.seen + len(x))
        self.seen += len(x)
        if check is None:
            check = index % self.every == 0
        for name, rows in (("check", check), ("fit", ~check)):
            xs, ys = x[rows], y[rows]
            part = self.sums[name]
            part[0] = part[0] + xs.T @ xs
            part[1] = part[1] + xs.T @ ys
            part[2] = part[2] + ys.pow(2).sum()

    def solve(self, penalties: tuple[float, ...] = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0)) -> tuple[Tensor, float]:
        """The weights (D, P) for all subjects, with the penalty that predicts the held-apart ones best."""
        (xx, xy, _), (cxx, cxy, cyy) = self.sums["fit"], self.sums["check"]
        eye = torch.eye(xx.shape[0], dtype=xx.dtype)

        def check_error(lam: float) -> float:
            w = torch.linalg.solve(xx + lam * eye, xy)
            return (cyy - 2 * (w * cxy).sum() + (w * (cxx @ w)).sum()).item()

        best = min(penalties, key=check_error)
        return torch.linalg.solve(xx + cxx + best * eye, xy + cxy), best


@torch.no_grad()
def fit_ridge(head: MeanPlanes, sums: RidgeSums, **kw) -> float:
    """Set a linear head to the ridge regression in `sums`; returns the penalty chosen."""
    if head.kind != "linear":
        raise ValueError("only a linear mean-planes head is fitted in closed form")
    weights, penalty = sums.solve(**kw)
    head.linear.weight.copy_(weights.T.to(head.linear.weight.dtype))
    head.linear.bias.copy_(sums.mean.to(head.linear.bias.dtype))
    return penalty
