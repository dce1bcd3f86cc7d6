"""Fitting a drawn avatar to the portrait it was drawn from.

z carries only part of a portrait: avatars drawn from held-out portraits show about 0.58 of their subjects'
attributes, where renders of the subjects' own fitted tri-planes show 0.76 (BENCHMARKS.md). But the portrait is
itself a view of the subject from a known camera: the one the training portraits were rendered with, which is
also the framing a photo is cropped to (`rodin.semantic.face`). So, as GAN inversion tunes a generator's output
to its photo, the drawn tri-plane is optimised, the decoder frozen, until its render from the portrait camera
matches the portrait. Two terms keep it the avatar the model drew where the portrait says nothing: renders
from beside and behind the head stay as they were, and so does the opacity of random points in the box. Without
them a single view's fit paints the face onto the back of the head (the front plane is read all the way
through) and draws streaks of density along lines of sight, which that one view cannot see.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rodin.config import PortraitFitConfig, RenderConfig
from rodin.errors import ConfigError, DataError
from rodin.render.cameras import DEFAULT_FOV_X, camera_rays, orbit_cameras
from rodin.render.volume import occupancy_from_density, render_rays, render_views, uniform
from rodin.triplane.sampling import sample_triplane

KEEP_ELEVATION = 10.0          # degrees: the kept views look as turntables and the judge do


def keep_cameras(count: int) -> Tensor:
    """Cameras spread over the half of the orbit that faces away from the portrait (90 to 270 degrees)."""
    azimuths = [90.0 + 180.0 * k / max(count - 1, 1) for k in range(count)]
    return orbit_cameras(azimuths, [KEEP_ELEVATION] * count)


def portrait_view(planes: Tensor, decoder, *, resolution: int, render: RenderConfig) -> Tensor:
    """(3, R, R) render of `planes` (3, C, H, W) from the portrait camera, on the background."""
    from rodin.data.synth import PORTRAIT_FOV_X, portrait_camera

    planes = planes.detach()
    occupancy = occupancy_from_density(planes[None], decoder, resolution=render.occupancy_resolution,
                                       threshold=render.occupancy_threshold)
    rgb, _, _ = render_views(planes, decoder, portrait_camera()[None].to(planes.device), PORTRAIT_FOV_X, resolution,
                             samples=render.samples, importance=render.importance, occupancy=occupancy,
                             background=render.background)
    return rgb[0].permute(2, 0, 1)


def edited_portrait(fitted: Tensor, drawn: Tensor, edited: Tensor, decoder, *, config: PortraitFitConfig,
                    render: RenderConfig) -> Tensor:
    """What a fitted avatar's portrait becomes under an edit: its own view from the portrait camera, except
    where the edit changes the drawn avatar's view (by `config.edit_threshold` or more, ramping up to it),
    which is taken from the edited drawn avatar. Fitting the edited avatar to it keeps the likeness where
    the edit does not act and leaves the edit whole where it does."""
    views = [portrait_view(p, decoder, resolution=config.resolution, render=render) for p in (fitted, drawn, edited)]
    mine, was, now = views
    changed = ((now - was).abs().amax(0, keepdim=True) / max(config.edit_threshold, 1e-6)).clamp(0, 1)
    return changed * now + (1 - changed) * mine


def _opacity(density: Tensor, step: float) -> Tensor:
    return 1.0 - torch.exp(-density * step)


def fit_to_portrait(planes: Tensor, decoder, portrait: Tensor, *, config: PortraitFitConfig, render: RenderConfig,
                    generator: torch.Generator | None = None) -> Tensor:
    """`planes` (3, C, H, W) optimised so that their render from the portrait camera matches `portrait`
    (3, S, S) floats in [0, 1] on white, at `config.resolution`. Returns new planes; the decoder is untouched."""
    from rodin.data.synth import PORTRAIT_FOV_X, portrait_camera

    if config.steps < 0 or config.rays < 1 or config.resolution < 8:
        raise ConfigError(f"portrait fitting needs steps >= 0, rays >= 1 and resolution >= 8, got {config}")
    if portrait.ndim != 3 or portrait.shape[0] != 3:
        raise DataError(f"the portrait must be (3, S, S) pixels, got shape {tuple(portrait.shape)}")
    if not torch.isfinite(portrait).all():
        raise DataError("the portrait holds NaN or infinity")
    drawn = planes.detach()
    if config.steps == 0:
        return drawn.clone()
    device = drawn.device
    side = config.resolution
    target = torch.nn.functional.interpolate(portrait[None].float(), size=(side, side), mode="area",
                                             antialias=False)[0].clamp(0, 1)
    target = target.permute(1, 2, 0).reshape(-1, 3).to(device)
    rays = camera_rays(portrait_camera()[None].to(device), PORTRAIT_FOV_X, side).reshape(-1)
    kept = camera_rays(keep_cameras(config.keep_views).to(device), DEFAULT_FOV_X, side).reshape(-1)
    occupancy = occupancy_from_density(drawn[None], decoder, resolution=render.occupancy_resolution,
                                       threshold=render.occupancy_threshold)
    step = 2.0 / render.samples                    # the stretch of the box one render sample stands for

    def draw(tri: Tensor, chosen, perturb: bool):
        return render_rays(tri[None], decoder, chosen, samples=config.samples, importance=config.importance,
                           occupancy=occupancy, background=render.background, perturb=perturb,
                           generator=generator).rgb

    kept_rgb, _, _ = render_views(drawn, decoder, keep_cameras(config.keep_views).to(device), DEFAULT_FOV_X, side,
                                  samples=config.samples, importance=config.importance, occupancy=occupancy,
                                  background=render.background)
    kept_rgb = kept_rgb.reshape(-1, 3)
    requires = [p.requires_grad for p in decoder.parameters()]
    for p in decoder.parameters():
        p.requires_grad_(False)
    try:
        with torch.enable_grad():
            return _optimise(drawn, decoder, config, loss_terms=(rays, target, kept, kept_rgb), draw=draw,
                             step=step, generator=generator)
    finally:
        for p, flag in zip(decoder.parameters(), requires):
            p.requires_grad_(flag)


def _optimise(drawn: Tensor, decoder, config: PortraitFitConfig, *, loss_terms, draw, step: float,
              generator: torch.Generator | None) -> Tensor:
    rays, target, kept, kept_rgb = loss_terms
    device = drawn.device
    tri = drawn.clone().requires_grad_(True)
    optimiser = torch.optim.Adam([tri], lr=config.lr)
    for _ in range(config.steps):
        chosen = (uniform((config.rays,), generator, device) * len(rays)).long()
        loss = (draw(tri, rays[chosen], True) - target[chosen]).pow(2).mean()
        if config.keep_weight > 0 and config.keep_views > 0:
            chosen = (uniform((config.rays,), generator, device) * len(kept)).long()
            loss = loss + config.keep_weight * (draw(tri, kept[chosen], True) - kept_rgb[chosen]).pow(2).mean()
        if config.density_weight > 0 and config.density_points > 0:
            points = uniform((config.density_points, 3), generator, device) * 2.0 - 1.0
            index = torch.zeros(config.density_points, dtype=torch.long, device=device)
            now = decoder.density(sample_triplane(tri[None], points, index))
            with torch.no_grad():
                was = decoder.density(sample_triplane(drawn[None], points, index))
            loss = loss + config.density_weight * (_opacity(now, step) - _opacity(was, step)).pow(2).mean()
        if not torch.isfinite(loss):
            raise DataError("fitting the avatar to its portrait diverged (the loss is not finite); "
                            "generate with --portrait-steps 0 to keep the drawn avatar")
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
    return tri.detach()
