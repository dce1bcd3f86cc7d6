"""Image metrics: PSNR, SSIM and (with local weights) LPIPS on (…, H, W, 3) images in [0, 1]."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

if TYPE_CHECKING:
    from rodin.eval.lpips import Lpips


def psnr(pred: Tensor, target: Tensor) -> Tensor:
    """Per image PSNR in dB over the last three dims (H, W, C)."""
    mse = ((pred - target) ** 2).flatten(-3).mean(-1).clamp_min(1e-10)
    return -10.0 * torch.log10(mse)


def _gaussian_window(size: int, sigma: float) -> Tensor:
    x = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-(x ** 2) / (2 * sigma ** 2))
    return g / g.sum()


def ssim(pred: Tensor, target: Tensor, *, window: int = 11, sigma: float = 1.5) -> Tensor:
    """Per image SSIM (Wang et al. 2004), Gaussian window, valid region only.

    Images (..., H, W, C); windows larger than the image shrink to fit.
    """
    lead = pred.shape[:-3]
    h, w, c = pred.shape[-3:]
    window = min(window, h, w)
    if window % 2 == 0:
        window -= 1
    x = pred.reshape(-1, h, w, c).permute(0, 3, 1, 2)
    y = target.reshape(-1, h, w, c).permute(0, 3, 1, 2)
    g = _gaussian_window(window, sigma * window / 11 if window < 11 else sigma).to(x)
    kernel = (g[:, None] * g[None, :]).expand(c, 1, window, window)

    def blur(t: Tensor) -> Tensor:
        return F.conv2d(t, kernel, groups=c)

    mu_x, mu_y = blur(x), blur(y)
    sxx = blur(x * x) - mu_x ** 2
    syy = blur(y * y) - mu_y ** 2
    sxy = blur(x * y) - mu_x * mu_y
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    value = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (sxx + syy + c2))
    return value.flatten(1).mean(-1).reshape(lead)


def lpips(pred: Tensor, target: Tensor, *, network: Lpips) -> Tensor:
    """Per image LPIPS (lower is closer) in the layout of `psnr` and `ssim`; `network` from
    `rodin.eval.lpips.load_lpips`."""
    lead = pred.shape[:-3]
    h, w, c = pred.shape[-3:]
    x = pred.reshape(-1, h, w, c).permute(0, 3, 1, 2).float()
    y = target.reshape(-1, h, w, c).permute(0, 3, 1, 2).float()
    return network(x, y).reshape(lead)
