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
        coarse = [init.new_zeros(*init.shape[:-2], max(1, res >> k), max(1, res >> k)) for k in range(1, levels)]
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


@dataclass
class PatchRays:
    """The rays of some square patches of training views, with what they should render."""

    rays: Rays
    spans: tuple[Tensor, Tensor, Tensor]   # near, far, live per ray
    jitter: Tensor                         # (rays, samples) stratified offsets
    rgb: Tensor
    alpha: Tensor

    @classmethod
    def draw(cls, subject: FitSubject, count: int, patch: int, samples: int, generator: torch.Generator) -> PatchRays:
        v, r, c = (t.to(subject.device) for t in draw_patches(subject, count, patch, generator))
        rays = Rays(subject.rays.origins[v, r, c].reshape(-1, 3), subject.rays.directions[v, r, c].reshape(-1, 3))
        spans = (subject.near[v, r, c].reshape(-1), subject.far[v, r, c].reshape(-1),
                 subject.live[v, r, c].reshape(-1))
        jitter = torch.rand(rays.origins.shape[0], samples, generator=generator).to(subject.device)
        return cls(rays, spans, jitter, subject.rgb[v, r, c], subject.alpha[v, r, c])

    @classmethod
    def concat(cls, parts: Sequence[PatchRays]) -> PatchRays:
        rays = Rays(torch.cat([p.rays.origins for p in parts]), torch.cat([p.rays.directions for p in parts]))
        spans = tuple(torch.cat([p.spans[k] for p in parts]) for k in range(3))
        return cls(rays, spans, torch.cat([p.jitter for p in parts]), torch.cat([p.rgb for p in parts]),
                   torch.cat([p.alpha for p in parts]))


def _step_loss(subjects, planes, decoder, *, config, triplane, rescale: bool, count: int, patch: int,
               generators) -> tuple[Tensor, Tensor]:
    """(loss, photometric MSE) of these subjects: means over their rays, points and texels.

    Every subject's rays go through one render call (a per-subject call would repeat the fixed costs
    of each operation, and slicing the batch of planes costs a full-size gradient per slice); what
    each subject sees is still drawn from its own generator.
    """
    stacked = torch.stack([p() for p in planes])                          # (B, 3, C, H, W)
    read = resize_planes(stacked, triplane.base_resolution) if rescale else stacked
    parts = [PatchRays.draw(s, count, patch, config.samples, g) for s, g in zip(subjects, generators)]
    drawn = PatchRays.concat(parts)
    device = stacked.device
    index = torch.arange(len(subjects), device=device).repeat_interleave(parts[0].jitter.shape[0])
    out = render_rays(read, decoder, drawn.rays, samples=config.samples, spans=drawn.spans, batch_index=index,
                      jitter=drawn.jitter)
    gt_rgb = drawn.rgb
    pred = out.rgb.reshape(gt_rgb.shape)
    mse = (pred - gt_rgb).pow(2).mean()
    loss = mse
    if config.ssim_weight > 0:
        loss = loss + config.ssim_weight * patch_ssim_loss(pred, gt_rgb)
    if config.mask_weight > 0:
        loss = loss + config.mask_weight * (out.opacity - drawn.alpha.reshape(-1)).pow(2).mean()
    if config.sparse_weight > 0:
        pts, dirs = [], []
        for g in generators:
            pts.append(torch.rand(1024, 3, generator=g) * 2 - 1)
            dirs.append(torch.nn.functional.normalize(torch.randn(1024, 3, generator=g), dim=-1))
        pts, dirs = torch.cat(pts).to(device), torch.cat(dirs).to(device)
        idx = torch.arange(len(subjects), device=device).repeat_interleave(1024)
        view = dirs if decoder.config.view_dependent else None
        dens = decoder(sample_triplane(read, pts, idx), view).density
        weights = _hull_weights(subjects, pts, idx)
        loss = loss + config.sparse_weight * sparsity(dens[:, 0] * weights, 2.0 / config.samples)
    if config.tv_weight > 0:
        loss = loss + config.tv_weight * total_variation(stacked)
    if config.compact_weight > 0:
        loss = loss + config.compact_weight * compactness(stacked)
    return loss, mse


