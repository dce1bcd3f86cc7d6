"""The tri-plane: three axis-aligned feature planes XY | XZ | YZ, each (C, H, W).

Layout (3, C, H, W) or batched (B, 3, C, H, W); the roll-out (C, H, 3W) puts the planes side by
side in that order, which is what the diffusion UNet sees.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

PLANE_NAMES = ("xy", "xz", "yz")


def roll_out(planes: Tensor) -> Tensor:
    """(..., 3, C, H, W) -> (..., C, H, 3W), planes in the order XY | XZ | YZ."""
    if planes.shape[-4] != 3:
        raise ValueError(f"expected 3 planes in dim -4, got shape {tuple(planes.shape)}")
    return rearrange(planes, "... p c h w -> ... c h (p w)")


def roll_in(rolled: Tensor) -> Tensor:
    """(..., C, H, 3W) -> (..., 3, C, H, W); the inverse of `roll_out`."""
    if rolled.shape[-1] % 3:
        raise ValueError(f"rolled-out width {rolled.shape[-1]} is not a multiple of 3")
    return rearrange(rolled, "... c h (p w) -> ... p c h w", p=3)


def resize_planes(planes: Tensor, resolution: int, *, mode: str = "bilinear") -> Tensor:
    """Resample every plane to `resolution`², area-averaging when shrinking (no aliasing)."""
    lead = planes.shape[:-3]
    flat = planes.reshape(-1, *planes.shape[-3:])
    if flat.shape[-1] == resolution and flat.shape[-2] == resolution:
        return planes
    if resolution < flat.shape[-1] and flat.shape[-1] % resolution == 0 and flat.shape[-2] % resolution == 0:
        out = F.adaptive_avg_pool2d(flat, resolution)
    else:
        out = F.interpolate(flat, size=(resolution, resolution), mode=mode, align_corners=False,
                            antialias=mode in ("bilinear", "bicubic") and resolution < flat.shape[-1])
    return out.reshape(*lead, *out.shape[-3:])


def init_planes(subjects: int, channels: int, resolution: int, *, scale: float = 0.1,
                generator: torch.Generator | None = None) -> Tensor:
    """Small random planes (B, 3, C, H, W): enough asymmetry to start fitting, little noise."""
    return torch.randn(subjects, 3, channels, resolution, resolution, generator=generator) * scale
