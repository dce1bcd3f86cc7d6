"""Multi-view consistency of rendered turntables: does each view agree with its neighbour?

Measure. Every pixel of a view that shows a solid surface (opacity >= `ALPHA`) is lifted to 3D with its
rendered depth (the expected distance along its unit ray) and projected into the neighbouring turntable
view (DESIGN.md cameras: camera-to-world, looking down -z, +y up, `fov_x` horizontal). Where the point is
inside that view, solid there too and not hidden (the neighbour's own depth at the projection agrees
within `DEPTH_TOLERANCE`), the neighbour's colour there (bilinear) is compared with the pixel's: masked L1
and masked PSNR, both directions of every neighbouring pair. `coverage` says which fraction of solid
pixels could be compared (fog and floaters lower it, since their depth is no surface).

A scene that is consistent by construction still loses to bilinear resampling (more, the sharper its
texture) and to view-dependent shading. The reference is the ground truth: the procedural generator's own
renders of real subjects at the same cameras, with exact depth (`ground_truth_views`); it is sharp and has
specular highlights, so a blurry but consistent volume render can score above it. Read the figure as a
detector of inconsistency between two renderings of the same avatars (volume-rendered against refined
turntables, once a refiner exists), not as a quality score across levels of sharpness.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from rodin.errors import DataError

ALPHA = 0.9               # opacity above which a pixel counts as solid surface
DEPTH_TOLERANCE = 0.05    # world units (2.5% of the box side): a projected point is visible if depths agree


@dataclass
class View:
    """One rendered view with what the warp needs."""

    rgb: Tensor          # (H, W, 3) in [0, 1]
    depth: Tensor        # (H, W) distance along each unit ray
    alpha: Tensor        # (H, W) opacity in [0, 1]
    c2w: Tensor          # (4, 4) camera-to-world
    fov_x: float         # radians


@dataclass(frozen=True)
class PairScore:
    l1: float            # mean absolute colour difference over compared pixels and channels
    psnr: float          # dB, from the mean squared difference over the same pixels
    coverage: float      # compared pixels / solid pixels of the source view
    pixels: int          # compared pixels


def project(points: Tensor, c2w: Tensor, fov_x: float, width: int, height: int) -> tuple[Tensor, Tensor]:
    """grid_sample coordinates (..., 2) (align_corners=False) of world points in a camera, and their
    distance from the camera centre (...). Points behind the camera get coordinates outside [-1, 1]."""
    rotation, centre = c2w[:3, :3].float(), c2w[:3, 3].float()
    local = (points - centre) @ rotation                  # world -> camera axes (rotation is orthonormal)
    focal = 0.5 * width / math.tan(0.5 * fov_x)
    ahead = -local[..., 2]
    safe = torch.where(ahead > 1e-6, ahead, torch.full_like(ahead, 1e-6))
    gx = 2.0 * focal * local[..., 0] / (safe * width)
    gy = -2.0 * focal * local[..., 1] / (safe * height)
    behind = ahead <= 1e-6
    grid = torch.stack([torch.where(behind, torch.full_like(gx, 9.0), gx), gy], dim=-1)
    return grid, (points - centre).norm(dim=-1)


def compare_views(source: View, target: View, *, alpha: float = ALPHA,
                  depth_tolerance: float = DEPTH_TOLERANCE) -> PairScore:
    """Warp `target` into `source` through the source's depth and compare (see the module docstring)."""
    from rodin.render.cameras import camera_rays

    h, w = source.depth.shape
    rays = camera_rays(source.c2w.float(), source.fov_x, w, h)
    points = rays.origins + rays.directions * source.depth[..., None].float()
    th, tw = target.depth.shape
    grid, distance = project(points, target.c2w, target.fov_x, tw, th)
    stack = torch.cat([target.rgb.float(), target.depth[..., None].float(), target.alpha[..., None].float()], -1)
    colour_depth = F.grid_sample(stack.permute(2, 0, 1)[None], grid[None], mode="bilinear", padding_mode="border",
                                 align_corners=False)[0].permute(1, 2, 0)
    nearest = F.grid_sample(stack[..., 3:].permute(2, 0, 1)[None], grid[None], mode="nearest",
                            padding_mode="border", align_corners=False)[0].permute(1, 2, 0)
    inside = (grid.abs() <= 1.0 - 1.0 / max(tw, th)).all(-1)
    solid = source.alpha >= alpha
    seen = inside & (nearest[..., 1] >= alpha) & ((nearest[..., 0] - distance).abs() <= depth_tolerance)
    mask = solid & seen
    count = int(mask.sum())
    coverage = count / max(int(solid.sum()), 1)
    if count == 0:
        return PairScore(l1=float("nan"), psnr=float("nan"), coverage=coverage, pixels=0)
    diff = source.rgb.float()[mask] - colour_depth[..., :3][mask]
    mse = float((diff ** 2).mean())
    return PairScore(l1=float(diff.abs().mean()), psnr=-10.0 * math.log10(max(mse, 1e-10)), coverage=coverage,
                     pixels=count)


