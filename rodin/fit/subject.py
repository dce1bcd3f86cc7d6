"""A subject made ready for fitting: rays, colours on white, held-out views, visual hull."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor

from rodin.errors import FitError
from rodin.render.cameras import Rays, box_intersect, camera_rays, focal_from_fov
from rodin.render.volume import OccupancyGrid, occupied_span

MIN_TRAIN_VIEWS = 3


@dataclass
class FitSubject:
    name: str
    rgb: Tensor            # (V, H, W, 3) ground truth composited on white
    alpha: Tensor          # (V, H, W)
    c2w: Tensor            # (V, 4, 4)
    fov_x: float
    train_views: Tensor    # (Vt,) indices
    heldout_views: Tensor  # (Vh,) indices
    hull: OccupancyGrid    # (1, D, D, D) visual hull of the training views, dilated
    near: Tensor           # (V, H, W) occupied span of every pixel's ray, from the hull
    far: Tensor
    live: Tensor           # (V, H, W) bool: the ray crosses the hull
    rays: Rays             # (V, H, W, 3) origins and directions
    foreground: Tensor     # (P, 3) long (view, row, col) of training pixels with alpha > 0.5

    @property
    def resolution(self) -> int:
        return self.rgb.shape[1]

    @property
    def device(self) -> torch.device:
        return self.rgb.device

    def to(self, device: torch.device | str) -> FitSubject:
        """The pixels, rays, spans and hull on `device`; the view and pixel index lists stay on the CPU,
        where the fitting loop draws from them with CPU generators (the same draws on every device)."""
        return replace(self, rgb=self.rgb.to(device), alpha=self.alpha.to(device), c2w=self.c2w.to(device),
                       hull=self.hull.to(device), near=self.near.to(device), far=self.far.to(device),
                       live=self.live.to(device), rays=self.rays.to(device))


def heldout_indices(views: int, heldout: int) -> list[int]:
    """Evenly spread held-out views (never all of them)."""
    heldout = max(0, min(heldout, views - MIN_TRAIN_VIEWS))
    if heldout == 0:
        return []
    step = views / heldout
    return sorted({int(step * k + step / 2) % views for k in range(heldout)})


def visual_hull(alpha: Tensor, c2w: Tensor, fov_x: float, resolution: int, *,
                threshold: float = 0.05, dilation: int = 1) -> OccupancyGrid:
    """Cells of the box that every view sees as foreground (views that do not see a cell do not carve)."""
    centres = OccupancyGrid.cell_centres(resolution).reshape(-1, 3)
    v, h, w = alpha.shape
    focal = focal_from_fov(w, fov_x)
    # A soft silhouette: dilate each mask by a pixel so thin parts survive the cell discretisation.
    mask = torch.nn.functional.max_pool2d((alpha > threshold).float()[:, None], 3, 1, 1)[:, 0] > 0.5
    w2c = torch.linalg.inv(c2w)
    cam = torch.einsum("vab,nb->vna", w2c[:, :3, :3], centres) + w2c[:, None, :3, 3]   # (V, N, 3)
    depth = (-cam[..., 2]).clamp_min(1e-6)
    col = cam[..., 0] / depth * focal + 0.5 * w
    row = -cam[..., 1] / depth * focal + 0.5 * h
    seen = (cam[..., 2] < -1e-6) & (col >= 0) & (col < w) & (row >= 0) & (row < h)
    flat = row.long().clamp_(0, h - 1) * w + col.long().clamp_(0, w - 1)
    fg = mask.reshape(v, -1).gather(1, flat)
    inside = (~seen | fg).all(dim=0)
    grid = inside.reshape(1, resolution, resolution, resolution)
    return OccupancyGrid(grid).dilate(dilation)


def prepare_subject(name: str, images: Tensor, c2w: Tensor, fov_x: float, *, heldout: int,
                    hull_resolution: int) -> FitSubject:
    """`images` (V, H, W, 4) straight RGBA in [0, 1], cameras in the project's world."""
    v, h, w, _ = images.shape
    if v - heldout < MIN_TRAIN_VIEWS and v < MIN_TRAIN_VIEWS + 1:
        raise FitError(f"{name}: {v} views; fitting needs at least {MIN_TRAIN_VIEWS + 1}")
    if not torch.isfinite(images).all():
        raise FitError(f"{name}: images hold NaN or infinity")
    alpha = images[..., 3]
    rgb = images[..., :3] * alpha[..., None] + (1.0 - alpha[..., None])
    held = heldout_indices(v, heldout)
    train = [k for k in range(v) if k not in held]
    if float(alpha[train].max()) <= 0.0:
        raise FitError(f"{name}: every training image is fully transparent; nothing to fit")
    rays = camera_rays(c2w, fov_x, w, h)
    _, _, hits_box = box_intersect(rays.reshape(-1), 1.0)
    if not bool(hits_box.any()):
        raise FitError(f"{name}: no camera ray meets the box [-1, 1]^3; check the scene bound and up axis")
    hull = visual_hull(alpha[train], c2w[train], fov_x, hull_resolution)
    if not bool(hull.cells.any()):
        raise FitError(f"{name}: the views' silhouettes do not agree on any point of the box "
                       "(cameras inconsistent with the images, or the wrong --up / --bound)")
    flat = rays.reshape(-1)
    near, far, live = occupied_span(flat, hull, torch.zeros(len(flat), dtype=torch.long))
    fg = (alpha[train] > 0.5).nonzero()
    fg[:, 0] = torch.tensor(train)[fg[:, 0]]
    return FitSubject(
        name=name, rgb=rgb, alpha=alpha, c2w=c2w, fov_x=fov_x,
        train_views=torch.tensor(train), heldout_views=torch.tensor(held, dtype=torch.long), hull=hull,
        near=near.reshape(v, h, w), far=far.reshape(v, h, w), live=live.reshape(v, h, w), rays=rays,
        foreground=fg,
    )
