"""Volume rendering of tri-planes through a decoder it is given (EG3D's boundary).

The renderer owns no model: it receives planes, the decoder and rays. Empty space is skipped with
an occupancy grid over the box: each ray's samples are spread only between the first and last
occupied cells it crosses, so samples land where the avatar is.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from rodin.render.cameras import Rays, box_intersect, camera_rays
from rodin.triplane.decoder import TriplaneDecoder
from rodin.triplane.sampling import sample_triplane

BOUND = 1.0   # the world box [-1, 1]^3


@dataclass
class RenderedRays:
    rgb: Tensor              # (R, 3), composited on the background
    depth: Tensor            # (R,), expected distance along the ray (far where empty)
    opacity: Tensor          # (R,), accumulated alpha
    extra: Tensor | None     # (R, E) accumulated feature channels, or None


@dataclass(frozen=True)
class OccupancyGrid:
    """Boolean cells over the box, per tri-plane: (B, D, D, D) indexed [b, z, y, x]."""

    cells: Tensor

    @property
    def resolution(self) -> int:
        return self.cells.shape[-1]

    def lookup(self, points: Tensor, batch_index: Tensor) -> Tensor:
        d = self.resolution
        ijk = ((points.clamp(-BOUND, BOUND) + BOUND) * (d / (2 * BOUND))).long().clamp_(0, d - 1)
        return self.cells[batch_index, ijk[..., 2], ijk[..., 1], ijk[..., 0]]

    def dilate(self, cells: int = 1) -> OccupancyGrid:
        if cells <= 0:
            return self
        grid = self.cells[:, None].float()
        grid = F.max_pool3d(grid, kernel_size=2 * cells + 1, stride=1, padding=cells)
        return OccupancyGrid(grid[:, 0] > 0.5)

    def to(self, device: torch.device | str) -> OccupancyGrid:
        return OccupancyGrid(self.cells.to(device))

    @staticmethod
    def cell_centres(resolution: int, device: torch.device | str = "cpu") -> Tensor:
        """(D, D, D, 3) xyz centres, indexed [z, y, x]."""
        axis = (torch.arange(resolution, dtype=torch.float32, device=device) + 0.5) * (2 * BOUND / resolution) - BOUND
        z, y, x = torch.meshgrid(axis, axis, axis, indexing="ij")
        return torch.stack([x, y, z], dim=-1)


def uniform(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> Tensor:
    """Uniform draws on `device`, taken from `generator` on its own device: a CPU generator gives the
    same numbers whichever device renders."""
    if generator is None:
        return torch.rand(shape, device=device)
    return torch.rand(shape, generator=generator, device=generator.device).to(device)


def decode_points(planes: Tensor, decoder: TriplaneDecoder, points: Tensor, directions: Tensor | None,
                  batch_index: Tensor):
    return decoder(sample_triplane(planes, points, batch_index), directions)


@torch.no_grad()
def occupancy_from_density(planes: Tensor, decoder: TriplaneDecoder, *, resolution: int,
                           threshold: float, dilation: int = 1) -> OccupancyGrid:
    """Cells whose density (at the centre or a jittered sub-point) exceeds `threshold`."""
    planes = planes if planes.dim() == 5 else planes[None]
    device = planes.device
    centres = OccupancyGrid.cell_centres(resolution, device).reshape(-1, 3)
    half = BOUND / resolution
    offsets = torch.tensor([[0.0, 0.0, 0.0], [0.5, 0.5, 0.5], [-0.5, -0.5, -0.5],
                            [0.5, -0.5, 0.5], [-0.5, 0.5, -0.5]], device=device) * half
    grids = []
    for b in range(planes.shape[0]):
        dens = torch.zeros(centres.shape[0], device=device)
        index = torch.full((centres.shape[0],), b, dtype=torch.long, device=device)
        for offset in offsets:
            pts = centres + offset
            out = decoder(sample_triplane(planes, pts, index),
                          torch.zeros_like(pts) if decoder.config.view_dependent else None)
            dens = torch.maximum(dens, out.density[:, 0])
        grids.append(dens.reshape(resolution, resolution, resolution) > threshold)
    return OccupancyGrid(torch.stack(grids)).dilate(dilation)


def occupied_span(rays: Rays, occupancy: OccupancyGrid | None, batch_index: Tensor,
                  *, probes: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """Per ray: near and far of its occupied stretch inside the box, and whether it has one."""
    near, far, hit = box_intersect(rays, BOUND)
    if occupancy is None:
        return near, far, hit
    probes = probes or occupancy.resolution + occupancy.resolution // 2
    steps = (torch.arange(probes, dtype=torch.float32, device=near.device) + 0.5) / probes
    t = near[:, None] + (far - near)[:, None] * steps                       # (R, P)
    pts = rays.origins[:, None] + rays.directions[:, None] * t[..., None]
    occ = occupancy.lookup(pts, batch_index[:, None].expand(-1, probes)) & hit[:, None]
    any_occ = occ.any(dim=1)
    first = occ.float().argmax(dim=1)
    last = probes - 1 - occ.flip(1).float().argmax(dim=1)
    step = (far - near) / probes
    new_near = near + step * first.float()
    new_far = near + step * (last.float() + 1.0)
    return torch.where(any_occ, new_near, near), torch.where(any_occ, new_far, near), any_occ


def composite(density: Tensor, colour: Tensor, deltas: Tensor, t: Tensor, far: Tensor,
              background: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Alpha compositing along each ray; returns rgb, depth, opacity and the sample weights."""
    alpha = 1.0 - torch.exp(-density * deltas)
    transmittance = torch.cumprod(
        torch.cat([torch.ones_like(alpha[:, :1]), 1.0 - alpha + 1e-10], dim=1), dim=1)[:, :-1]
    weights = alpha * transmittance
    opacity = weights.sum(dim=1)
    rgb = (weights[..., None] * colour).sum(dim=1) + (1.0 - opacity[:, None]) * background
    depth = (weights * t).sum(dim=1) + (1.0 - opacity) * far
    return rgb, depth, opacity, weights


