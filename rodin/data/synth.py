"""Render procedural avatars and write them as NeRF-synthetic subject folders.

Rendering, per subject:

1. The analytic SDF (`rodin.data.sdf`) is evaluated on a coarse 33^3 grid over [-1, 1]^3, then
   on 65^3 and 129^3 grids only in the cells that may hold surface (a narrow band, level by level);
   elsewhere each level holds the trilinear upsampling of the one before (same sign, close enough
   to step by). About 0.15 s a subject instead of seconds for a dense 129^3 evaluation.
2. Rays are sphere-traced against the trilinearly interpolated fine grid (`grid_sample`), inside
   the bust's bounding sphere. Rays that pass near the silhouette keep their closest approach
   (distance over pixel footprint), which gives anti-aliased alpha.
3. At the hit points one exact SDF step lands on the analytic surface; the nearest part gives the
   material, the part's own SDF gives the normal (tetrahedral differences), and the grid gives a
   little ambient occlusion. Shading: Lambert + Blinn-Phong from three fixed world-space lights
   (the same for every view, so that the views agree for NeRF fitting) plus hemisphere ambient.
4. Each pixel is the premultiplied mean of SUPERSAMPLE x SUPERSAMPLE such rays over its footprint, as
   other renderers' pixels are; one ray per pixel (`supersample=1`, the generator before 2026-12-05)
   aliases fine texture differently in every view.

Output: RGBA, RGB on a transparent background (RGB = 0 where alpha = 0).

A subject folder (`synth_subject`) holds transforms.json, images/r_NNN.png, portrait.png,
attributes.json, mesh.ply and a `.complete` marker written last; `synth_dataset` writes many of them
and an index.json, skipping subjects already complete with the same parameters.
"""

from __future__ import annotations

import hashlib
import json
import math
import multiprocessing
import random
import shutil
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from rodin.data.avatar import AvatarAttributes, caption, sample_attributes
from rodin.data.sdf import BUST_RADIUS, AvatarSDF, build_avatar
from rodin.errors import DataError
from rodin.io import png_bytes, to_uint8, write_atomic, write_json
from rodin.render.cameras import DEFAULT_FOV_X, DEFAULT_RADIUS, camera_rays, orbit_cameras

FORMAT = "rodin-synth/1"
GENERATOR = "rodin-procedural/2"     # /2: pixels are footprint means (SUPERSAMPLE); /1 shaded one point each
SUPERSAMPLE = 3                        # rays per pixel side: 3 x 3 shaded points averaged per pixel
ELEVATION_RANGE = (-15.0, 45.0)        # degrees, the band the views cover
PORTRAIT_TARGET = (0.0, 0.32, 0.0)     # the portrait looks at the head
PORTRAIT_ELEVATION = 3.0
PORTRAIT_FOV_X = 2.0 * math.atan(0.7 / DEFAULT_RADIUS)
MARKER = ".complete"


