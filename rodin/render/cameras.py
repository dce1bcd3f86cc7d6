"""Cameras in the NeRF-synthetic / Blender convention, and the rays they cast.

`c2w` is camera-to-world (4x4); the camera looks down its -z axis with +y up; `fov_x` is the
horizontal field of view in radians. Pixel centres sit at half-integer coordinates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

# The avatar lives in [-1, 1]^3, y up, facing +z. Default cameras orbit at this distance with
# Blender's default lens, so that the box's inner sphere fills most of the frame.
DEFAULT_RADIUS = 3.2
DEFAULT_FOV_X = 0.6911112070083618


@dataclass(frozen=True)
class Rays:
    origins: Tensor     # (..., 3)
    directions: Tensor  # (..., 3), unit length

    def reshape(self, *shape: int) -> Rays:
        return Rays(self.origins.reshape(*shape, 3), self.directions.reshape(*shape, 3))

    def __getitem__(self, index) -> Rays:
        return Rays(self.origins[index], self.directions[index])

    def __len__(self) -> int:
        return self.origins.shape[0]

    def to(self, device: torch.device | str) -> Rays:
        return Rays(self.origins.to(device), self.directions.to(device))


def look_at(eye: Tensor, target: Tensor, up: Tensor | None = None) -> Tensor:
    """Camera-to-world matrices (..., 4, 4) for cameras at `eye` looking at `target`."""
    eye = torch.as_tensor(eye, dtype=torch.float32)
    target = torch.as_tensor(target, dtype=torch.float32).expand_as(eye)
    if up is None:
        up = torch.tensor([0.0, 1.0, 0.0])
    up = torch.as_tensor(up, dtype=torch.float32).expand_as(eye)
    back = torch.nn.functional.normalize(eye - target, dim=-1)        # camera +z
    right = torch.linalg.cross(up, back, dim=-1)
    # Looking straight up or down: pick any right vector.
    degenerate = right.norm(dim=-1, keepdim=True) < 1e-6
    right = torch.where(degenerate, torch.tensor([1.0, 0.0, 0.0]).expand_as(right), right)
    right = torch.nn.functional.normalize(right, dim=-1)
    true_up = torch.linalg.cross(back, right, dim=-1)
    c2w = torch.zeros(*eye.shape[:-1], 4, 4)
    c2w[..., :3, 0] = right
    c2w[..., :3, 1] = true_up
    c2w[..., :3, 2] = back
    c2w[..., :3, 3] = eye
    c2w[..., 3, 3] = 1.0
    return c2w


def orbit_cameras(
    azimuth_deg: Tensor | list[float],
    elevation_deg: Tensor | list[float],
    *,
    radius: float = DEFAULT_RADIUS,
    target: tuple[float, float, float] = (0.0, 0.0, 0.0),
) -> Tensor:
    """Cameras on a sphere. Azimuth 0 sits on +z (in front of the face), 90 on +x."""
    az = torch.deg2rad(torch.as_tensor(azimuth_deg, dtype=torch.float32))
    el = torch.deg2rad(torch.as_tensor(elevation_deg, dtype=torch.float32))
    centre = torch.tensor(target, dtype=torch.float32)
    eye = torch.stack(
        [torch.sin(az) * torch.cos(el), torch.sin(el), torch.cos(az) * torch.cos(el)], dim=-1
    ) * radius + centre
    return look_at(eye, centre.expand_as(eye))


def turntable_cameras(
    frames: int, *, elevation_deg: float = 10.0, radius: float = DEFAULT_RADIUS
) -> Tensor:
    azimuths = torch.arange(frames, dtype=torch.float32) * (360.0 / frames)
    return orbit_cameras(azimuths, torch.full((frames,), float(elevation_deg)), radius=radius)


def focal_from_fov(width: int, fov_x: float) -> float:
    return 0.5 * width / math.tan(0.5 * fov_x)


def camera_rays(c2w: Tensor, fov_x: float, width: int, height: int | None = None) -> Rays:
    """Rays of every pixel, shaped (N, H, W, 3) for c2w of shape (N, 4, 4) (or (H, W, 3))."""
    height = width if height is None else height
    single = c2w.dim() == 2
    c2w = c2w.reshape(-1, 4, 4).float()
    focal = focal_from_fov(width, fov_x)
    j = (torch.arange(width, dtype=torch.float32, device=c2w.device) + 0.5 - 0.5 * width) / focal
    i = (torch.arange(height, dtype=torch.float32, device=c2w.device) + 0.5 - 0.5 * height) / focal
    ii, jj = torch.meshgrid(i, j, indexing="ij")
    dirs_cam = torch.stack([jj, -ii, -torch.ones_like(ii)], dim=-1)          # (H, W, 3)
    dirs = torch.einsum("nab,hwb->nhwa", c2w[:, :3, :3], dirs_cam)
    dirs = torch.nn.functional.normalize(dirs, dim=-1)
    origins = c2w[:, None, None, :3, 3].expand_as(dirs)
    rays = Rays(origins.contiguous(), dirs.contiguous())
    return rays[0] if single else rays


def box_intersect(rays: Rays, bound: float = 1.0) -> tuple[Tensor, Tensor, Tensor]:
    """Entry and exit distances of rays through [-bound, bound]^3, and whether they hit it."""
    inv = 1.0 / torch.where(rays.directions.abs() < 1e-9, torch.full_like(rays.directions, 1e-9),
                            rays.directions)
    t0 = (-bound - rays.origins) * inv
    t1 = (bound - rays.origins) * inv
    near = torch.minimum(t0, t1).amax(dim=-1).clamp_min(0.0)
    far = torch.maximum(t0, t1).amin(dim=-1)
    hit = far > near
    return near, torch.where(hit, far, near), hit