def turntable_consistency(views: list[View], **options) -> dict:
    """Mean scores over both directions of every neighbouring pair of a closed turntable."""
    scores = []
    for k in range(len(views)):
        nxt = views[(k + 1) % len(views)]
        scores += [compare_views(views[k], nxt, **options), compare_views(nxt, views[k], **options)]
    compared = [s for s in scores if s.pixels > 0]
    if not compared:
        return {"l1": None, "psnr": None, "coverage": 0.0, "pairs": len(scores)}
    return {"l1": float(np.mean([s.l1 for s in compared])), "psnr": float(np.mean([s.psnr for s in compared])),
            "coverage": float(np.mean([s.coverage for s in scores])), "pairs": len(scores)}


def turntable_cameras_for(frames: int, elevation: float) -> Tensor:
    from rodin.render.cameras import turntable_cameras

    if frames < 3:
        raise DataError(f"a turntable needs at least 3 frames to have neighbours, got {frames}")
    return turntable_cameras(frames, elevation_deg=elevation)


@torch.no_grad()
def rendered_views(planes: Tensor, decoder, render, *, frames: int, resolution: int,
                   elevation: float = 10.0) -> list[View]:
    """A tri-plane's turntable (as `rodin render` makes it) with depth and opacity."""
    from rodin.render.cameras import DEFAULT_FOV_X
    from rodin.render.volume import occupancy_from_density, render_views

    batch = planes.float().cpu()[None]
    occupancy = occupancy_from_density(batch, decoder, resolution=render.occupancy_resolution,
                                       threshold=render.occupancy_threshold)
    c2w = turntable_cameras_for(frames, elevation)
    rgb, depth, opacity = render_views(batch, decoder, c2w, DEFAULT_FOV_X, resolution, samples=render.samples,
                                       importance=render.importance, occupancy=occupancy,
                                       background=render.background)
    return [View(rgb[k], depth[k], opacity[k], c2w[k], DEFAULT_FOV_X) for k in range(frames)]


@torch.no_grad()
def ground_truth_views(folder: Path | str, *, frames: int, resolution: int, elevation: float = 10.0) -> list[View]:
    """A generated subject re-rendered by the procedural generator at the turntable cameras, with its exact
    depth (the sphere-traced surface), from its attributes.json."""
    from rodin.data.sdf import build_avatar
    from rodin.data.synth import GENERATOR, load_attributes, sdf_grid, shade, torch_threads, trace
    from rodin.render.cameras import DEFAULT_FOV_X, camera_rays

    folder = Path(folder)
    try:
        made_by = json.loads((folder / "transforms.json").read_text()).get("rodin", {}).get("generator")
        attributes = load_attributes(folder)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DataError(f"{folder}: not a generated subject ({err})") from None
    # Colour is shaded at each pixel centre's own surface point, whatever supersampling the dataset used:
    # the reprojection assumes that a pixel's colour belongs to the point at its depth.
    if made_by not in (GENERATOR, "rodin-procedural/1"):
        raise DataError(f"{folder}: made by {made_by!r}, not {GENERATOR!r}; only generated subjects can be "
                        "re-rendered for the reference")
    c2w = turntable_cameras_for(frames, elevation)
    with torch_threads(1):
        avatar = build_avatar(attributes)
        grid = sdf_grid(avatar)
        views = []
        for camera in c2w:
            rays = camera_rays(camera, DEFAULT_FOV_X, resolution)
            o, d = rays.origins.reshape(-1, 3), rays.directions.reshape(-1, 3)
            traced = trace(avatar, grid, o, d, 2.0 * math.tan(0.5 * DEFAULT_FOV_X) / resolution)
            rgb = torch.ones(o.shape[0], 3)
            depth = torch.full((o.shape[0],), 1e3)
            if traced.shaded.numel():
                colour = shade(avatar, grid, traced.points, traced.normals, traced.part, d[traced.shaded])
                a = traced.alpha[traced.shaded, None]
                rgb[traced.shaded] = colour * a + (1.0 - a)
                depth[traced.shaded] = (traced.points - o[traced.shaded]).norm(dim=-1)
            views.append(View(rgb.reshape(resolution, resolution, 3), depth.reshape(resolution, resolution),
                              traced.alpha.reshape(resolution, resolution), camera, DEFAULT_FOV_X))
    return views


__all__ = ["ALPHA", "DEPTH_TOLERANCE", "PairScore", "View", "compare_views", "ground_truth_views", "project",
           "rendered_views", "turntable_consistency"]