def _hull_weights(subjects: Sequence[FitSubject], points: Tensor, index: Tensor) -> Tensor:
    inside = torch.zeros(points.shape[0], dtype=torch.bool, device=points.device)
    for b, s in enumerate(subjects):
        sel = index == b
        inside[sel] = s.hull.lookup(points[sel], torch.zeros(int(sel.sum()), dtype=torch.long, device=points.device))
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
    subject_generators: Sequence[torch.Generator] | None = None,
    step_subjects: int | None = None,
    sum_processes: Callable[[Tensor], Tensor] | None = None,
) -> StepStats:
    """One optimiser step over the given subjects (each with its own planes).

    `generator` draws what the whole step shares (whether the planes are read rescaled);
    `subject_generators` (default: `generator` for every subject) draw each subject's patches, sample
    jitter and sparse points, so that what a subject sees does not depend on the process fitting it.

    Data-parallel (the joint stage under several processes): the step's `step_subjects` subjects are
    split among processes and `sum_processes` sums a tensor over them. Every loss term is a mean over
    subjects of equal share, so a process weights its loss by its share (its subjects / step_subjects);
    the decoder gradients summed over processes are then the one-process gradients, and each subject's
    plane gradients are already exact where they are. This process may have no subject in the step.
    """
    for opt in optimizers:
        opt.zero_grad(set_to_none=True)
    total = step_subjects or len(subjects)
    rescale = config.rescale_prob > 0 and float(torch.rand((), generator=generator)) < config.rescale_prob
    patch = min(config.patch, subjects[0].resolution if subjects else config.patch)
    count = max(1, config.rays_per_step // (total * patch * patch))
    generators = subject_generators if subject_generators is not None else [generator] * len(subjects)
    if subjects:
        loss, mse = _step_loss(subjects, planes, decoder, config=config, triplane=triplane, rescale=rescale,
                               count=count, patch=patch, generators=generators)
        share = len(subjects) / total
        loss, mse = loss * share, mse.detach() * share
    else:
        loss = mse = torch.zeros((), device=next(decoder.parameters()).device)
    if sum_processes is None:
        if not torch.isfinite(loss):
            raise FitError("loss became NaN or infinite")
        loss.backward()
    else:
        if subjects:
            loss.backward()
        loss, mse = _sum_decoder_gradients(decoder, loss.detach(), mse, sum_processes)
        if not torch.isfinite(loss):            # every process sees the same sum, so all stop together
            raise FitError("loss became NaN or infinite")
    for opt in optimizers:
        opt.step()
    return StepStats(loss=float(loss.detach()), psnr=float(-10 * torch.log10(mse.clamp_min(1e-10))))


def _sum_decoder_gradients(decoder, loss: Tensor, mse: Tensor, sum_processes) -> tuple[Tensor, Tensor]:
    """Sum the decoder gradients (and the loss figures) over processes in one collective.

    A parameter no process reached keeps no gradient, as in one process, so Adam leaves it alone.
    """
    params = [p for p in decoder.parameters() if p.requires_grad]
    device = params[0].device
    parts = [p.grad.reshape(-1) if p.grad is not None else torch.zeros(p.numel(), device=device) for p in params]
    reached = torch.tensor([float(p.grad is not None) for p in params], device=device)
    flat = sum_processes(torch.cat([*parts, reached, loss.reshape(1), mse.reshape(1)]))
    offset = 0
    for k, p in enumerate(params):
        grad = flat[offset:offset + p.numel()].view_as(p)
        offset += p.numel()
        p.grad = grad.clone() if flat[-2 - len(params) + k] > 0 else None
    return flat[-2], flat[-1]


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
    opt = torch.optim.Adam([q for p in planes for q in p.parameters()], lr=config.plane_lr, eps=config.plane_eps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: cosine_factor(s, config.steps))
    stats = StepStats(float("nan"), float("nan"))
    for step in range(config.steps):
        stats = fit_step(subjects, planes, decoder, [opt], config=config, triplane=triplane,
                         generator=generator)
        sched.step()
        if on_step is not None:
            on_step(step, stats)
    return stats
