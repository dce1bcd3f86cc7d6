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

from torch import Tensor, nn

from rodin.config import UNetConfig
from rodin.diffusion.aware_conv import unfold
from rodin.diffusion.unet import unit_rms
from rodin.errors import ConfigError


class MeanPlanes(nn.Module):
    """z (B, D) -> normalised roll-out (B, C, R, 3R): an MLP to coarse per-plane features at R/4 (at least
    4 texels), then shared convolutions that double the side to R."""

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
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
        folded = self.mlp(unit_rms(latent)).reshape(3 * b, self.width, self.coarse, self.coarse)
        return unfold(self.out(self.up(folded)))