@contextmanager
def torch_threads(n: int = 1) -> Iterator[None]:
    """Run with n intra-op threads. The SDF work is many small tensor ops: one thread is faster than
    two fighting over two cores (by 10x and more when other processes share the machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# --- the SDF grid -------------------------------------------------------------------------------

@dataclass(frozen=True)
class SDFGrid:
    """SDF samples on a regular grid over [-bound, bound]^3, indexed [z, y, x] (grid_sample's order)."""

    values: Tensor      # (n, n, n)
    bound: float = 1.0

    @property
    def n(self) -> int:
        return self.values.shape[0]

    @property
    def spacing(self) -> float:
        return 2.0 * self.bound / (self.n - 1)

    def sample(self, p: Tensor) -> Tensor:
        """Trilinear SDF at points p (N, 3); points outside the box read the border."""
        g = (p / self.bound).reshape(1, 1, 1, -1, 3)
        out = F.grid_sample(self.values[None, None], g, mode="bilinear", padding_mode="border",
                            align_corners=True)
        return out.reshape(-1)


def _grid_points(n: int, bound: float) -> Tensor:
    axis = torch.linspace(-bound, bound, n)
    zz, yy, xx = torch.meshgrid(axis, axis, axis, indexing="ij")
    return torch.stack([xx, yy, zz], dim=-1)


@torch_threads(1)
def sdf_grid(avatar: AvatarSDF, *, levels: tuple[int, ...] = (33, 65, 129), bound: float = 1.0) -> SDFGrid:
    """The SDF on a (levels[-1])^3 grid, refined level by level: exact everywhere on the first level,
    then exact on the next level's nodes only in cells that may hold surface (every corner closer
    than a cell diagonal, by 1-Lipschitz), trilinearly upsampled elsewhere. Each level must halve
    the spacing of the one before."""
    vals = avatar.distance(_grid_points(levels[0], bound).reshape(-1, 3)).reshape((levels[0],) * 3)
    for prev, n in zip(levels[:-1], levels[1:], strict=True):
        if (n - 1) != 2 * (prev - 1):
            raise ValueError(f"grid levels must halve the spacing: {prev} -> {n}")
        diag = 2.0 * bound / (prev - 1) * math.sqrt(3.0)
        corner_max = F.max_pool3d(vals.abs()[None, None], kernel_size=2, stride=1)[0, 0]
        cells = corner_max < diag * 1.1
        fine = F.interpolate(vals[None, None], size=(n, n, n), mode="trilinear", align_corners=True)[0, 0]
        # The fine nodes of those cells: a 3x3x3 block from (2i, 2j, 2k) for cell (i, j, k).
        cz, cy, cx = cells.nonzero().unbind(1)
        base = (2 * cz * n + 2 * cy) * n + 2 * cx
        offsets = torch.tensor([(dz * n + dy) * n + dx for dz in range(3) for dy in range(3) for dx in range(3)])
        mask = torch.zeros(n * n * n, dtype=torch.bool)
        mask[(base[:, None] + offsets[None, :]).reshape(-1)] = True
        idx = mask.nonzero().squeeze(1)
        axis = torch.linspace(-bound, bound, n)
        iz, rem = idx // (n * n), idx % (n * n)
        iy, ix = rem // n, rem % n
        p = torch.stack([axis[ix], axis[iy], axis[iz]], dim=-1)
        flat = fine.reshape(-1)
        flat[idx] = avatar.distance(p, margin=2.5 * diag)
        vals = flat.reshape(n, n, n)
    return SDFGrid(vals, bound)


# --- tracing and shading -------------------------------------------------------------------------

@dataclass
class Traced:
    alpha: Tensor       # (M,) coverage in [0, 1]
    shaded: Tensor      # (K,) indices of rays that get a colour (hits and soft edges)
    points: Tensor      # (K, 3) surface points of those rays
    part: Tensor        # (K,) part indices
    normals: Tensor     # (K, 3)


def _sphere_span(origins: Tensor, dirs: Tensor, radius: float) -> tuple[Tensor, Tensor, Tensor]:
    b = (origins * dirs).sum(-1)
    c = (origins * origins).sum(-1) - radius * radius
    disc = b * b - c
    hit = disc > 0
    root = torch.sqrt(disc.clamp_min(0.0))
    return (-b - root).clamp_min(0.0), -b + root, hit


def trace(avatar: AvatarSDF, grid: SDFGrid, origins: Tensor, dirs: Tensor, pixel_angle: float, *,
          max_steps: int = 96, edge_softness: float = 1.0) -> Traced:
    """Sphere-trace rays (M, 3) against the grid; refine hits on the exact SDF."""
    m = origins.shape[0]
    near, far, inside = _sphere_span(origins, dirs, BUST_RADIUS + 0.02)
    t = near.clone()
    best = torch.full((m,), float("inf"))       # min over the march of distance / pixel footprint
    best_t = near.clone()
    hit = torch.zeros(m, dtype=torch.bool)
    eps = 0.2 * grid.spacing
    # The rays still marching, compacted: ids into the full arrays, and their own state.
    ids = inside.nonzero().squeeze(1)
    o_a, d_a, t_a, far_a = origins[ids], dirs[ids], t[ids], far[ids]
    best_a, bt_a = best[ids], best_t[ids]
    for _ in range(max_steps):
        if not ids.numel():
            break
        dist = grid.sample(o_a + t_a[:, None] * d_a)
        ratio = dist / (t_a * pixel_angle)
        better = ratio < best_a
        best_a = torch.where(better, ratio, best_a)
        bt_a = torch.where(better, t_a, bt_a)
        hit_now = dist < eps
        t_a = t_a + torch.where(hit_now, torch.zeros_like(dist), dist.clamp_min(0.25 * eps))
        done = hit_now | (t_a >= far_a)
        n_done = int(done.sum())
        if n_done == 0:
            continue
        fin = done.nonzero().squeeze(1)
        fid = ids[fin]
        t[fid], best[fid], best_t[fid] = t_a[fin], best_a[fin], bt_a[fin]
        hit[fid] = hit_now[fin]
        keep = (~done).nonzero().squeeze(1)
        ids, o_a, d_a, t_a, far_a = ids[keep], o_a[keep], d_a[keep], t_a[keep], far_a[keep]
        best_a, bt_a = best_a[keep], bt_a[keep]
    if ids.numel():   # out of steps: keep the closest approach for the soft edge
        best[ids], best_t[ids] = best_a, bt_a

    alpha = torch.zeros(m)
    alpha[hit] = 1.0
    # Edge coverage; below half a step of 8-bit alpha it is nothing (so RGB = 0 where alpha = 0).
    soft = (~hit) & (best < edge_softness * (1.0 - 0.5 / 255.0))
    alpha[soft] = (1.0 - best[soft] / edge_softness).clamp(0.0, 1.0)

    hit_idx = hit.nonzero().squeeze(1)
    soft_idx = soft.nonzero().squeeze(1)
    shaded = torch.cat([hit_idx, soft_idx])
    tt = torch.cat([t[hit_idx], best_t[soft_idx]])
    p = origins[shaded] + tt[:, None] * dirs[shaded]
    d, part = avatar.distance_and_part(p)
    nrm = avatar.normals(p, part)
    # One exact step: hits move along the ray, edge points onto the nearest surface.
    n_hit = hit_idx.numel()
    p = torch.cat([p[:n_hit] + d[:n_hit, None] * dirs[hit_idx], p[n_hit:] - d[n_hit:, None] * nrm[n_hit:]])
    return Traced(alpha, shaded, p, part, nrm)


# World-space lights (direction toward the light, colour): a warm key light front-right-above,
# a cool fill from the left and a rim light from behind, so that no view is flat or black.
LIGHTS = (
    ((0.45, 0.6, 0.75), (1.0, 0.96, 0.9)),
    ((-0.75, 0.25, 0.35), (0.42, 0.46, 0.55)),
    ((0.1, 0.45, -0.9), (0.45, 0.45, 0.48)),
)
SKY, GROUND = (0.34, 0.36, 0.42), (0.16, 0.14, 0.13)


def shade(avatar: AvatarSDF, grid: SDFGrid, points: Tensor, normals: Tensor, part: Tensor,
          view_dirs: Tensor) -> Tensor:
    """sRGB colours (K, 3) of surface points seen along view_dirs (K, 3) (camera to point)."""
    albedo = avatar.albedo(points, part).clamp(0.0, 1.0) ** 2.2
    spec_k, shininess = avatar.material_arrays(part)
    n = normals
    # Ambient occlusion from the grid: how much closer than expected the surface is along n.
    ao = torch.ones(points.shape[0])
    for h, wgt in ((0.025, 1.0), (0.06, 0.5), (0.12, 0.25)):
        d = grid.sample(points + h * n)
        ao = ao - wgt * ((h - d) / h).clamp(0.0, 1.0) * 0.35
    ao = ao.clamp(0.3, 1.0)
    up = 0.5 + 0.5 * n[:, 1:2]
    light = (torch.tensor(SKY) * up + torch.tensor(GROUND) * (1 - up)) * ao[:, None]
    spec = torch.zeros_like(albedo)
    v = -view_dirs
    for direction, colour in LIGHTS:
        ldir = F.normalize(torch.tensor(direction), dim=0)
        col = torch.tensor(colour)
        ndl = (n @ ldir).clamp_min(0.0)
        light = light + ndl[:, None] * col * (0.6 + 0.4 * ao[:, None])
        hvec = F.normalize(v + ldir, dim=-1)
        ndh = (n * hvec).sum(-1).clamp_min(0.0)
        spec = spec + (spec_k * ndh ** shininess * (ndl > 0).float())[:, None] * col
    rgb = albedo * light + spec * ao[:, None]
    return rgb.clamp(0.0, 1.0) ** (1.0 / 2.2)


@torch_threads(1)
def render_views(avatar: AvatarSDF, c2w: Tensor, fov_x: float, resolution: int,
                 grid: SDFGrid | None = None, *, supersample: int = 1) -> np.ndarray:
    """RGBA float images (V, R, R, 4) of cameras c2w (V, 4, 4).

    `supersample` k shades k x k rays per pixel and averages them (premultiplied), as Blender and
    cameras do: a pixel is its footprint's mean colour, not the colour of one point in it. Without
    it, texture finer than a pixel aliases differently in every view, and no 3D fit can agree with
    all of them."""
    if supersample < 1:
        raise ValueError(f"supersample must be >= 1 (got {supersample})")
    grid = sdf_grid(avatar) if grid is None else grid
    c2w = c2w.reshape(-1, 4, 4)
    side = resolution * supersample
    rays = camera_rays(c2w, fov_x, side)
    o, d = rays.origins.reshape(-1, 3), rays.directions.reshape(-1, 3)
    pixel_angle = 2.0 * math.tan(0.5 * fov_x) / side
    tr = trace(avatar, grid, o, d, pixel_angle)
    rgba = torch.zeros(o.shape[0], 4)
    rgba[:, 3] = tr.alpha
    if tr.shaded.numel():
        rgba[tr.shaded, :3] = shade(avatar, grid, tr.points, tr.normals, tr.part, d[tr.shaded])
    rgba = rgba.reshape(c2w.shape[0], side, side, 4)
    if supersample > 1:
        k = supersample
        premultiplied = torch.cat([rgba[..., :3] * rgba[..., 3:], rgba[..., 3:]], dim=-1)
        blocks = premultiplied.reshape(c2w.shape[0], resolution, k, resolution, k, 4).mean(dim=(2, 4))
        # Coverage under half an 8-bit level is background: a PNG would store colour under alpha 0.
        alpha = torch.where(blocks[..., 3:] < 0.5 / 255, torch.zeros_like(blocks[..., 3:]), blocks[..., 3:])
        rgb = torch.where(alpha > 0, blocks[..., :3] / alpha.clamp_min(1e-8), torch.zeros_like(blocks[..., :3]))
        rgba = torch.cat([rgb.clamp(0.0, 1.0), alpha], dim=-1)
    return rgba.numpy()


def render_avatar(avatar: AvatarSDF, c2w: Tensor, fov_x: float, resolution: int,
                  grid: SDFGrid | None = None) -> np.ndarray:
    """RGBA float image (R, R, 4) of one camera c2w (4, 4) (or (V, R, R, 4) for (V, 4, 4))."""
    images = render_views(avatar, torch.as_tensor(c2w, dtype=torch.float32), fov_x, resolution, grid)
    return images[0] if torch.as_tensor(c2w).dim() == 2 else images


# --- cameras ------------------------------------------------------------------------------------

def view_angles(views: int, offset_deg: float = 0.0) -> tuple[list[float], list[float]]:
    """Azimuths and elevations (degrees) spread evenly over the band: a Fibonacci spiral."""
    lo, hi = (math.sin(math.radians(e)) for e in ELEVATION_RANGE)
    golden = 180.0 * (3.0 - math.sqrt(5.0))
    az, el = [], []
    for k in range(views):
        u = (k + 0.5) / views
        el.append(math.degrees(math.asin(lo + (hi - lo) * u)))
        az.append((offset_deg + k * golden) % 360.0)
    return az, el


def subject_cameras(views: int, offset_deg: float) -> Tensor:
    az, el = view_angles(views, offset_deg)
    return orbit_cameras(az, el, radius=DEFAULT_RADIUS)


def portrait_camera() -> Tensor:
    return orbit_cameras([0.0], [PORTRAIT_ELEVATION], radius=DEFAULT_RADIUS, target=PORTRAIT_TARGET)[0]


# --- mesh ---------------------------------------------------------------------------------------

def avatar_mesh_ply(avatar: AvatarSDF, grid: SDFGrid, step: int = 2) -> bytes:
    """Marching cubes on the SDF grid (every `step`-th node), world coordinates, vertex colours."""
    import trimesh
    from skimage.measure import marching_cubes

    vol = grid.values[::step, ::step, ::step].numpy()
    spacing = 2.0 * grid.bound / (vol.shape[0] - 1)
    verts, faces, _, _ = marching_cubes(vol, level=0.0, spacing=(spacing,) * 3)
    verts = verts[:, ::-1] - grid.bound                 # (z, y, x) -> (x, y, z)
    faces = faces[:, ::-1]                               # outward normals for negative-inside SDFs
    p = torch.from_numpy(np.ascontiguousarray(verts, dtype=np.float32))
    _, part = avatar.distance_and_part(p)
    colours = to_uint8(avatar.albedo(p, part).clamp(0, 1).numpy())
    rgba = np.concatenate([colours, np.full((len(colours), 1), 255, np.uint8)], axis=1)
    mesh = trimesh.Trimesh(vertices=verts.astype(np.float32), faces=np.ascontiguousarray(faces),
                           vertex_colors=rgba, process=False)
    return mesh.export(file_type="ply", encoding="binary")


# --- subjects and datasets -----------------------------------------------------------------------

def subject_id(index: int) -> str:
    return f"subject_{index:05d}"


def subject_split(sid: str) -> str:
    """train / val / test, about 90 / 5 / 5, from the id alone (stable when subjects are added)."""
    h = int.from_bytes(hashlib.sha256(f"rodin-split/{sid}".encode()).digest()[:8], "big") % 100
    return "train" if h < 90 else ("val" if h < 95 else "test")


def subject_seed(dataset_seed: int, index: int) -> int:
    digest = hashlib.sha256(f"rodin-subject/{int(dataset_seed)}/{int(index)}".encode()).digest()
    return int.from_bytes(digest[:6], "big")


def _marker(dataset_seed: int, index: int, views: int, resolution: int, portrait_resolution: int,
            supersample: int) -> str:
    return json.dumps({"generator": GENERATOR, "seed": int(dataset_seed), "index": int(index),
                       "views": int(views), "resolution": int(resolution),
                       "portrait_resolution": int(portrait_resolution), "supersample": int(supersample)},
                      sort_keys=True)


def _rows(c2w: Tensor) -> list[list[float]]:
    return [[round(float(v), 8) for v in row] for row in c2w.tolist()]


def subject_complete(folder: Path, marker: str) -> bool:
    path = folder / MARKER
    try:
        return path.read_text() == marker
    except OSError:
        return False


class _Writer:
    """Writes files in order on a background thread (PNG encoding and fsync overlap the next
    subject's rendering), or right away when `background` is False. `wait()` re-raises failures."""

    def __init__(self, background: bool) -> None:
        self.pool = ThreadPoolExecutor(max_workers=1) if background else None
        self.pending: list[Future[None]] = []

    def put(self, path: Path, make: Callable[[], bytes]) -> None:
        if self.pool is None:
            write_atomic(path, make())
        else:
            self.pending.append(self.pool.submit(lambda: write_atomic(path, make())))

    def wait(self) -> None:
        pending, self.pending = self.pending, []
        for future in pending:
            future.result()

    def close(self) -> None:
        try:
            self.wait()
        finally:
            if self.pool is not None:
                self.pool.shutdown(wait=True)


def _json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2) + "\n").encode()


