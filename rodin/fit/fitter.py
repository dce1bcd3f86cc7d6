"""The fitting loop: tri-planes of a group of subjects, optionally with the shared decoder.

Two ways to call it, as in DESIGN.md stage 1: the joint stage trains the decoder with a first
group of subjects, visiting them in turns so it does not forget earlier ones; the frozen stage
fits many subjects at once against a fixed decoder.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from rodin.config import FitConfig, TriplaneConfig
from rodin.errors import FitError
from rodin.fit.losses import compactness, patch_ssim_loss, sparsity, total_variation
from rodin.fit.subject import FitSubject
from rodin.render.cameras import Rays
from rodin.render.volume import render_rays
from rodin.triplane.decoder import TriplaneDecoder
from rodin.triplane.sampling import sample_triplane
from rodin.triplane.triplane import resize_planes


class SubjectPlanes(torch.nn.Module):
    """One subject's planes, parametrised as a full-resolution grid plus coarser ones upsampled.

    The sum is the tri-plane that is stored; the coarse levels only precondition the optimiser
    (with Adam every parameter moves about `lr` per step, so a coarse texel moves a whole region at
    once and the overall shape forms in fewer steps). levels=1 is the plain grid.
    """

    def __init__(self, init: Tensor, levels: int = 1) -> None:
        super().__init__()
        res = init.shape[-1]
        coarse = [torch.zeros(*init.shape[:-2], max(1, res >> k), max(1, res >> k)) for k in range(1, levels)]
        self.levels = torch.nn.ParameterList([torch.nn.Parameter(init.clone())] +
                                             [torch.nn.Parameter(c) for c in coarse])

    def forward(self) -> Tensor:
        full = self.levels[0]
        out = full
        for level in list(self.levels)[1:]:
            out = out + torch.nn.functional.interpolate(level, size=full.shape[-2:], mode="bilinear",
                                                        align_corners=False)
        return out


@dataclass
class StepStats:
    loss: float
    psnr: float          # of the step's rays (a training figure)


def draw_patches(subject: FitSubject, count: int, patch: int, generator: torch.Generator,
                 foreground_prob: float = 0.8) -> tuple[Tensor, Tensor, Tensor]:
    """(view, row, col) index tensors of `count` square patches, shaped (count, patch, patch)."""
    res = subject.resolution
    patch = min(patch, res)
    use_fg = torch.rand(count, generator=generator) < foreground_prob
    fg = subject.foreground
    pick = torch.randint(len(fg), (count,), generator=generator) if len(fg) else None
    views = subject.train_views[torch.randint(len(subject.train_views), (count,), generator=generator)]
    rows = torch.randint(res, (count,), generator=generator)
    cols = torch.randint(res, (count,), generator=generator)
    if pick is not None:
        views = torch.where(use_fg, fg[pick, 0], views)
        rows = torch.where(use_fg, fg[pick, 1], rows)
        cols = torch.where(use_fg, fg[pick, 2], cols)
    top = (rows - patch // 2).clamp(0, res - patch)
    left = (cols - patch // 2).clamp(0, res - patch)
    offs = torch.arange(patch)
    r = top[:, None, None] + offs[None, :, None]
    c = left[:, None, None] + offs[None, None, :]
    v = views[:, None, None].expand(-1, patch, patch)
    return v, r.expand(-1, -1, patch), c.expand(-1, patch, -1)


def _gather_batch(subjects: Sequence[FitSubject], count: int, patch: int, generator: torch.Generator):
    origins, dirs, near, far, live, rgb, alpha, index = [], [], [], [], [], [], [], []
    for b, s in enumerate(subjects):
        v, r, c = draw_patches(s, count, patch, generator)
        origins.append(s.rays.origins[v, r, c])
        dirs.append(s.rays.directions[v, r, c])
        near.append(s.near[v, r, c])
        far.append(s.far[v, r, c])
        live.append(s.live[v, r, c])
        rgb.append(s.rgb[v, r, c])
        alpha.append(s.alpha[v, r, c])
        index.append(torch.full(v.shape, b, dtype=torch.long))
    cat = torch.cat
    return (Rays(cat(origins).reshape(-1, 3), cat(dirs).reshape(-1, 3)),
            (cat(near).reshape(-1), cat(far).reshape(-1), cat(live).reshape(-1)),
            cat(rgb), cat(alpha), cat(index).reshape(-1))


def _hull_weights(subjects: Sequence[FitSubject], points: Tensor, index: Tensor) -> Tensor:
    inside = torch.zeros(points.shape[0], dtype=torch.bool)
    for b, s in enumerate(subjects):
        sel = index == b
        inside[sel] = s.hull.lookup(points[sel], torch.zeros(int(sel.sum()), dtype=torch.long))
    return torch.where(inside, 0.0, 1.0)


def fit_step(
    subjects: Sequence[FitSubject],
    planes: Sequence[SubjectPlanes],
    decoder: TriplaneDecoder,
    optimizers: Sequence[torch.optim.Optimizer],
    *,
    config: FitConfig,
    triplane: TriplaneConfig,
    generator: torch.Generator,
) -> StepStats:
    """One optimiser step over the given subjects (each with its own planes)."""
    for opt in optimizers:
        opt.zero_grad(set_to_none=True)
    stacked = torch.stack([p() for p in planes])                          # (B, 3, C, H, W)
    read = stacked
    if config.rescale_prob > 0 and float(torch.rand((), generator=generator)) < config.rescale_prob:
        read = resize_planes(stacked, triplane.base_resolution)
    patch = min(config.patch, subjects[0].resolution)
    count = max(1, config.rays_per_step // (len(subjects) * patch * patch))
    rays, spans, gt_rgb, gt_alpha, index = _gather_batch(subjects, count, patch, generator)
    out = render_rays(read, decoder, rays, samples=config.samples, batch_index=index, spans=spans,
                      perturb=True, generator=generator)
    pred = out.rgb.reshape(gt_rgb.shape)
    mse = (pred - gt_rgb).pow(2).mean()
    loss = mse
    if config.ssim_weight > 0:
        loss = loss + config.ssim_weight * patch_ssim_loss(pred, gt_rgb)
    if config.mask_weight > 0:
        loss = loss + config.mask_weight * (out.opacity - gt_alpha.reshape(-1)).pow(2).mean()
    if config.sparse_weight > 0:
        pts = torch.rand(len(subjects) * 1024, 3, generator=generator) * 2 - 1
        idx = torch.arange(len(subjects)).repeat_interleave(1024)
        dirs = torch.nn.functional.normalize(torch.randn(pts.shape, generator=generator), dim=-1)
        view = dirs if decoder.config.view_dependent else None
        dens = decoder(sample_triplane(read, pts, idx), view).density
        weights = _hull_weights(subjects, pts, idx)
        loss = loss + config.sparse_weight * sparsity(dens[:, 0] * weights, 2.0 / config.samples)
    if config.tv_weight > 0:
        loss = loss + config.tv_weight * total_variation(stacked)
    if config.compact_weight > 0:
        loss = loss + config.compact_weight * compactness(stacked)
    if not torch.isfinite(loss):
        raise FitError("loss became NaN or infinite")
    loss.backward()
    for opt in optimizers:
        opt.step()
    return StepStats(loss=float(loss.detach()), psnr=float(-10 * torch.log10(mse.detach().clamp_min(1e-10))))


def cosine_factor(step: int, total: int, floor: float = 0.1) -> float:
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(step, total) / max(total, 1)))


def fit_frozen(
    subjects: Sequence[FitSubject],
    planes: Sequence[SubjectPlanes],
    decoder: TriplaneDecoder,
    *,
    config: FitConfig,
    triplane: TriplaneConfig,
    generator: torch.Generator,
    on_step: Callable[[int, StepStats], None] | None = None,
) -> StepStats:
    """Fit the planes of several subjects at once against a frozen decoder."""
    decoder.requires_grad_(False)
    opt = torch.optim.Adam([q for p in planes for q in p.parameters()], lr=config.plane_lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: cosine_factor(s, config.steps))
    stats = StepStats(float("nan"), float("nan"))
    for step in range(config.steps):
        stats = fit_step(subjects, planes, decoder, [opt], config=config, triplane=triplane,
                         generator=generator)
        sched.step()
        if on_step is not None:
            on_step(step, stats)
    return stats