def _sample_pdf(bins: Tensor, weights: Tensor, count: int, generator: torch.Generator | None,
                perturb: bool) -> Tensor:
    """Inverse-CDF samples (R, count) from piecewise-constant weights over `bins` (R, S+1)."""
    pdf = (weights + 1e-5) / (weights + 1e-5).sum(dim=1, keepdim=True)
    cdf = torch.cat([torch.zeros_like(pdf[:, :1]), torch.cumsum(pdf, dim=1)], dim=1)
    if perturb:
        u = uniform((pdf.shape[0], count), generator, pdf.device)
    else:
        u = ((torch.arange(count, dtype=torch.float32, device=pdf.device) + 0.5) / count).expand(pdf.shape[0], count)
    u = u.contiguous()
    idx = torch.searchsorted(cdf.contiguous(), u, right=True).clamp(1, cdf.shape[1] - 1)
    cdf_lo, cdf_hi = cdf.gather(1, idx - 1), cdf.gather(1, idx)
    bin_lo, bin_hi = bins.gather(1, idx - 1), bins.gather(1, idx)
    frac = ((u - cdf_lo) / (cdf_hi - cdf_lo).clamp_min(1e-8)).clamp(0, 1)
    return bin_lo + frac * (bin_hi - bin_lo)


def render_rays(
    planes: Tensor,
    decoder: TriplaneDecoder,
    rays: Rays,
    *,
    samples: int,
    importance: int = 0,
    batch_index: Tensor | None = None,
    occupancy: OccupancyGrid | None = None,
    spans: tuple[Tensor, Tensor, Tensor] | None = None,
    background: float = 1.0,
    perturb: bool = False,
    generator: torch.Generator | None = None,
    jitter: Tensor | None = None,
) -> RenderedRays:
    """Render rays (R,) through tri-planes (B, 3, C, H, W) read by `decoder`.

    `batch_index` (R,) says which tri-plane each ray sees. Stratified samples cover each ray's
    occupied stretch (from `occupancy`, or precomputed `spans` = (near, far, live)); `importance`
    more are drawn from their weights and composited with them. Each sample sits at the middle of its
    bin, or at a random place with `perturb`, or where `jitter` (R, samples) in [0, 1) puts it (drawn by
    the caller, e.g. per subject, so that a ray's samples do not depend on which rays share the call).
    """
    planes = planes if planes.dim() == 5 else planes[None]
    device = planes.device
    count = rays.origins.shape[0]
    if batch_index is None:
        batch_index = torch.zeros(count, dtype=torch.long, device=device)
    extra_dim = decoder.config.extra_features
    rgb = torch.full((count, 3), float(background), device=device)
    depth = torch.zeros(count, device=device)
    opacity = torch.zeros(count, device=device)
    extra = torch.zeros(count, extra_dim, device=device) if extra_dim else None

    near, far, live = spans if spans is not None else occupied_span(rays, occupancy, batch_index)
    depth = torch.where(live, depth, far)
    if not bool(live.any()):
        return RenderedRays(rgb, depth, opacity, extra)
    idx = live.nonzero()[:, 0]
    o, d, b = rays.origins[idx], rays.directions[idx], batch_index[idx]
    n, f = near[idx], far[idx]
    r = idx.shape[0]

    bins = n[:, None] + (f - n)[:, None] * torch.linspace(0, 1, samples + 1, device=device)      # (r, S+1)
    if jitter is not None:
        u = jitter[idx]
    elif perturb:
        u = uniform((r, samples), generator, device)
    else:
        u = torch.full((r, samples), 0.5, device=device)
    t = bins[:, :-1] + (bins[:, 1:] - bins[:, :-1]) * u
    view = d if decoder.config.view_dependent else None

    def evaluate(ts: Tensor):
        pts = o[:, None] + d[:, None] * ts[..., None]
        k = ts.shape[1]
        out = decode_points(planes, decoder, pts.reshape(-1, 3),
                            None if view is None else view[:, None].expand(-1, k, -1).reshape(-1, 3),
                            b[:, None].expand(-1, k).reshape(-1))
        dens = out.density.reshape(r, k)
        col = out.rgb.reshape(r, k, 3)
        if out.extra is not None:
            col = torch.cat([col, out.extra.reshape(r, k, -1)], dim=-1)
        return dens, col

    dens, col = evaluate(t)
    if importance > 0:
        deltas = (f - n)[:, None].expand(-1, samples) / samples
        with torch.no_grad():
            _, _, _, weights = composite(dens.detach(), col.detach()[..., :3], deltas, t, f, background)
            t_fine = _sample_pdf(bins, weights, importance, generator, perturb)
        dens_f, col_f = evaluate(t_fine)
        t, order = torch.sort(torch.cat([t, t_fine], dim=1), dim=1)
        dens = torch.cat([dens, dens_f], dim=1).gather(1, order)
        col = torch.cat([col, col_f], dim=1).gather(1, order[..., None].expand(-1, -1, col.shape[-1]))
        deltas = torch.cat([t[:, 1:] - t[:, :-1], (f[:, None] - t[:, -1:]).clamp_min(1e-4)], dim=1)
        # The first sample's interval starts at its bin edge, like the stratified ones.
        deltas = deltas.clamp_min(0.0)
    else:
        deltas = (f - n)[:, None].expand(-1, samples) / samples

    rgb_l, depth_l, opacity_l, weights = composite(dens, col[..., :3], deltas, t, f, background)
    rgb = rgb.index_put((idx,), rgb_l)
    depth = depth.index_put((idx,), depth_l)
    opacity = opacity.index_put((idx,), opacity_l)
    if extra is not None:
        extra = extra.index_put((idx,), (weights[..., None] * col[..., 3:]).sum(dim=1))
    return RenderedRays(rgb, depth, opacity, extra)