def synth_subject(out_dir: Path | str, index: int, *, dataset_seed: int, views: int, resolution: int,
                  portrait_resolution: int = 128, supersample: int = SUPERSAMPLE,
                  writer: _Writer | None = None) -> dict[str, Any]:
    """Write subject `index` of dataset `dataset_seed` into out_dir/subject_NNNNN (skips it when
    already complete with the same parameters; redoes a partial one). Returns its index entry
    {"id", "split", "caption"}. The subject depends only on (dataset_seed, index)."""
    _check_sizes(views, resolution, portrait_resolution, supersample)
    sid = subject_id(index)
    folder = Path(out_dir) / sid
    marker = _marker(dataset_seed, index, views, resolution, portrait_resolution, supersample)
    if subject_complete(folder, marker):
        try:
            text = json.loads((folder / "attributes.json").read_text())["caption"]
            return {"id": sid, "split": subject_split(sid), "caption": text}
        except (OSError, KeyError, ValueError):
            pass   # damaged: redo it
    if folder.exists():
        shutil.rmtree(folder)

    seed = subject_seed(dataset_seed, index)
    attrs = sample_attributes(seed)
    rng = random.Random(f"rodin-subject-rng/{seed}")
    text = caption(attrs, rng)
    offset = rng.uniform(0.0, 360.0)

    own = writer is None
    writer = _Writer(background=False) if writer is None else writer
    with torch_threads(1):
        avatar = build_avatar(attrs)
        grid = sdf_grid(avatar)
        c2w = subject_cameras(views, offset)
        images = render_views(avatar, c2w, DEFAULT_FOV_X, resolution, grid, supersample=supersample)
        frames = []
        for k in range(views):
            name = f"images/r_{k:03d}.png"
            writer.put(folder / name, lambda k=k: png_bytes(images[k]))
            frames.append({"file_path": name, "transform_matrix": _rows(c2w[k])})
        pc2w = portrait_camera()
        portrait = render_views(avatar, pc2w, PORTRAIT_FOV_X, portrait_resolution, grid, supersample=supersample)[0]
        writer.put(folder / "portrait.png", lambda: png_bytes(portrait))
        mesh = avatar_mesh_ply(avatar, grid)
    writer.put(folder / "mesh.ply", lambda: mesh)
    attributes = {**attrs.to_dict(), "caption": text, "subject_seed": seed, "dataset_seed": int(dataset_seed),
                  "index": int(index)}
    writer.put(folder / "attributes.json", lambda: _json_bytes(attributes))
    transforms = {
        "camera_angle_x": DEFAULT_FOV_X,
        "rodin": {"up": "y", "bound": 1.0, "generator": GENERATOR, "radius": DEFAULT_RADIUS,
                  "supersample": int(supersample)},
        "frames": frames,
        "portrait": {"file_path": "portrait.png", "camera_angle_x": PORTRAIT_FOV_X,
                     "transform_matrix": _rows(pc2w)},
    }
    writer.put(folder / "transforms.json", lambda: _json_bytes(transforms))
    writer.put(folder / MARKER, lambda: marker.encode())      # last: the subject is complete
    if own:
        writer.close()
    return {"id": sid, "split": subject_split(sid), "caption": text}


