"""A fitted subject's held-out views, rendered as `rodin fit` scores them, for metrics it did not record
(LPIPS needs the images themselves, not only the PSNR/SSIM of RUN/subject_metrics.json)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from rodin.config import Preset
from rodin.fit.subject import FitSubject
from rodin.render.volume import occupancy_from_density, render_views
from rodin.triplane.decoder import TriplaneDecoder


@dataclass
class HeldoutViews:
    rendered: Tensor      # (N, H, W, 3) in [0, 1]
    target: Tensor        # (N, H, W, 3) in [0, 1], on the same background


@torch.no_grad()
def render_heldout(subject: FitSubject, planes: Tensor, decoder: TriplaneDecoder, *,
                   preset: Preset) -> HeldoutViews | None:
    """The views kept out of fitting and their renders with the run's settings; None if it kept none."""
    if len(subject.heldout_views) == 0:
        return None
    r = preset.render
    occupancy = occupancy_from_density(planes, decoder, resolution=r.occupancy_resolution,
                                       threshold=r.occupancy_threshold)
    held = subject.heldout_views.to(subject.device)
    rgb, _, _ = render_views(planes, decoder, subject.c2w[held], subject.fov_x,
                             subject.resolution, samples=r.samples, importance=r.importance,
                             occupancy=occupancy, background=r.background)
    return HeldoutViews(rendered=rgb, target=subject.rgb[held])