def render_views(
    planes: Tensor,
    decoder: TriplaneDecoder,
    c2w: Tensor,
    fov_x: float,
    resolution: int,
    *,
    samples: int,
    importance: int = 0,
    occupancy: OccupancyGrid | None = None,
    background: float = 1.0,
    chunk: int = 16384,
    progress: bool = False,
) -> tuple[Tensor, Tensor, Tensor]:
    """Full images (N, H, W, 3), depth and opacity (N, H, W) of one tri-plane, in ray chunks."""
    import sys

    from tqdm import tqdm

    from rodin.render.cameras import camera_rays

    rays = camera_rays(c2w.reshape(-1, 4, 4).to(planes.device), fov_x, resolution)
    n = rays.origins.shape[0]
    flat = rays.reshape(-1)
    outs = []
    with torch.no_grad():
        starts = range(0, len(flat), chunk)
        for start in tqdm(starts, desc="render", unit="chunk", disable=not progress, leave=False, file=sys.stderr):
            outs.append(render_rays(planes, decoder, flat[start:start + chunk], samples=samples,
                                    importance=importance, occupancy=occupancy, background=background))
    rgb = torch.cat([o.rgb for o in outs]).reshape(n, resolution, resolution, 3)
    depth = torch.cat([o.depth for o in outs]).reshape(n, resolution, resolution)
    opacity = torch.cat([o.opacity for o in outs]).reshape(n, resolution, resolution)
    return rgb, depth, opacity


@torch.no_grad()
def render_with_features(planes: Tensor, decoder: TriplaneDecoder, c2w: Tensor, fov_x: float, resolution: int, *,
                         render, chunk: int = 16384) -> Tensor:
    """(V, 3 + E, R, R) renders of one tri-plane (3, C, H, W) under `render` (a RenderConfig): RGB on the
    background, then the decoder's E extra feature channels; what the refiner (stage 4) reads."""
    occupancy = occupancy_from_density(planes, decoder, resolution=render.occupancy_resolution,
                                       threshold=render.occupancy_threshold)
    flat = camera_rays(c2w.reshape(-1, 4, 4).to(planes.device), fov_x, resolution).reshape(-1)
    parts = []
    for start in range(0, len(flat), chunk):
        out = render_rays(planes, decoder, flat[start:start + chunk], samples=render.samples,
                          importance=render.importance, occupancy=occupancy, background=render.background)
        parts.append(out.rgb if out.extra is None else torch.cat([out.rgb, out.extra], dim=1))
    pixels = torch.cat(parts)
    return pixels.reshape(-1, resolution, resolution, pixels.shape[-1]).permute(0, 3, 1, 2).contiguous()