def _worker_init() -> None:
    torch.set_num_threads(1)


def _worker_subject(args: tuple[str, int, int, int, int, int, int]) -> dict[str, Any]:
    out, index, seed, views, resolution, portrait_resolution, supersample = args
    return synth_subject(out, index, dataset_seed=seed, views=views, resolution=resolution,
                         portrait_resolution=portrait_resolution, supersample=supersample)


def _check_sizes(views: int, resolution: int, portrait_resolution: int, supersample: int) -> None:
    if views < 1 or resolution < 8 or portrait_resolution < 8 or supersample < 1:
        raise DataError(f"need views >= 1, resolutions >= 8 and supersample >= 1 (got views={views}, "
                        f"resolution={resolution}, portrait resolution={portrait_resolution}, "
                        f"supersample={supersample})")


def synth_dataset(out: Path | str, *, subjects: int, views: int = 32, resolution: int = 64, seed: int = 0,
                  portrait_resolution: int = 128, supersample: int = SUPERSAMPLE, progress: bool = True,
                  workers: int = 1,
                  on_subject: Callable[[int], None] | None = None) -> Path:
    """Write subjects 0..subjects-1 of dataset `seed` and index.json into `out`. Resumable: subjects
    already complete with the same parameters are kept, partial ones redone. `workers` > 1 renders
    subjects in that many processes. Returns `out`."""
    if subjects < 1:
        raise DataError(f"need at least one subject (got {subjects})")
    _check_sizes(views, resolution, portrait_resolution, supersample)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DataError(f"{out} exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(f"cannot create {out}: {err.strerror or err}") from err
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=subjects, desc="synth", unit="subject", file=sys.stderr, dynamic_ncols=True)
    entries: list[dict[str, Any] | None] = [None] * subjects

    def done(i: int, entry: dict[str, Any]) -> None:
        entries[i] = entry
        if bar is not None:
            bar.update(1)
        if on_subject is not None:
            on_subject(i)

    try:
        if workers > 1 and subjects > 1:
            ctx = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=min(workers, subjects), mp_context=ctx,
                                     initializer=_worker_init) as pool:
                futures = {pool.submit(_worker_subject, (str(out), i, seed, views, resolution,
                                                         portrait_resolution, supersample)): i
                           for i in range(subjects)}
                for future in as_completed(futures):
                    done(futures[future], future.result())
        else:
            writer = _Writer(background=True)
            try:
                for i in range(subjects):
                    done(i, synth_subject(out, i, dataset_seed=seed, views=views, resolution=resolution,
                                          portrait_resolution=portrait_resolution, supersample=supersample,
                                          writer=writer))
            finally:
                writer.close()
    finally:
        if bar is not None:
            bar.close()
    write_json(out / "index.json", {"format": FORMAT, "seed": int(seed), "views": int(views),
                                    "resolution": int(resolution), "portrait_resolution": int(portrait_resolution),
                                    "supersample": int(supersample), "subjects": entries})
    return out


def load_attributes(folder: Path | str) -> AvatarAttributes:
    data = json.loads((Path(folder) / "attributes.json").read_text())
    return AvatarAttributes.from_dict(data)


__all__ = [
    "FORMAT", "GENERATOR", "SUPERSAMPLE", "SDFGrid", "avatar_mesh_ply", "portrait_camera", "render_avatar",
    "render_views",
    "sdf_grid", "shade", "subject_cameras", "subject_complete", "subject_id", "subject_seed", "subject_split",
    "synth_dataset", "synth_subject", "trace", "view_angles",
]
