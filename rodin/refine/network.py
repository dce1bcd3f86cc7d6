"""Stage 4: the convolutional refiner, a 2D image-to-image network (DESIGN.md, "hierarchical synthesis").

It reads the volume render at the render resolution (RGB, plus the decoder's extra feature channels
when it has them) and writes RGB `scale` times larger. The network predicts a correction to the
bicubic enlargement of the render's RGB, and starts as exactly that enlargement (last layer zero):
at worst it is plain upsampling, and everything it learns is detail.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from rodin.config import RefinerConfig
from rodin.errors import ConfigError

KIND = "refiner"


def check_refiner_config(config: RefinerConfig) -> None:
    if config.scale < 2 or config.scale & (config.scale - 1):
        raise ConfigError(f"RefinerConfig.scale must be a power of 2 (2, 4, 8, …), got {config.scale}")
    if config.in_channels < 3:
        raise ConfigError(f"RefinerConfig.in_channels must be at least 3 (RGB), got {config.in_channels}")
    if config.width < 1 or config.blocks < 0:
        raise ConfigError("RefinerConfig.width must be positive and blocks not negative")


class Residual(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.SiLU(),
                                  nn.Conv2d(width, width, 3, padding=1))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class Refiner(nn.Module):
    """forward(render (B, in_channels, h, w)) -> RGB (B, 3, scale*h, scale*w), not clamped (see `refine`)."""

    def __init__(self, config: RefinerConfig) -> None:
        super().__init__()
        check_refiner_config(config)
        self.config = config
        w = config.width
        self.head = nn.Sequential(nn.Conv2d(config.in_channels, w, 3, padding=1), nn.SiLU())
        self.body = nn.Sequential(*(Residual(w) for _ in range(config.blocks)))
        ups: list[nn.Module] = []
        for _ in range(config.scale.bit_length() - 1):      # one pixel shuffle per doubling
            ups += [nn.Conv2d(w, 4 * w, 3, padding=1), nn.PixelShuffle(2), nn.SiLU()]
        self.up = nn.Sequential(*ups)
        self.tail = nn.Conv2d(w, 3, 3, padding=1)
        nn.init.zeros_(self.tail.weight)
        nn.init.zeros_(self.tail.bias)

    def enlarge(self, render: Tensor) -> Tensor:
        """The baseline the network corrects: bicubic enlargement of the render's RGB."""
        return F.interpolate(render[:, :3], scale_factor=self.config.scale, mode="bicubic", align_corners=False)

    def forward(self, render: Tensor) -> Tensor:
        if render.ndim != 4 or render.shape[1] != self.config.in_channels:
            raise ValueError(f"the refiner reads (B, {self.config.in_channels}, H, W) renders, "
                             f"got {tuple(render.shape)}")
        h = self.head(render)
        return self.enlarge(render) + self.tail(self.up(h + self.body(h)))

    def refine(self, render: Tensor) -> Tensor:
        """Images in [0, 1], for display and metrics."""
        return self(render).clamp(0.0, 1.0)
