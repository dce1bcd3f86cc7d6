"""Fitting losses: photometric (L2 + SSIM on patches), mask, and the plane regularisers."""

from __future__ import annotations

import torch
from torch import Tensor

from rodin.eval.metrics import ssim


def patch_ssim_loss(pred: Tensor, target: Tensor) -> Tensor:
    """1 - SSIM over square patches (P, p, p, 3) with a window that fits the patch."""
    p = pred.shape[1]
    window = 5 if p >= 7 else 3
    return 1.0 - ssim(pred, target, window=window, sigma=1.0 if window == 5 else 0.8).mean()


def total_variation(planes: Tensor) -> Tensor:
    """Smoothness: mean squared difference of neighbouring texels, (B, 3, C, H, W)."""
    dh = planes[..., 1:, :] - planes[..., :-1, :]
    dw = planes[..., :, 1:] - planes[..., :, :-1]
    return dh.pow(2).mean() + dw.pow(2).mean()


def compactness(planes: Tensor) -> Tensor:
    """Keep features small and centred, so that tri-planes share one range for diffusion."""
    return planes.pow(2).mean()


def sparsity(density: Tensor, step: float) -> Tensor:
    """Empty space stays empty: the alpha that a sample step would have at these points."""
    return (1.0 - torch.exp(-density * step)).mean()
